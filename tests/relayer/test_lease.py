"""The leader lease against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from relayer.lease import LeadershipLost, Lease
from tests.conftest import RedisServer

KEY = "t:relayer:leader"


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_second_holder_waits_until_the_first_lets_go(redis: Redis) -> None:
    first, second = Lease(redis, KEY, "a", 300), Lease(redis, KEY, "b", 300)
    await first.acquire()
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await first.release()
    await asyncio.wait_for(waiting, 2)
    assert await redis.get(KEY) == b"b"


async def test_holder_renews_and_takes_back_a_vanished_lease(redis: Redis) -> None:
    lease = Lease(redis, KEY, "a", 300)
    await lease.acquire()
    holding = asyncio.create_task(lease.hold())
    await asyncio.sleep(0.5)  # longer than the lifetime: only renewals keep it
    assert await redis.get(KEY) == b"a"
    await redis.delete(KEY)  # a Redis that restarted empty
    await asyncio.sleep(0.25)
    assert await redis.get(KEY) == b"a"
    holding.cancel()


async def test_holder_steps_down_when_another_owns_the_lease(redis: Redis) -> None:
    lease = Lease(redis, KEY, "a", 300)
    await lease.acquire()
    await redis.set(KEY, "b")
    with pytest.raises(LeadershipLost, match="another relayer"):
        await asyncio.wait_for(lease.hold(), 2)
    await lease.release()  # must not delete someone else's lease
    assert await redis.get(KEY) == b"b"


async def test_holder_steps_down_when_redis_is_gone_for_a_lifetime(
    real_redis_server: RedisServer,
) -> None:
    redis = Redis.from_url(real_redis_server.url, socket_timeout=0.1, socket_connect_timeout=0.1)
    lease = Lease(redis, KEY, "a", 600)
    await lease.acquire()
    real_redis_server.stop()
    with pytest.raises(LeadershipLost, match="could not renew"):
        await asyncio.wait_for(lease.hold(), 5)
    await redis.aclose()
