"""The leader lease: only one relayer per namespace holds the upstream connection.

`SET NX PX` takes the lease; its holder renews it every third of its lifetime with a script that
checks ownership first. A second relayer polls until the key expires and takes over, so a
SIGKILLed leader is replaced within about one lease lifetime. A leader that cannot renew
(Redis down) for a whole lifetime must assume another took over and steps down.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relayer.redis_script import RedisScript

logger = logging.getLogger(__name__)

# Renew if we hold it; take it back if it vanished (a Redis restart without persistence);
# 0 if someone else holds it.
_RENEW = RedisScript("""
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not holder then
  return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
end
return 0
""")

_RELEASE = RedisScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""")


class LeadershipLost(Exception):
    pass


class Lease:
    def __init__(self, redis: Redis, key: str, holder: str, ttl_ms: int) -> None:
        self._redis = redis
        self._key = key
        self._holder = holder
        self._ttl_ms = ttl_ms

    @property
    def ttl_s(self) -> float:
        return self._ttl_ms / 1000

    async def acquire(self) -> None:
        """Wait until we hold the lease."""
        announced = False
        while True:
            try:
                if await self._redis.set(self._key, self._holder, nx=True, px=self._ttl_ms):
                    logger.info("took the leader lease %s", self._key)
                    return
                if not announced:
                    current = await self._redis.get(self._key)
                    logger.info("standing by: lease %s is held by %r", self._key, current)
                    announced = True
            except RedisError as exc:
                logger.warning("cannot reach Redis for the leader lease: %s", exc)
            await asyncio.sleep(self.ttl_s / 5)

    async def hold(self) -> None:
        """Renew forever; raise LeadershipLost once we can no longer be sure we hold it."""
        renewed_at = time.monotonic()
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                held = await _RENEW(self._redis, keys=[self._key],
                                     args=[self._holder, self._ttl_ms])
            except RedisError as exc:
                unsure_for = time.monotonic() - renewed_at
                if unsure_for >= self.ttl_s:
                    raise LeadershipLost(
                        f"could not renew the lease for {unsure_for:.1f}s ({exc})"
                    ) from exc
                logger.warning("lease renewal failed (%s); retrying", exc)
                continue
            if not held:
                raise LeadershipLost("another relayer holds the lease")
            renewed_at = time.monotonic()

    async def release(self) -> None:
        try:
            await _RELEASE(self._redis, keys=[self._key], args=[self._holder])
        except RedisError as exc:
            logger.warning("could not release the lease (it expires by itself): %s", exc)
