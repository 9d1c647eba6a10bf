"""A server-side Lua script called with EVALSHA, loaded before its first use.

redis-py's own `Script` sends EVALSHA first and loads the script when the server answers
NOSCRIPT. We load it up front, and again after any Redis error (a restarted Redis has an empty
script cache), because the embedded fakeredis server used on machines without `redis-server`
answers NOSCRIPT by closing the connection, which `Script` cannot recover from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, KeyT


class RedisScript:
    def __init__(self, redis: Redis, source: str) -> None:
        self._redis = redis
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._loaded = False

    async def __call__(self, keys: Sequence[KeyT], args: Sequence[EncodableT]) -> Any:
        try:
            if not self._loaded:
                await self._redis.script_load(self._source)
                self._loaded = True
            return await self._redis.evalsha(self._sha, len(keys), *keys, *args)
        except RedisError:
            self._loaded = False
            raise
