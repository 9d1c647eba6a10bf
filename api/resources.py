"""The long-lived resources of one API process, created in the app's lifespan.

Held on `app.state.resources` and reached by routes through the dependencies in `api.deps`.
Nothing here is created at import time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.maint_notifications import MaintNotificationsConfig

from api.auth.passwords import Passwords
from api.auth.tokens import AccessTokenCache
from api.db import Database, make_engine
from api.instruments.catalog import InstrumentCatalog
from api.market.rules import TradingRules
from api.models import utc_now
from api.payments.portone import PortOne
from api.quotes.cache import QuoteCache
from api.settings import ApiSettings
from api.streams.events import EventPublisher
from relayer.bus import BusNames, TopicTemplate
from relayer.market_calendar import MarketCalendar, market_calendar


def redis_pool(url: str, *, socket_timeout: float, connect_timeout: float,
               max_connections: int) -> Redis:
    """An API Redis client: a Redis outage answers 503 at once, a healthy Redis never does.

    A pooled connection dies with every Redis restart, `CLIENT KILL`, or idle timeout on the
    server, and the pool cannot know until it is used (without this, 20 of 20 requests after a
    `CLIENT KILL` answered 503). Two defences:

    - The pool drops a connection the server has closed when it hands it out. redis-py 8 skips
      that check while "maintenance notifications" (a Redis Enterprise feature we do not use)
      are on, and they are on by default: off here.
    - One immediate retry, on a fresh connection, when a command fails with ConnectionError
      (what a dead connection gives). No backoff and no retry on TimeoutError: a Redis that is
      down refuses the retry in well under a millisecond, and a frozen one still costs one
      socket timeout, not two; so an outage stays a fast 503.

    A retried command may have run once already if the connection died after Redis read it;
    every API command is a read, a set operation or a publish that tolerates that (a failed
    login counted twice, at worst).

    A plain pool, not redis-py's blocking one: that one takes an asyncio lock on every command,
    and under load its hand-offs alone passed its wait (a 503 from a healthy Redis in CI).
    Bursts beyond the pool come from the live stream's snapshots, which the stream bounds
    itself (api.streams.fanout, STREAM_SNAPSHOT_CONCURRENCY).
    """
    return Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        max_connections=max_connections,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )


@dataclass
class Resources:
    settings: ApiSettings
    db: Database
    redis: Redis
    # For blocking commands only (BLPOP on a command result): the shared pool's short socket
    # timeout would cut a wait of `command_timeout_s` short.
    blocking_redis: Redis
    names: BusNames
    topics: TopicTemplate
    quote_cache: QuoteCache
    access_tokens: AccessTokenCache
    portone: PortOne
    passwords: Passwords
    trading_rules: TradingRules
    # Every instrument, in memory (refreshed from SQL every INSTRUMENTS_REFRESH_S).
    instruments: InstrumentCatalog
    # When the market trades (relayer.market_calendar): sessions, trading days, closes.
    # MARKET_CALENDAR's, built once per process (a `krx` one precomputes its days).
    calendar: MarketCalendar
    # "Now" for rules that depend on the day (the daily deposit cap); tests put their own.
    clock: Callable[[], datetime] = utc_now

    @classmethod
    def open(cls, settings: ApiSettings) -> Resources:
        timeout = settings.api_redis_timeout_s
        redis = redis_pool(settings.redis_url, socket_timeout=timeout,
                           connect_timeout=timeout,
                           max_connections=settings.api_redis_max_connections)
        blocking_redis = redis_pool(settings.redis_url,
                                    socket_timeout=settings.command_timeout_s + 2,
                                    connect_timeout=timeout,
                                    max_connections=settings.api_redis_max_connections)
        engine = make_engine(settings.database_url, pool_size=settings.database_pool_size,
                             echo=settings.database_echo,
                             connect_timeout_s=settings.database_connect_timeout_s,
                             read_timeout_s=settings.database_read_timeout_s,
                             lock_wait_timeout_s=math.ceil(settings.database_deadline_s))
        # After each commit that recorded user events, a nudge to the stream servers.
        events = EventPublisher.connect(settings.redis_url, settings.names, timeout_s=timeout)
        db = Database(engine, deadlock_retries=settings.database_deadlock_retries,
                      deadline_s=settings.database_deadline_s, commit_listener=events)
        return cls(settings, db,
                   redis, blocking_redis,
                   settings.names, settings.topics,
                   QuoteCache(settings.quote_cache_ttl_s),
                   AccessTokenCache(settings.signing_key()),
                   PortOne(api_secret=settings.portone_v2_api_secret.get_secret_value(),
                           webhook_secret=settings.portone_webhook_secret.get_secret_value(),
                           base_url=settings.portone_api_base_url,
                           store_id=settings.portone_store_id,
                           timeout_s=settings.portone_timeout_s),
                   Passwords(settings.password_hash_profile),
                   TradingRules.of(settings),
                   InstrumentCatalog(db, settings.instruments_refresh_s),
                   market_calendar(settings))

    async def close(self) -> None:
        await self.redis.aclose()
        await self.blocking_redis.aclose()
        self.db.dispose()
