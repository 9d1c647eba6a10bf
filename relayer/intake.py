"""What happens to each tick a session reads: quote built, queued for Redis, counted.

The `TickSink` that the daemon hands to every upstream session. Hot path: no await but in
`wait_for_room`, which the read loop calls only while the Redis writer is behind.
"""

from __future__ import annotations

import logging
import time

from relayer.health import RelayerStats
from relayer.publisher import TickPublisher
from relayer.quotes import MalformedTick, QuoteBuilder, TradePrint

logger = logging.getLogger(__name__)

_MALFORMED_LOG_EVERY_S = 10.0


class TickIntake:
    def __init__(
        self, builder: QuoteBuilder, publisher: TickPublisher, stats: RelayerStats
    ) -> None:
        self._stats = stats
        self._malformed_logged_at = -_MALFORMED_LOG_EVERY_S
        # Bound methods looked up once: they run for every tick and every message.
        self._build = builder.build
        self._add = publisher.add
        self.congested = publisher.congested
        self.wait_for_room = publisher.wait_for_room

    def trade(self, trade: TradePrint) -> None:
        quote = self._build(trade)
        self._add(quote)
        stats = self._stats
        stats.ticks_total += 1
        stats.last_tick_at = quote.received_at

    def malformed(self, error: MalformedTick, body: bytes) -> None:
        self._stats.malformed_total += 1
        now = time.monotonic()
        if now - self._malformed_logged_at >= _MALFORMED_LOG_EVERY_S:
            self._malformed_logged_at = now
            logger.warning("skipped a malformed tick (%d so far): %s; body %r",
                           self._stats.malformed_total, error, body[:200])
