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
from api.models import utc_now
from api.payments.portone import PortOne
from api.quotes.cache import QuoteCache
from api.settings import ApiSettings
from relayer.bus import BusNames, TopicTemplate


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
        db = Database(engine, deadlock_retries=settings.database_deadlock_retries,
                      deadline_s=settings.database_deadline_s)
        return cls(settings, db,
                   redis, blocking_redis,
                   BusNames(settings.stocking_ns), TopicTemplate(settings.relayer_topic_template),
                   QuoteCache(settings.quote_cache_ttl_s),
                   AccessTokenCache(settings.signing_key()),
                   PortOne(api_secret=settings.portone_v2_api_secret.get_secret_value(),
                           webhook_secret=settings.portone_webhook_secret.get_secret_value(),
                           base_url=settings.portone_api_base_url,
                           store_id=settings.portone_store_id,
                           timeout_s=settings.portone_timeout_s),
                   Passwords(settings.password_hash_profile))

    async def close(self) -> None:
        await self.redis.aclose()
        await self.blocking_redis.aclose()
        self.db.dispose()
