"""End to end: the real relayer process, the real simulator over real sockets, a real Redis."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from relayer.bus import CommandType, Quote
from relayer.sim import SimServer
from tests.conftest import RedisServer
from tests.support.bus_client import (
    NAMES,
    eventually,
    health,
    latest_quote,
    mark_restored_from_sql,
    send_command,
    wait_connected,
)
from tests.support.env import free_port, scaled
from tests.support.http_server import canned_http_server
from tests.support.relayer_process import RelayerProcess

SAMSUNG = "/topic/v1/kr/stock/trade/A005930"
HYNIX = "/topic/v1/kr/stock/trade/A000660"
NAVER = "/topic/v1/kr/stock/trade/A035420"

pytestmark = pytest.mark.slow

StartRelayer = Callable[..., RelayerProcess]


@pytest.fixture
def start_relayer(
    tmp_path: Path, redis_server: RedisServer, sim: SimServer
) -> Iterator[StartRelayer]:
    started: list[RelayerProcess] = []

    def start(name: str = "relayer", **env: str) -> RelayerProcess:
        base = {"REDIS_URL": redis_server.url, "RELAYER_UPSTREAM": "sim",
                "RELAYER_UPSTREAM_URL": sim.url, "RELAYER_HEARTBEAT_MS": "1000"}
        process = RelayerProcess(tmp_path / f"{name}.log", {**base, **env}).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def subscribe_frames(sim: SimServer, topic: str) -> list[dict[str, str]]:
    return [f.headers for f in sim.received
            if f.command == "SUBSCRIBE" and f.headers.get("destination") == topic]


async def test_seeded_topic_becomes_a_live_quote(start_relayer: StartRelayer, bus: Redis,
                                                 sim: SimServer) -> None:
    relayer = start_relayer(RELAYER_SUBSCRIBE="A005930")
    await wait_connected(bus, subscriptions=1)

    async def has_quote() -> bool:
        return await latest_quote(bus, "A005930") is not None

    await eventually(has_quote, what="a quote for A005930")
    quote = await latest_quote(bus, "A005930")
    assert quote is not None
    assert quote.code == "A005930" and quote.currency == "KRW"
    assert isinstance(quote.price, int) and quote.low <= quote.price <= quote.high
    assert quote.change == quote.price - quote.base
    assert 0.7 * quote.base <= quote.price <= 1.3 * quote.base
    assert await bus.ttl(NAMES.quote("A005930")) > 86000
    state = await health(bus)
    assert state["upstream"] == f"sim {sim.url}"
    assert state["ticks_total"] > 0 and state["last_tick_at"]
    active = await bus.hgetall(NAMES.active_subscriptions)
    assert list(active) == [SAMSUNG.encode()]
    relayer.assert_running()


async def test_subscribe_command_round_trip_then_unsubscribe_stops_updates(
    start_relayer: StartRelayer, bus: Redis, sim: SimServer
) -> None:
    await mark_restored_from_sql(bus)  # as the API does at start: unsubscribing is allowed
    start_relayer()
    await wait_connected(bus, subscriptions=0)
    pubsub = bus.pubsub()
    await pubsub.subscribe(NAMES.tick_channel("A000660"))

    result = await send_command(bus, CommandType.SUBSCRIBE, HYNIX)
    assert result.ok and result.topic == HYNIX and result.active == 1
    assert result.message == "subscribed"
    # The SUBSCRIBE went upstream with a receipt, and the simulator holds it.
    [headers] = subscribe_frames(sim, HYNIX)
    assert headers["receipt"] and headers["id"]
    assert HYNIX in sim.subscriptions()

    # Channel, quote key and stream all carry the new instrument.
    message = None
    while message is None:
        message = await pubsub.get_message(ignore_subscribe_messages=True,
                                           timeout=scaled(5))
    published = Quote.from_json(message["data"])
    assert published.code == "A000660"
    assert await latest_quote(bus, "A000660") is not None
    entries = await bus.xrevrange(NAMES.tick_stream, count=1)
    assert Quote.from_json(entries[0][1][b"q"]).code == "A000660"

    again = await send_command(bus, CommandType.SUBSCRIBE, HYNIX)
    assert again.ok and again.message == "already subscribed"
    assert len(subscribe_frames(sim, HYNIX)) == 1

    result = await send_command(bus, CommandType.UNSUBSCRIBE, HYNIX)
    assert result.ok and result.active == 0 and result.message == "unsubscribed"
    assert [f for f in sim.received if f.command == "UNSUBSCRIBE"]
    assert sim.subscriptions() == {}
    await pubsub.unsubscribe()
    length = await bus.xlen(NAMES.tick_stream)
    # The simulator sends 200 ticks/s when subscribed: a quarter second of silence is telling.
    await asyncio.sleep(0.25)
    assert await bus.xlen(NAMES.tick_stream) == length
    assert await bus.hlen(NAMES.active_subscriptions) == 0
    await pubsub.aclose()


async def test_invalid_command_topic_gets_a_failed_result(start_relayer: StartRelayer,
                                                         bus: Redis) -> None:
    start_relayer()
    await wait_connected(bus)
    result = await send_command(bus, CommandType.SUBSCRIBE, "/topic/v1/kr/stock/trade/nope")
    assert not result.ok and "invalid command" in result.message


async def test_reconnect_after_drop_restores_every_desired_topic(
    start_relayer: StartRelayer, bus: Redis, sim: SimServer
) -> None:
    await bus.sadd(NAMES.desired_subscriptions, SAMSUNG, HYNIX, NAVER)
    start_relayer()
    await wait_connected(bus, subscriptions=3)
    sessions = sim.stomp_sessions_total

    await sim.drop_connections()
    await sim.wait_for(lambda: sim.stomp_sessions_total > sessions
                       and len(sim.subscriptions()) == 3, timeout=scaled(10))
    assert set(sim.subscriptions()) == {SAMSUNG, HYNIX, NAVER}

    async def reconnected() -> bool:
        state = await health(bus)
        return state["reconnects"] == 1 and state["subscriptions"] == 3

    await eventually(reconnected, what="reconnect counted in health")


async def test_stalled_upstream_is_detected_and_replaced(
    start_relayer: StartRelayer, bus: Redis, sim: SimServer
) -> None:
    await bus.sadd(NAMES.desired_subscriptions, SAMSUNG)
    relayer = start_relayer()
    await wait_connected(bus, subscriptions=1)
    sessions = sim.stomp_sessions_total
    sim.stall()  # no ticks, no heart-beats, no pongs: the socket stays open
    # Heart-beats expected every 1 s, declared dead after 2 s of silence.
    await sim.wait_for(lambda: sim.stomp_sessions_total > sessions and bool(sim.subscriptions()),
                       timeout=scaled(10))
    await relayer.wait_for_log("no data or heart-beat from upstream")


async def test_flapping_server_does_not_cause_a_reconnect_storm(
    start_relayer: StartRelayer, sim: SimServer
) -> None:
    sim.accept_then_close = True
    relayer = start_relayer(RELAYER_BACKOFF_MAX_S="2")
    await asyncio.sleep(4)
    # Delays 0.2 s doubling to 2 s, at least half of each fixed: the first handshake, then at
    # the earliest 0.1, 0.3, 0.7, 1.5, 2.5, 3.5 s -> 7 in 4 s. A bare reconnect loop makes
    # hundreds.
    assert 2 <= sim.connections_total <= 7, sim.connections_total
    relayer.assert_running()


async def test_http_403_at_handshake_is_reported_and_retried_slowly(
    start_relayer: StartRelayer, bus: Redis, sim: SimServer
) -> None:
    sim.reject_http_status = 403
    relayer = start_relayer(RELAYER_AUTH_FAILURE_DELAY_S="600")
    await relayer.wait_for_log("refused our credentials")
    await asyncio.sleep(1)
    relayer.assert_running()
    assert (await health(bus))["state"] == "backoff"
    assert "HTTP 403" in relayer.log()


async def test_redis_restart_is_survived(start_relayer: StartRelayer,
                                         real_redis_server: RedisServer, sim: SimServer) -> None:
    client = Redis.from_url(real_redis_server.url)
    await client.sadd(NAMES.desired_subscriptions, SAMSUNG)
    relayer = start_relayer()
    await wait_connected(client, subscriptions=1)
    await client.aclose()

    real_redis_server.restart()  # an empty Redis: no quotes, no lease, no desired set
    client = Redis.from_url(real_redis_server.url)
    # The API rebuilds the desired set from SQL after a Redis loss; do what it does.
    await client.sadd(NAMES.desired_subscriptions, SAMSUNG)

    async def quotes_flow_again() -> bool:
        return await latest_quote(client, "A005930") is not None

    await eventually(quotes_flow_again, timeout=15, what="quotes written after the restart")
    await wait_connected(client, subscriptions=1)

    async def lease_taken_back() -> bool:
        return await client.get(NAMES.relayer_leader) is not None

    await eventually(lease_taken_back, what="the leader lease renewed into the new Redis")
    relayer.assert_running()
    await client.aclose()


async def test_desired_topic_without_nudge_is_picked_up_by_reconciliation(
    start_relayer: StartRelayer, bus: Redis, sim: SimServer
) -> None:
    await mark_restored_from_sql(bus)
    start_relayer(RELAYER_RECONCILE_INTERVAL_S="0.5")
    await wait_connected(bus, subscriptions=0)
    await bus.sadd(NAMES.desired_subscriptions, NAVER)  # no PUBLISH: a lost nudge
    await sim.wait_for(lambda: NAVER in sim.subscriptions(), timeout=scaled(5))
    await bus.srem(NAMES.desired_subscriptions, NAVER)
    await sim.wait_for(lambda: NAVER not in sim.subscriptions(), timeout=scaled(5))


async def test_a_desired_set_redis_lost_is_never_read_as_unsubscribe_everything(
    start_relayer: StartRelayer, bus: Redis, sim: SimServer
) -> None:
    await mark_restored_from_sql(bus)
    # A short reconcile period: before the fix, the flush emptied the upstream at once.
    start_relayer(RELAYER_SUBSCRIBE="A005930", RELAYER_RECONCILE_INTERVAL_S="0.3")
    await wait_connected(bus, subscriptions=1)
    assert (await send_command(bus, CommandType.SUBSCRIBE, HYNIX)).ok  # an admin's (SQL)

    await bus.flushall()  # Redis lost everything: the desired set and its marks

    async def reseeded() -> bool:
        return (await bus.smembers(NAMES.desired_subscriptions) == {SAMSUNG.encode()}
                and await bus.hexists(NAMES.desired_initialised, "seed"))

    await eventually(reseeded, what="RELAYER_SUBSCRIBE put back into the desired set")
    # A reconcile now, with the SQL part still missing, unsubscribes nothing ...
    resync = await send_command(bus, CommandType.RESYNC)
    assert resync.ok and "nothing unsubscribed" in resync.message
    # ... and an unsubscribe is held back until the set is restored.
    held = await send_command(bus, CommandType.UNSUBSCRIBE, HYNIX)
    assert not held.ok and held.message.startswith("kept for now")
    assert set(sim.subscriptions()) == {SAMSUNG, HYNIX}
    assert not [f for f in sim.received if f.command == "UNSUBSCRIBE"]

    # The API restores the SQL part (here: nothing, HYNIX was removed meanwhile) and marks it;
    # the relayer notices the mark by itself, without a nudge, and applies the removal.
    await mark_restored_from_sql(bus)
    await sim.wait_for(lambda: set(sim.subscriptions()) == {SAMSUNG}, timeout=scaled(5))


async def test_rejected_topic_fails_alone_and_is_not_retried(
    start_relayer: StartRelayer, bus: Redis, sim: SimServer
) -> None:
    await bus.sadd(NAMES.desired_subscriptions, SAMSUNG, HYNIX)
    start_relayer(RELAYER_RECONCILE_INTERVAL_S="0.5")
    await wait_connected(bus, subscriptions=2)
    sim.reject_topics = {NAVER}
    sessions = sim.stomp_sessions_total

    result = await send_command(bus, CommandType.SUBSCRIBE, NAVER)
    assert not result.ok
    assert "rejected by upstream" in result.message
    # The ERROR killed the connection; the good topics come back after the reconnect.
    await sim.wait_for(lambda: sim.stomp_sessions_total > sessions
                       and set(sim.subscriptions()) == {SAMSUNG, HYNIX}, timeout=scaled(10))
    await asyncio.sleep(1.5)  # three reconcile periods
    assert len(subscribe_frames(sim, NAVER)) == 1
    state = await health(bus)
    assert state["rejected_topics"] == [NAVER]


async def test_standby_takes_over_after_sigkill(start_relayer: StartRelayer, bus: Redis,
                                                sim: SimServer) -> None:
    await bus.sadd(NAMES.desired_subscriptions, SAMSUNG)
    first = start_relayer("first")
    await wait_connected(bus, subscriptions=1)
    leader = (await bus.get(NAMES.relayer_leader)).decode()
    second = start_relayer("second")
    await second.wait_for_log("standing by")
    assert sim.open_connections == 1  # the standby holds no upstream connection

    first.kill()  # SIGKILL: no goodbye, the lease must expire
    sessions = sim.stomp_sessions_total

    async def taken_over() -> bool:
        holder = await bus.get(NAMES.relayer_leader)
        return holder is not None and holder.decode() != leader

    await eventually(taken_over, timeout=5, what="the standby taking the lease")
    await sim.wait_for(lambda: sim.stomp_sessions_total > sessions
                       and SAMSUNG in sim.subscriptions(), timeout=scaled(5))

    async def new_leader_reports_health() -> bool:
        state = await health(bus)
        return state["instance"] != leader and state["state"] == "connected"

    await eventually(new_leader_reports_health, what="health from the new leader")


async def test_sigterm_disconnects_gracefully_and_releases_everything(
    start_relayer: StartRelayer, bus: Redis, sim: SimServer
) -> None:
    await bus.sadd(NAMES.desired_subscriptions, SAMSUNG)
    relayer = start_relayer()
    await wait_connected(bus, subscriptions=1)
    relayer.send(signal.SIGTERM)
    assert await relayer.wait_exit(timeout=5) == 0
    disconnects = [f for f in sim.received if f.command == "DISCONNECT"]
    assert len(disconnects) == 1 and disconnects[0].headers.get("receipt")
    assert await bus.get(NAMES.relayer_leader) is None
    assert await bus.exists(NAMES.relayer_health) == 0
    assert await bus.hlen(NAMES.active_subscriptions) == 0
    assert "DISCONNECT receipted by upstream" in relayer.log()


async def test_older_tick_never_overwrites_a_newer_quote(
    start_relayer: StartRelayer, bus: Redis, sim: SimServer
) -> None:
    # A quote from the future is in Redis (another relayer, a clock ahead): ours must not win.
    future = {"code": "A005930", "price": 1, "ts": "2999-01-01T00:00:00Z"}
    await bus.set(NAMES.quote("A005930"), orjson.dumps(future))
    await bus.sadd(NAMES.desired_subscriptions, SAMSUNG)
    start_relayer()
    await wait_connected(bus, subscriptions=1)

    async def ticks_in_stream() -> bool:
        return await bus.xlen(NAMES.tick_stream) >= 5

    await eventually(ticks_in_stream, what="ticks in the stream")
    assert orjson.loads(await bus.get(NAMES.quote("A005930"))) == future


async def test_toss_adapter_sends_a_fresh_guest_key_and_never_logs_it(
    start_relayer: StartRelayer, bus: Redis, sim: SimServer
) -> None:
    with canned_http_server() as token_server:
        token_server.answer = b'{"result": "guest-key-7f3a9c"}'
        relayer = start_relayer(RELAYER_UPSTREAM="toss", RELAYER_SUBSCRIBE="A005930",
                                RELAYER_TOSS_TOKEN_URL=f"{token_server.url}/refresh-utk")
        await wait_connected(bus, subscriptions=1)
        [connect] = [f for f in sim.received if f.command == "CONNECT"]
        assert connect.headers["authorization"] == "guest-key-7f3a9c"
        assert connect.headers["device-id"].startswith("WTS-")
        assert connect.headers["accept-version"] == "1.2"
        assert connect.headers["connection-id"]
        assert "guest-key-7f3a9c" not in relayer.log()
        assert "guest-key-7f3a9c" not in str(await bus.hgetall(NAMES.relayer_health))


async def test_relays_into_the_embedded_redis_of_a_bare_machine(
    tmp_path: Path, sim: SimServer
) -> None:
    """start_services.sh falls back to the embedded fakeredis server; the relayer works on it."""
    embedded = RedisServer(port=free_port(), folder=tmp_path, real=False)
    embedded.start()
    bus = Redis.from_url(embedded.url)
    relayer = RelayerProcess(tmp_path / "relayer.log", {
        "REDIS_URL": embedded.url, "RELAYER_UPSTREAM_URL": sim.url,
        "RELAYER_SUBSCRIBE": "A005930"}).start()
    try:
        await wait_connected(bus, subscriptions=1)

        async def has_quote() -> bool:
            return await latest_quote(bus, "A005930") is not None

        await eventually(has_quote, what="a quote in the embedded Redis")
        result = await send_command(bus, CommandType.SUBSCRIBE, HYNIX)
        assert result.ok and result.active == 2
    finally:
        relayer.kill()
        await bus.aclose()
        embedded.stop()
