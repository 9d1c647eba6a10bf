"""`python -m api.fills`: the fills worker (api.fills.worker), configured like the API from the
environment (api.settings). SIGTERM or SIGINT stops it after the batch in hand."""

from __future__ import annotations

import logging
import math
import signal
from types import FrameType

from redis import Redis

from api.db import Database, make_engine
from api.fills.worker import FillsWorker
from api.market.rules import TradingRules
from api.settings import ApiSettings
from api.streams.events import EventPublisher
from relayer.market_calendar import market_calendar


def main() -> None:
    settings = ApiSettings()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The driver timeouts bound every statement, so an outage is an error the worker waits out
    # (api.fills.worker), never a hang. No per-call deadline: the worker has no client waiting.
    db = Database(make_engine(settings.database_url, pool_size=2,
                              connect_timeout_s=settings.database_connect_timeout_s,
                              read_timeout_s=settings.database_read_timeout_s,
                              lock_wait_timeout_s=math.ceil(settings.database_deadline_s)),
                  deadlock_retries=settings.database_deadlock_retries,
                  # Fills, expiries and activations recorded events: nudge the stream servers.
                  commit_listener=EventPublisher.connect(
                      settings.redis_url, settings.names,
                      timeout_s=settings.api_redis_timeout_s))
    # The socket timeout must outlast a blocking read.
    redis = Redis.from_url(settings.redis_url, socket_timeout=settings.fills_block_ms / 1000 + 5,
                           socket_connect_timeout=5, health_check_interval=30)
    worker = FillsWorker(db, redis, settings.names,
                         TradingRules.of(settings).costs,
                         group=settings.fills_consumer_group,
                         batch_size=settings.fills_batch_size, block_ms=settings.fills_block_ms,
                         idempotency_ttl_s=settings.idempotency_key_ttl_s,
                         user_events_retention_s=settings.user_events_retention_s,
                         # The calendar the API trades by (api.resources), so that both agree
                         # on when a day closes and reservations are activated.
                         calendar=market_calendar(settings),
                         snapshot_batch_size=settings.snapshot_batch_size,
                         intraday_sample_interval_s=settings.intraday_sample_interval_s,
                         intraday_retention_days=settings.intraday_retention_days)

    def stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping after this batch", signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.run()
    finally:
        redis.close()
        db.dispose()


if __name__ == "__main__":
    main()
