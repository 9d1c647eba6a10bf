"""The tick writer against a real Redis: what lands where, and what never goes backwards."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from relayer.backoff import Backoff
from relayer.bus import BusNames, Quote
from relayer.publisher import TickPublisher
from tests.conftest import RedisServer

NAMES = BusNames("t")


def quote(price: int, ts: str, code: str = "A005930") -> Quote:
    return Quote(code=code, price=price, base=70000, change=price - 70000, change_rate="0.00",
                 change_type="UP", volume=1, cum_volume=1, cum_amount=price, trade_type="BUY",
                 trading_strength=None, open=price, high=price, low=price, session=None,
                 exchange=None, currency="KRW", ts=ts, received_at=ts, seq=1)


def make_publisher(bus: Redis, **overrides: int) -> TickPublisher:
    options = {"quote_ttl_s": 100, "stream_maxlen": 1000, "max_batch": 500,
               "max_buffered": 1000, **overrides}
    return TickPublisher(bus, NAMES, backoff=Backoff(0.01, 0.05), **options)


async def test_batch_writes_quote_channel_and_stream(bus: Redis) -> None:
    publisher = make_publisher(bus)
    pubsub = bus.pubsub()
    await pubsub.subscribe(NAMES.tick_channel("A005930"))
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    first = quote(71000, "2026-11-20T00:00:01Z")
    second = quote(71100, "2026-11-20T00:00:01Z")  # same second: the later arrival wins
    publisher.add(first)
    publisher.add(second)
    publisher.add(quote(5000, "2026-11-20T00:00:02Z", code="A000660"))
    await publisher.drain()

    stored = await bus.get(NAMES.quote("A005930"))
    assert Quote.from_json(stored) == second
    assert 90 < await bus.ttl(NAMES.quote("A005930")) <= 100
    entries = await bus.xrange(NAMES.tick_stream)
    assert [Quote.from_json(fields[b"q"]).price for _, fields in entries] == [71000, 71100, 5000]
    # The stored and published quote names its stream entry; the entry itself is the bytes
    # the relayer encoded.
    ids = [entry_id.decode() for entry_id, _ in entries]
    assert stored == second.to_json()[:-1] + b',"tick_id":"' + ids[1].encode() + b'"}'
    assert Quote.from_json(stored).tick_id == ids[1]
    assert [fields[b"q"] for _, fields in entries][:2] == [first.to_json(), second.to_json()]
    published = [await pubsub.get_message(timeout=1) for _ in range(2)]
    assert [(Quote.from_json(m["data"]).price, Quote.from_json(m["data"]).tick_id)
            for m in published if m] == [(71000, ids[0]), (71100, ids[1])]
    assert publisher.written_total == 3 and publisher.stale_total == 0
    await pubsub.aclose()


async def test_older_tick_goes_to_the_stream_only(bus: Redis) -> None:
    publisher = make_publisher(bus)
    newer = quote(71000, "2026-11-20T00:00:05Z")
    publisher.add(newer)
    await publisher.drain()
    publisher.add(quote(69000, "2026-11-20T00:00:04Z"))
    await publisher.drain()
    stored = Quote.from_json(await bus.get(NAMES.quote("A005930")))
    assert stored == newer
    [(first_id, _), _] = await bus.xrange(NAMES.tick_stream)
    assert stored.tick_id == first_id.decode()  # still the newer print's entry
    assert await bus.xlen(NAMES.tick_stream) == 2
    assert publisher.stale_total == 1


async def test_batches_are_split_at_the_maximum(bus: Redis) -> None:
    publisher = make_publisher(bus, max_batch=7)
    for second in range(20):
        publisher.add(quote(70000 + second * 100, f"2026-11-20T00:00:{second:02d}Z"))
    await publisher.drain()
    assert await bus.xlen(NAMES.tick_stream) == 20
    assert Quote.from_json(await bus.get(NAMES.quote("A005930"))).price == 71900


async def test_outage_keeps_the_newest_ticks_and_counts_the_dropped(
    real_redis_server: RedisServer,
) -> None:
    bus = Redis.from_url(real_redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    publisher = make_publisher(bus, max_buffered=5)
    real_redis_server.stop()
    for second in range(8):
        publisher.add(quote(70000 + second, f"2026-11-20T00:00:{second:02d}Z"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await publisher.drain()  # fails, backs off, fails again...
    assert publisher.pending == 5 and publisher.dropped_total == 3
    real_redis_server.start()
    async with asyncio.timeout(10):
        await publisher.drain()
    entries = await bus.xrange(NAMES.tick_stream)
    prices = [Quote.from_json(fields[b"q"]).price for _, fields in entries]
    assert prices == [70003, 70004, 70005, 70006, 70007]
    await bus.aclose()
