"""Every server-side Lua script of the platform runs through `RedisScript`: called with EVALSHA,
loaded before its first use on each client.

A script is a module-level value (its source and SHA1); the client it runs on is given per call,
so one script serves every client that needs it: the relayer's tick writes
(relayer.publisher) and lease (relayer.lease), the API's rate limits (api.auth.rate_limit).

redis-py's own `Script` sends EVALSHA first and loads the script when the server answers
NOSCRIPT. We load it up front, and again after any Redis error on that client, because the
embedded fakeredis server used on machines without `redis-server` answers NOSCRIPT by closing
the connection, which `Script` cannot recover from. A real Redis that lost its script cache
(restarted, SCRIPT FLUSH) answers NOSCRIPT: loaded again and run at once, as `Script` does, so
that the call that finds out does not fail.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT, KeyT


class RedisScript:
    def __init__(self, source: str) -> None:
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        # The clients that have loaded it since their last error (weak: a closed client goes).
        self._loaded: weakref.WeakSet[Redis] = weakref.WeakSet()

    async def __call__(self, redis: Redis, keys: Sequence[KeyT],
                       args: Sequence[EncodableT]) -> Any:
        try:
            if redis not in self._loaded:
                await redis.script_load(self._source)
                self._loaded.add(redis)
            try:
                return await redis.evalsha(self._sha, len(keys), *keys, *args)
            except NoScriptError:
                await redis.script_load(self._source)
                return await redis.evalsha(self._sha, len(keys), *keys, *args)
        except RedisError:
            self._loaded.discard(redis)
            raise
