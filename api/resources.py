"""The long-lived resources of one API process, created in the app's lifespan.

Held on `app.state.resources` and reached by routes through the dependencies in `api.deps`.
Nothing here is created at import time.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from api.auth.tokens import AccessTokenCache
from api.db import Database, make_engine
from api.payments.portone import PortOne
from api.quotes.cache import QuoteCache
from api.settings import ApiSettings
from relayer.bus import BusNames, TopicTemplate


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

    @classmethod
    def open(cls, settings: ApiSettings) -> Resources:
        timeout = settings.api_redis_timeout_s
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=settings.api_redis_max_connections,
            # No retries: a Redis outage must answer 503 at once, not after a backoff.
            retry=Retry(NoBackoff(), 0),
        )
        blocking_redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.command_timeout_s + 2,
            socket_connect_timeout=timeout,
            max_connections=settings.api_redis_max_connections,
            retry=Retry(NoBackoff(), 0),
        )
        engine = make_engine(settings.database_url, pool_size=settings.database_pool_size,
                             echo=settings.database_echo)
        return cls(settings, Database(engine, deadlock_retries=settings.database_deadlock_retries),
                   redis, blocking_redis,
                   BusNames(settings.stocking_ns), TopicTemplate(settings.relayer_topic_template),
                   QuoteCache(settings.quote_cache_ttl_s),
                   AccessTokenCache(settings.signing_key()),
                   PortOne(api_secret=settings.portone_v2_api_secret.get_secret_value(),
                           webhook_secret=settings.portone_webhook_secret.get_secret_value(),
                           base_url=settings.portone_api_base_url,
                           store_id=settings.portone_store_id,
                           timeout_s=settings.portone_timeout_s))

    async def close(self) -> None:
        await self.redis.aclose()
        await self.blocking_redis.aclose()
        self.db.dispose()
