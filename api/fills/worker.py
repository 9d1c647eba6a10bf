"""The fills worker's loop: read the relayer's tick stream through a consumer group, fill
resting limit orders, expire DAY orders at the session close, purge old idempotency keys.

Why a consumer group: Redis remembers what the group has been delivered, and what a consumer
was delivered but did not acknowledge stays pending for it. A worker that stops (or is killed)
resumes where it left off: at start it first reads its own pending entries again, then new
ones. An entry is acknowledged only after every fill it caused is committed. Processing an
entry twice is harmless: a fill is unique per (order, tick), and the volume a tick has already
given is counted from the fills before it gives more.

Orders the worker has not seen yet (placed or re-priced while earlier entries were processed)
are caught up first: the ticks between their `rests_after` and the current batch are read
again with XRANGE and applied to them alone. So no tick after an order's acceptance is missed,
whenever the order becomes visible to the worker.

Run exactly one fills worker per namespace (start_services.sh and compose do): two would split
the stream between them, and a tick's volume could be handed out twice in the race between a
catch-up and the other worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from api.db import Database, is_unavailable
from api.fills import store
from api.fills.matching import RestingOrder, Tick, after, candidates
from api.idempotency import purge
from api.market.rules import Costs
from api.models import Side
from api.orders import service as order_service
from api.orders.snapshot import stream_id_key
from relayer.bus import STREAM_QUOTE_FIELD, BusNames, MalformedQuote, Quote, format_utc

logger = logging.getLogger(__name__)

CONSUMER = "fills-worker"
HEALTH_INTERVAL_S = 1.0
HEALTH_TTL_S = 5
EXPIRY_INTERVAL_S = 1.0
PURGE_INTERVAL_S = 600.0
# Pauses between attempts while the database is unavailable (doubling up to the maximum).
OUTAGE_PAUSE_INITIAL_S = 0.5
OUTAGE_PAUSE_MAX_S = 4.0

# Stream entries as redis-py returns them; the fields are None for a pending entry that was
# trimmed from the stream before it was processed again.
Fields = dict[bytes | str, bytes | str]
Entries = list[tuple[bytes | str, Fields | None]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_tick(entry_id: bytes | str, fields: Fields | None) -> Tick | None:
    """The trade in one stream entry; None (logged) for an entry we cannot read."""
    if fields is None:
        logger.warning("tick %s was trimmed from the stream before it was processed",
                       _text(entry_id))
        return None
    raw = fields.get(STREAM_QUOTE_FIELD.encode()) or fields.get(STREAM_QUOTE_FIELD)
    try:
        quote = Quote.from_json(raw if raw is not None else b"")
    except MalformedQuote as exc:
        logger.warning("skipping malformed tick %s: %s", _text(entry_id), exc)
        return None
    if quote.volume <= 0:  # a well-formed print with nothing traded fills nothing
        return None
    return Tick(id=_text(entry_id), code=quote.code, price=quote.price, volume=quote.volume,
                seq=quote.seq, ts=quote.ts)


class FillsWorker:
    def __init__(self, db: Database, redis: Redis, names: BusNames, costs: Costs, *,
                 group: str, batch_size: int, block_ms: int, idempotency_ttl_s: int) -> None:
        self.db = db
        self.redis = redis
        self.stream = names.tick_stream
        self.health_key = names.fills_health
        self.costs = costs
        self.group = group
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.idempotency_ttl = timedelta(seconds=idempotency_ttl_s)
        self.stopping = threading.Event()
        self.fills_total = 0
        self.expired_total = 0
        self.last_entry_id: str | None = None
        self._next_health = 0.0
        self._next_expiry = 0.0
        self._next_purge = 0.0

    # --- the loop ------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the consumer group at the start of the stream, so a first run also sees the
        ticks already stored (orders only take ticks after their acceptance)."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            logger.info("created consumer group %s on %s", self.group, self.stream)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self) -> None:
        self.ensure_group()
        self.last_entry_id = self._last_delivered()
        logger.info("fills worker reading %s as %s/%s", self.stream, self.group, CONSUMER)
        pause = OUTAGE_PAUSE_INITIAL_S
        try:
            while not self.stopping.is_set():
                try:
                    # Again after an outage: a Redis that restarted empty has no group, and
                    # what was read but not acknowledged is pending.
                    self.ensure_group()
                    self.drain_pending()
                    while not self.stopping.is_set():
                        caught_up = self.step()
                        self.report_health(caught_up)
                        if caught_up:
                            self.housekeeping()
                        pause = OUTAGE_PAUSE_INITIAL_S
                except Exception as exc:
                    # The database down or frozen: wait for it here rather than exit. A crash
                    # would be restarted by the supervisor, but on its backoff (up to 30 s),
                    # not seconds after the database returns. Nothing is lost: the batch in
                    # hand was not acknowledged, and is read again from the pending entries.
                    # Redis too: down, restarted, or our connection killed (`CLIENT KILL`). A
                    # dead connection is replaced on the next command.
                    redis_lost = isinstance(exc, RedisConnectionError | RedisTimeoutError)
                    if not (redis_lost or is_unavailable(exc)):
                        raise
                    logger.warning("%s unavailable (%s); trying again in %.1f s",
                                   "Redis" if redis_lost else "database",
                                   type(exc).__name__, pause)
                    self.stopping.wait(pause)
                    pause = min(OUTAGE_PAUSE_MAX_S, pause * 2)
        finally:
            try:
                self.redis.delete(self.health_key)
            except RedisError as exc:  # stopped during a Redis outage: the TTL removes it
                logger.warning("heartbeat not deleted at exit: %s", type(exc).__name__)

    def _last_delivered(self) -> str | None:
        """The group's last delivered entry (where a restarted worker resumes)."""
        groups: Any = self.redis.xinfo_groups(self.stream)
        for group in groups:
            if _text(group["name"]) == self.group:
                last = _text(group["last-delivered-id"])
                return None if last == "0-0" else last
        return None

    def drain_pending(self) -> None:
        """Process what this consumer was given before a stop and never acknowledged."""
        while not self.stopping.is_set():
            entries = self._read("0", block=False)
            if not entries:
                return
            logger.info("processing %d pending tick(s) again", len(entries))
            self.process(entries)

    def step(self) -> bool:
        """Read and process one batch of new ticks; True if the worker is caught up."""
        entries = self._read(">", block=True)
        if entries:
            self.process(entries)
        else:
            self.catch_up_while_idle()
        return len(entries) < self.batch_size

    def catch_up_while_idle(self) -> None:
        """With no new ticks, still look back for orders placed since the last batch: a tick
        they missed (processed before they committed) must not wait for the next trade."""
        if self.last_entry_id is None:
            return
        unchecked = [order for order in self.db.call(store.resting_orders, set())
                     if not order.checked]
        if unchecked:
            self.catch_up(unchecked, end=self.last_entry_id)
            self.db.call(store.mark_checked, [order.id for order in unchecked],
                         self.last_entry_id)

    def _read(self, start: str, *, block: bool) -> Entries:
        answer: Any = self.redis.xreadgroup(self.group, CONSUMER, {self.stream: start},
                                       count=self.batch_size,
                                       block=self.block_ms if block else None)
        if not answer:
            return []
        entries: Entries = answer[0][1]
        return entries

    # --- one batch -----------------------------------------------------------------------------

    def process(self, entries: Entries) -> None:
        ticks = [tick for tick in (parse_tick(i, f) for i, f in entries) if tick is not None]
        first_id, last_id = _text(entries[0][0]), _text(entries[-1][0])
        resting = self.db.call(store.resting_orders, {tick.code for tick in ticks})
        unchecked = [order for order in resting if not order.checked]
        if unchecked:
            self.catch_up(unchecked, end=f"({first_id}")
        for tick in ticks:
            self.apply(tick, resting)
        if unchecked:
            self.db.call(store.mark_checked, [order.id for order in unchecked], last_id)
        self.redis.xack(self.stream, self.group, *[entry_id for entry_id, _ in entries])
        self.last_entry_id = last_id

    def catch_up(self, orders: list[RestingOrder], *, end: str) -> None:
        """Apply to newly seen orders the ticks between their acceptance and `end` (an XRANGE
        bound: `(id` excludes the entry, a bare id includes it)."""
        start = min((order.rests_after for order in orders), key=stream_id_key)
        if not after(end.lstrip("("), start):
            return
        entries: Any = self.redis.xrange(self.stream, min=f"({start}", max=end)
        for tick in (parse_tick(i, f) for i, f in entries):
            if tick is not None:
                self.apply(tick, orders)

    def apply(self, tick: Tick, orders: Iterable[RestingOrder]) -> None:
        for side in (Side.BUY, Side.SELL):
            matched = candidates(tick, orders, side)
            if not matched:
                continue
            volume_left = tick.volume - self.db.call(store.volume_taken, tick.id, side)
            for order in matched:
                if volume_left <= 0:
                    break
                filled = self.db.call_retrying(store.fill_from_tick, order, tick, volume_left,
                                               self.costs)
                if filled:
                    self.fills_total += 1
                    logger.info("filled order %d: %d @ %d (tick %s)", order.id, filled,
                                order.price, tick.id)
                volume_left -= filled

    # --- health --------------------------------------------------------------------------------

    def report_health(self, caught_up: bool) -> None:
        """The heartbeat /ready reports (`fills`): a hash that expires when the worker stops
        refreshing it."""
        now = time.monotonic()
        if now < self._next_health:
            return
        self._next_health = now + HEALTH_INTERVAL_S
        fields: dict[FieldT, EncodableT] = {
            "pid": os.getpid(), "updated_at": format_utc(datetime.now(UTC), millis=True),
            "last_entry_id": self.last_entry_id or "", "caught_up": int(caught_up),
            "fills_total": self.fills_total, "expired_total": self.expired_total}
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.health_key, mapping=fields)
            pipe.expire(self.health_key, HEALTH_TTL_S)
            pipe.execute()

    # --- housekeeping --------------------------------------------------------------------------

    def housekeeping(self) -> None:
        """Work that must not run ahead of the stream: a DAY order expires only once the
        worker has processed the ticks that printed before its close."""
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + EXPIRY_INTERVAL_S
            self.expire_due(datetime.now(UTC))
        if now >= self._next_purge:
            self._next_purge = now + PURGE_INTERVAL_S
            purged = self.db.call(purge, datetime.now(UTC) - self.idempotency_ttl)
            if purged:
                logger.info("purged %d idempotency key(s)", purged)

    def expire_due(self, now: datetime) -> int:
        expired = 0
        for order_id, user_id in self.db.call(store.due_for_expiry, now):
            if self.db.call_retrying(order_service.expire, order_id, user_id, now):
                expired += 1
        if expired:
            self.expired_total += expired
            logger.info("expired %d DAY order(s) at the session close", expired)
        return expired
