"""End to end: the real relayer process against the real simulator when Redis fails under it
(refuses connections, then answers again) or holds garbage at a quote key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from relayer.bus import MalformedQuote, Quote, format_utc
from relayer.sim import SimServer
from tests.conftest import RedisServer
from tests.support.bus_client import NAMES, eventually, health, wait_connected
from tests.support.relayer_process import RelayerProcess

pytestmark = pytest.mark.slow

CODES = ("A005930", "A000660", "A035420", "A068270", "A051910", "A006400")


@pytest.fixture
def relayers() -> Iterator[list[RelayerProcess]]:
    started: list[RelayerProcess] = []
    yield started
    for process in started:
        process.kill()


def start_relayer(started: list[RelayerProcess], tmp_path: Path, redis_server: RedisServer,
                  sim: SimServer, **env: str) -> RelayerProcess:
    base = {"REDIS_URL": redis_server.url, "RELAYER_UPSTREAM": "sim",
            "RELAYER_UPSTREAM_URL": sim.url, "RELAYER_HEARTBEAT_MS": "1000"}
    process = RelayerProcess(tmp_path / "relayer.log", {**base, **env}).start()
    started.append(process)
    return process


async def readable_quote(redis: Redis, code: str) -> Quote | None:
    raw = await redis.get(NAMES.quote(code))
    try:
        return None if raw is None else Quote.from_json(raw)
    except MalformedQuote:
        return None


async def test_writes_resume_within_seconds_of_redis_answering_again(
    tmp_path: Path, relayers: list[RelayerProcess], real_redis_server: RedisServer,
    sim: SimServer,
) -> None:
    # A long upstream reconnect backoff, as after a flapping upstream: Redis writes must not
    # wait on it (they did: the publisher shared it, and slept up to 60 s between attempts).
    relayer = start_relayer(relayers, tmp_path, real_redis_server, sim,
                            RELAYER_SUBSCRIBE="A005930", RELAYER_BACKOFF_INITIAL_S="60",
                            RELAYER_BACKOFF_MAX_S="120")
    client = Redis.from_url(real_redis_server.url)
    await wait_connected(client, subscriptions=1)

    async def written() -> bool:
        state = await health(client)
        return bool(state["last_write_at"]) and int(str(state["ticks_written_total"])) > 0

    await eventually(written, what="ticks written and reported in the health hash")
    before = await health(client)
    await client.aclose()

    real_redis_server.stop()  # refused connections; the relayer keeps reading upstream
    await relayer.wait_for_log("Redis write of")  # it noticed, and buffers
    await asyncio.sleep(3)
    real_redis_server.start()  # back, empty
    back, back_at = time.monotonic(), format_utc(datetime.now(UTC), millis=True)
    client = Redis.from_url(real_redis_server.url)

    async def new_tick_written() -> bool:  # read upstream after Redis came back, not buffered
        quote = await readable_quote(client, "A005930")
        return quote is not None and quote.received_at > back_at

    await eventually(new_tick_written, timeout=5, what="a new tick written after Redis came back")
    resumed_after = time.monotonic() - back
    print(f"\nfirst new tick written {resumed_after:.2f}s after Redis answered again")

    async def health_reports_the_writes() -> bool:
        state = await health(client)
        return state["state"] is not None and int(str(state["ticks_written_total"])) > int(
            str(before["ticks_written_total"]))

    await eventually(health_reports_the_writes, timeout=5, what="health hash rewritten")
    after = await health(client)
    assert str(after["last_write_at"]) > str(before["last_write_at"])
    assert int(str(after["ticks_total"])) >= int(str(after["ticks_written_total"]))
    relayer.assert_running()
    await client.aclose()


async def test_killed_redis_connections_cost_the_relayer_no_session(
    tmp_path: Path, relayers: list[RelayerProcess], redis_server: RedisServer, sim: SimServer,
) -> None:
    relayer = start_relayer(relayers, tmp_path, redis_server, sim, RELAYER_SUBSCRIBE="A005930",
                            RELAYER_BACKOFF_INITIAL_S="60", RELAYER_BACKOFF_MAX_S="120")
    client = Redis.from_url(redis_server.url)
    await wait_connected(client, subscriptions=1)

    async def has_quote() -> bool:
        return await readable_quote(client, "A005930") is not None

    await eventually(has_quote, what="a first quote")
    killed_at = format_utc(datetime.now(UTC), millis=True)
    assert await client.client_kill_filter(_type="normal", skipme=True) >= 1
    await client.client_kill_filter(_type="pubsub")

    async def new_tick_written() -> bool:
        quote = await readable_quote(client, "A005930")
        return quote is not None and quote.received_at > killed_at

    await eventually(new_tick_written, timeout=5, what="a tick written after CLIENT KILL")
    await wait_connected(client, subscriptions=1)  # listening for commands again
    state = await health(client)
    assert state["reconnects"] == 0 and "upstream connection ended" not in relayer.log()
    await client.aclose()


GARBAGE: list[bytes] = [
    b"[]",
    b'{"code":"A000660","price":71',  # truncated
    b'{"code":"A035420","price":"71200","ts":"2000-01-01T00:00:00Z"}',  # a string price
    b'{"code":"A068270","price":-5,"ts":"2000-01-01T00:00:00Z"}',  # negative, fields missing
    b'{"ts":"zzzzzzzzzzzzzzzzzzzz"}',  # a "time" that sorts after every real one
]


async def test_garbage_at_quote_keys_is_overwritten_without_breaking_the_session(
    tmp_path: Path, relayers: list[RelayerProcess], redis_server: RedisServer, sim: SimServer,
) -> None:
    client = Redis.from_url(redis_server.url)
    # Garbage before the start (the relayer reads the stored quotes to resume the day's
    # open/high/low) and one key of the wrong type (a GET inside the write script fails).
    for code, garbage in zip(CODES, GARBAGE, strict=False):
        await client.set(NAMES.quote(code), garbage)
    await client.hset(NAMES.quote(CODES[-1]), "price", "71200")
    relayer = start_relayer(relayers, tmp_path, redis_server, sim,
                            RELAYER_SUBSCRIBE=",".join(CODES))
    await wait_connected(client, subscriptions=len(CODES))

    async def all_readable() -> bool:
        return all([await readable_quote(client, code) is not None for code in CODES])

    await eventually(all_readable, timeout=15, what="every garbage quote overwritten")

    # Garbage written while it runs is overwritten too.
    for code, garbage in zip(CODES, GARBAGE, strict=False):
        await client.set(NAMES.quote(code), garbage)
    await eventually(all_readable, timeout=15, what="garbage overwritten again")
    state = await health(client)
    assert state["reconnects"] == 0 and state["state"] == "connected"
    assert "upstream connection ended" not in relayer.log()
    assert "Redis write of" not in relayer.log()  # no batch failed on the garbage
    relayer.assert_running()
    await client.aclose()
