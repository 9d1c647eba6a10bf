"""The leader lease against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from relayer.lease import LeadershipLost, Lease
from tests.conftest import RedisServer

KEY = "t:relayer:leader"


async def test_second_holder_waits_until_the_first_lets_go(bus: Redis) -> None:
    first, second = Lease(bus, KEY, "a", 300), Lease(bus, KEY, "b", 300)
    await first.acquire()
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await first.release()
    await asyncio.wait_for(waiting, 2)
    assert await bus.get(KEY) == b"b"


async def test_holder_renews_and_takes_back_a_vanished_lease(bus: Redis) -> None:
    lease = Lease(bus, KEY, "a", 300)
    await lease.acquire()
    holding = asyncio.create_task(lease.hold())
    await asyncio.sleep(0.5)  # longer than the lifetime: only renewals keep it
    assert await bus.get(KEY) == b"a"
    await bus.delete(KEY)  # a Redis that restarted empty
    await asyncio.sleep(0.25)
    assert await bus.get(KEY) == b"a"
    holding.cancel()


async def test_holder_steps_down_when_another_owns_the_lease(bus: Redis) -> None:
    lease = Lease(bus, KEY, "a", 300)
    await lease.acquire()
    await bus.set(KEY, "b")
    with pytest.raises(LeadershipLost, match="another relayer"):
        await asyncio.wait_for(lease.hold(), 2)
    await lease.release()  # must not delete someone else's lease
    assert await bus.get(KEY) == b"b"


async def test_holder_steps_down_when_redis_is_gone_for_a_lifetime(
    real_redis_server: RedisServer,
) -> None:
    bus = Redis.from_url(real_redis_server.url, socket_timeout=0.1, socket_connect_timeout=0.1)
    lease = Lease(bus, KEY, "a", 600)
    await lease.acquire()
    real_redis_server.stop()
    with pytest.raises(LeadershipLost, match="could not renew"):
        await asyncio.wait_for(lease.hold(), 5)
    await bus.aclose()
