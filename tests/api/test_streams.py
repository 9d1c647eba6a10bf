"""The live stream (api.streams) over real sockets: the app served by Uvicorn in the test's
event loop on a free port, WebSocket clients from the `websockets` library, SSE through httpx.

Quotes are published as the relayer does (tests/support/quotes.py `publish_ticks`); the
relayer's reconnects are written into its health hash as it writes them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import redis
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.auth.tokens import Principal, TokenType, issue
from api.models import Role
from api.server import HeadLimitedHttpToolsProtocol
from api.settings import ApiSettings
from api.streams.frames import FrameWritingWebSocketsProtocol
from api.streams.protocol import CloseCode
from relayer.bus import RelayerHealth
from tests.conftest import RedisServer
from tests.support.api import app_settings, metric
from tests.support.env import free_port, scaled
from tests.support.quotes import NAMES, make_quote, publish_ticks, put

# Fast hub timers: a relayer reconnect or a Redis restart is noticed within a tenth of a second.
FAST = {"stream_relayer_poll_s": 0.05, "stream_market_poll_s": 0.05,
        "stream_redis_ping_s": 0.5, "stream_redis_retry_max_s": 0.2}


class Server:
    def __init__(self, settings: ApiSettings, port: int, server: uvicorn.Server) -> None:
        self.settings = settings
        self.port = port
        self.server = server
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}/api/v1/stream"
        self.user_id = 0  # the last user registered

    async def register(self, email: str) -> str:
        """A new user through the API; an access token of theirs."""
        async with httpx.AsyncClient(base_url=self.http) as client:
            answer = await client.post("/api/v1/auth/register",
                                       json={"email": email, "password": "test-password-0001"})
        assert answer.status_code == 201, answer.text
        self.user_id = int(answer.json()["id"])
        return self.token(self.user_id)

    def token(self, user_id: int, ttl_s: int = 900) -> str:
        principal = Principal(user_id, f"user{user_id}@stocking.test", Role.USER)
        return issue(principal, TokenType.ACCESS, self.settings.signing_key(), ttl_s)


@asynccontextmanager
async def serving(settings: ApiSettings,
                  ws: type[asyncio.Protocol] | str = FrameWritingWebSocketsProtocol,
                  graceful_s: float = 2) -> AsyncIterator[Server]:
    """The app on a free port, with the protocols Gunicorn's workers use (api.server), unless
    `ws` is Uvicorn's plain WebSocket one."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=graceful_s,
                                           http=HeadLimitedHttpToolsProtocol, ws=ws))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(scaled(20)):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
    try:
        yield Server(settings, port, server)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def api(redis_server: RedisServer, database_url: str) -> AsyncIterator[Server]:
    async with serving(app_settings(redis_server.url, database_url, **FAST)) as server:
        yield server


@pytest.fixture
def store(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


async def receive(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(scaled(timeout)):
        message: dict[str, Any] = orjson.loads(await ws.recv())
    return message


async def receive_until(ws: ClientConnection, wanted: Callable[[dict[str, Any]], bool],
                        timeout: float = 5) -> dict[str, Any]:
    """The first message that is `wanted`, skipping pings and others."""
    async with asyncio.timeout(scaled(timeout)):
        while True:
            message = await receive(ws, timeout)
            if wanted(message):
                return message


async def authed(server: Server, token: str) -> ClientConnection:
    ws = await connect(server.ws)
    await ws.send(orjson.dumps({"op": "auth", "token": token}).decode())
    assert (await receive(ws))["type"] == "authenticated"
    return ws


async def close_code(ws: ClientConnection, timeout: float = 5) -> int | None:
    async with asyncio.timeout(scaled(timeout)):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None


def of_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message.get("type") == kind


# --- Authentication ---------------------------------------------------------------------------

async def test_a_bad_token_closes_with_4401(api: Server) -> None:
    async with connect(api.ws, additional_headers={"Authorization": "Bearer nonsense"}) as ws:
        assert await close_code(ws) == CloseCode.UNAUTHORIZED
    async with connect(api.ws) as ws:
        await ws.send('{"op": "auth", "token": "nonsense"}')
        assert await close_code(ws) == CloseCode.UNAUTHORIZED
    async with connect(api.ws) as ws:  # the first message must be auth
        await ws.send('{"op": "ping"}')
        assert await close_code(ws) == CloseCode.UNAUTHORIZED


async def test_no_auth_message_in_time_closes_with_4401(redis_server: RedisServer,
                                                        database_url: str) -> None:
    settings = app_settings(redis_server.url, database_url, stream_auth_timeout_s=0.2)
    async with serving(settings) as server, connect(server.ws) as ws:
        assert await close_code(ws) == CloseCode.UNAUTHORIZED


async def test_auth_by_header_or_first_message(api: Server) -> None:
    token = await api.register("alice@example.com")
    async with connect(api.ws, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        hello = await receive(ws)
        assert hello["type"] == "authenticated" and hello["user_id"] == api.user_id
        await ws.send('{"op": "ping"}')
        assert await receive(ws) == {"type": "pong"}
    ws = await authed(api, token)
    await ws.close()


async def test_an_expired_token_gets_auth_expired_then_4401_after_the_grace(
        redis_server: RedisServer, database_url: str) -> None:
    settings = app_settings(redis_server.url, database_url, stream_auth_grace_s=0.3)
    async with serving(settings) as server:
        token = await server.register("alice@example.com")
        ws = await authed(server, server.token(server.user_id, ttl_s=2))
        assert (await receive_until(ws, of_type("auth_expired")))["grace_s"] == 0.3
        assert await close_code(ws) == CloseCode.UNAUTHORIZED
        # A new token within the grace keeps the connection.
        ws = await authed(server, server.token(server.user_id, ttl_s=2))
        await receive_until(ws, of_type("auth_expired"))
        await ws.send(orjson.dumps({"op": "auth", "token": token}).decode())
        assert (await receive_until(ws, of_type("authenticated")))["user_id"] == server.user_id
        await asyncio.sleep(0.5)  # past the grace: still open
        await ws.send('{"op": "ping"}')
        assert (await receive_until(ws, of_type("pong"))) == {"type": "pong"}
        await ws.close()


# --- Quotes -----------------------------------------------------------------------------------

async def test_snapshot_then_updates_as_the_relayer_publishes(api: Server,
                                                              store: redis.Redis) -> None:
    put(store, make_quote("A005930", price=71200))
    token = await api.register("alice@example.com")
    ws = await authed(api, token)
    await ws.send('{"op": "subscribe", "channel": "quotes", "codes": ["005930", "A000660"]}')
    assert (await receive(ws))["type"] == "subscribed"
    first, second = await receive(ws), await receive(ws)
    assert first["type"] == "snapshot" and first["data"]["code"] == "A005930"
    assert first["data"]["price"] == 71200
    # The REST quote's fields: limits, age, session, stale.
    for name in ("upper_limit", "lower_limit", "age_s", "market_session", "stale", "name"):
        assert name in first["data"]
    assert second == {"channel": "quotes", "type": "snapshot", "code": "A000660", "data": None}

    publish_ticks(store, make_quote("A005930", price=71300, seq=124))
    update = await receive_until(ws, of_type("update"))
    assert update["data"]["code"] == "A005930" and update["data"]["price"] == 71300
    assert update["data"]["stale"] is False
    publish_ticks(store, make_quote("A000660", price=180000, base=179000, seq=125))
    update = await receive_until(ws, of_type("update"))
    assert update["data"]["code"] == "A000660" and update["data"]["price"] == 180000

    await ws.send('{"op": "unsubscribe", "channel": "quotes", "codes": ["A005930"]}')
    assert await receive_until(ws, of_type("unsubscribed")) == {
        "type": "unsubscribed", "channel": "quotes", "codes": ["A005930"]}
    publish_ticks(store, make_quote("A005930", price=71400, seq=126),
                  make_quote("A000660", price=180100, base=179000, seq=127))
    update = await receive_until(ws, of_type("update"))
    assert update["data"]["code"] == "A000660"  # A005930's tick is not sent any more
    await ws.close()


async def test_one_redis_channel_per_code_per_worker(api: Server, store: redis.Redis) -> None:
    token = await api.register("alice@example.com")
    clients = [await authed(api, token) for _ in range(3)]
    for ws in clients:
        await ws.send('{"op": "subscribe", "channel": "quotes", "codes": ["A005930"]}')
        await receive_until(ws, of_type("snapshot"))
    assert store.pubsub_numsub(NAMES.tick_channel("A005930")) == [
        (NAMES.tick_channel("A005930").encode(), 1)]
    for ws in clients:
        await ws.close()
    async with asyncio.timeout(scaled(5)):  # the last watcher gone: unsubscribed
        while store.pubsub_numsub(NAMES.tick_channel("A005930"))[0][1] != 0:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # Redis tells no one: polled


@pytest.mark.parametrize("ws_protocol", ["direct", "websockets-sansio"])
async def test_every_client_gets_every_update_in_order_written_directly_or_sent(
        redis_server: RedisServer, database_url: str, store: redis.Redis,
        ws_protocol: str) -> None:
    """With direct writes (Gunicorn's protocol), a tick's frame is written to every client by
    the hub: one latency sample per tick. With Uvicorn's plain protocol, each client's sender
    sends it: one per message. Either way every client gets every update."""
    protocol_class = (FrameWritingWebSocketsProtocol if ws_protocol == "direct"
                      else ws_protocol)
    settings = app_settings(redis_server.url, database_url, **FAST)
    async with serving(settings, protocol_class) as server:
        token = await server.register("alice@example.com")
        clients = [await authed(server, token) for _ in range(3)]
        for ws in clients:
            await ws.send('{"op": "subscribe", "channel": "quotes", "codes": ["A005930"]}')
            await receive_until(ws, of_type("snapshot"))
        before = await httpx_metrics(server)
        prices = list(range(71_300, 71_305))
        for seq, price in enumerate(prices, start=200):
            # One at a time: a sender behind would coalesce a burst to its last update.
            publish_ticks(store, make_quote("A005930", price=price, seq=seq))
            for ws in clients:
                assert (await receive_until(ws, of_type("update")))["data"]["price"] == price
        after = await httpx_metrics(server)
        sent = 'stocking_stream_messages_total{channel="quotes"}'
        assert metric(after, sent) - metric(before, sent) == len(prices) * len(clients)
        samples = "stocking_stream_fanout_latency_seconds_count"
        per_tick = 1 if ws_protocol == "direct" else len(clients)
        assert metric(after, samples) - metric(before, samples) == len(prices) * per_tick
        for ws in clients:
            await ws.close()


async def test_a_client_subscribing_while_ticks_flow_never_sees_an_update_before_its_snapshot(
        api: Server, store: redis.Redis) -> None:
    """A tick may be written directly to a client only once its snapshot has gone out, and
    never one older than the snapshot."""
    token = await api.register("alice@example.com")
    publish_ticks(store, make_quote("A005930", price=70_000, seq=1))
    running = True

    async def ticks() -> None:
        price = 70_000
        while running:
            price += 1
            publish_ticks(store, make_quote("A005930", price=price, seq=price))
            await asyncio.sleep(0.002)

    publisher = asyncio.create_task(ticks())
    try:
        for _ in range(10):
            ws = await authed(api, token)
            await ws.send('{"op": "subscribe", "channel": "quotes", "codes": ["A005930"]}')
            assert (await receive(ws))["type"] == "subscribed"
            snapshot = await receive(ws)
            assert snapshot["type"] == "snapshot"
            last = snapshot["data"]["price"]
            for _ in range(5):
                update = await receive_until(ws, of_type("update"))
                assert update["data"]["price"] > last
                last = update["data"]["price"]
            await ws.close()
    finally:
        running = False
        await publisher


async def test_a_burst_of_ticks_ends_at_the_latest_and_never_goes_back(
        api: Server, store: redis.Redis) -> None:
    """Ticks that reach the hub together are caught up on, not replayed: each code's latest is
    fanned out, the older skipped (counted); a client sees prices only move forward, and the
    last it sees is the last published."""
    ws = await authed(api, await api.register("alice@example.com"))
    await ws.send('{"op": "subscribe", "channel": "quotes", "codes": ["A005930", "A000660"]}')
    for _ in range(2):
        await receive_until(ws, of_type("snapshot"))
    before = await httpx_metrics(api)
    burst = [make_quote(code, price=70_000 + n, base=70_000, seq=1000 + n)
             for n in range(1, 201) for code in ("A005930", "A000660")]
    publish_ticks(store, *burst)  # one script: 400 PUBLISHes back to back
    last = {"A005930": 0, "A000660": 0}
    seen = 0
    while min(last.values()) < 70_200:
        update = (await receive_until(ws, of_type("update")))["data"]
        assert update["price"] > last[update["code"]]
        last[update["code"]] = update["price"]
        seen += 1
    after = await httpx_metrics(api)
    superseded = metric(after, "stocking_stream_ticks_superseded_total") - metric(
        before, "stocking_stream_ticks_superseded_total")
    assert seen + superseded <= len(burst)
    await ws.close()


async def test_a_burst_of_subscriptions_queues_for_snapshots_instead_of_failing(
        redis_server: RedisServer, database_url: str, store: redis.Redis) -> None:
    """30 clients subscribe at once on a worker whose Redis pool has 12 connections: the hub
    reads at most STREAM_SNAPSHOT_CONCURRENCY (8) snapshots at once, so every client gets its
    snapshots (unbounded, the burst took every connection: "Too many connections", and
    clients got `redis_unavailable`)."""
    settings = app_settings(redis_server.url, database_url, api_redis_max_connections=12,
                            **FAST)
    codes = [f"A{n:06d}" for n in range(1, 6)]
    for code in codes:
        put(store, make_quote(code, price=10_000, base=10_000))
    async with serving(settings) as server:
        token = await server.register("alice@example.com")
        clients = [await authed(server, token) for _ in range(30)]
        subscribe = orjson.dumps({"op": "subscribe", "channel": "quotes", "codes": codes})
        await asyncio.gather(*(ws.send(subscribe.decode()) for ws in clients))

        async def snapshots_of(ws: ClientConnection) -> list[str]:
            got: list[str] = []
            while len(got) < len(codes):
                message = await receive_until(ws, lambda m: m.get("type") != "subscribed")
                assert message["type"] == "snapshot", message  # never an error
                got.append(message["data"]["code"])
            return got

        assert await asyncio.gather(*(snapshots_of(ws) for ws in clients)) == [codes] * 30
        for ws in clients:
            await ws.close()


async def test_invalid_codes_and_the_cap_are_errors_on_the_socket(
        redis_server: RedisServer, database_url: str) -> None:
    settings = app_settings(redis_server.url, database_url, stream_max_codes=2)
    async with serving(settings) as server:
        ws = await authed(server, await server.register("alice@example.com"))
        await ws.send('{"op": "subscribe", "channel": "quotes", "codes": ["A00066"]}')
        error = await receive(ws)
        assert error["type"] == "error" and error["code"] == "invalid_code"
        await ws.send('{"op": "subscribe", "channel": "quotes", '
                      '"codes": ["A005930", "A000660", "A035420"]}')
        error = await receive(ws)
        assert error["code"] == "too_many_codes" and error["max_codes"] == 2
        for bad in ('nope', '{"op": "dance"}', '{"op": "subscribe", "channel": "news"}'):
            await ws.send(bad)
            assert (await receive(ws))["type"] == "error"
        await ws.send('{"op": "ping"}')  # the connection stays
        assert await receive(ws) == {"type": "pong"}
        await ws.close()


async def test_a_relayer_reconnect_is_a_gap_for_the_codes_watched(
        api: Server, store: redis.Redis) -> None:
    health = RelayerHealth(instance="relayer-1", reconnects=0)
    store.hset(NAMES.relayer_health, mapping=dict(health.to_hash()))  # type: ignore[arg-type]
    put(store, make_quote("A005930"))
    ws = await authed(api, await api.register("alice@example.com"))
    await ws.send('{"op": "subscribe", "channel": "quotes", "codes": ["A005930"]}')
    await receive_until(ws, of_type("snapshot"))
    await asyncio.sleep(0.2)  # the hub has read the health hash as it was (polls every 0.05 s)
    store.hset(NAMES.relayer_health, "reconnects", "1")
    assert await receive_until(ws, of_type("gap")) == {
        "channel": "quotes", "type": "gap", "codes": ["A005930"]}
    assert (await receive_until(ws, of_type("snapshot")))["data"]["code"] == "A005930"
    await ws.close()


async def test_a_slow_client_is_closed_and_others_are_unaffected(
        redis_server: RedisServer, database_url: str, store: redis.Redis) -> None:
    settings = app_settings(redis_server.url, database_url, stream_send_timeout_s=0.5)
    codes = [f"A{n:06d}" for n in range(1, 51)]
    async with serving(settings) as server:
        token = await server.register("alice@example.com")
        # The slow one never reads (a raw socket with a small receive buffer): the server's
        # sends block once the socket buffers are full.
        loop = asyncio.get_running_loop()
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.setblocking(False)
        await loop.sock_connect(slow, ("127.0.0.1", server.port))
        await loop.sock_sendall(slow, (
            b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer " + token.encode()
            + b"\r\n\r\n"))
        assert (await loop.sock_recv(slow, 4096)).startswith(b"HTTP/1.1 101")
        await loop.sock_sendall(slow, client_frame(orjson.dumps(
            {"op": "subscribe", "channel": "quotes", "codes": codes})))
        fast = await authed(server, token)
        await fast.send('{"op": "subscribe", "channel": "quotes", "codes": ["A000001"]}')
        await receive_until(fast, of_type("snapshot"))
        closed, price = 0.0, 1000
        # Several rounds of 50 updates between two looks at the metrics: the slow client's
        # socket buffers (the server's send buffer grows to megabytes) fill in fewer turns of
        # this loop, each of which costs a metrics scrape (once too slow for 30 s under CI's
        # load).
        async with asyncio.timeout(scaled(60)):
            while closed == 0.0:
                for _ in range(5):
                    price += 1
                    publish_ticks(store, *(make_quote(code, price=price, base=1000)
                                           for code in codes))
                update = await receive_until(fast, of_type("update"))
                assert update["data"]["code"] == "A000001"
                closed = metric(await httpx_metrics(server),
                                'stocking_stream_closed_total{reason="slow_client"}')
        assert closed == 1.0
        # Still served: the fast client gets the latest price.
        publish_ticks(store, make_quote("A000001", price=price + 1, base=1000))
        assert (await receive_until(
            fast, lambda m: m.get("type") == "update" and m["data"]["price"] == price + 1))
        await fast.close()
        slow.close()


def client_frame(payload: bytes) -> bytes:
    """A masked text frame, as a client sends it (RFC 6455 5.2); the zero mask keeps it plain."""
    assert 126 <= len(payload) < 65536
    return b"\x81\xfe" + len(payload).to_bytes(2, "big") + b"\x00\x00\x00\x00" + payload


async def httpx_metrics(server: Server) -> str:
    async with httpx.AsyncClient(base_url=server.http) as client:
        return (await client.get("/metrics")).text


@pytest.mark.private_redis
async def test_a_redis_restart_is_a_gap_then_updates_flow_again(
        real_redis_server: RedisServer, database_url: str) -> None:
    settings = app_settings(real_redis_server.url, database_url, **FAST)
    async with serving(settings) as server:
        store = real_redis_server.client()
        put(store, make_quote("A005930"))
        ws = await authed(server, await server.register("alice@example.com"))
        await ws.send('{"op": "subscribe", "channel": "quotes", "codes": ["A005930"]}')
        await receive_until(ws, of_type("snapshot"))
        real_redis_server.restart()
        store = real_redis_server.client()
        assert (await receive_until(ws, of_type("gap"), timeout=15))["codes"] == ["A005930"]
        # The snapshot after the gap: the restarted Redis is empty, so no quote yet.
        await receive_until(ws, of_type("snapshot"))
        publish_ticks(store, make_quote("A005930", price=71500))
        assert (await receive_until(ws, of_type("update")))["data"]["price"] == 71500
        await ws.close()


# --- Market -----------------------------------------------------------------------------------

async def test_the_market_channel_tells_the_session(api: Server) -> None:
    ws = await authed(api, await api.register("alice@example.com"))
    await ws.send('{"op": "subscribe", "channel": "market"}')
    await receive_until(ws, of_type("subscribed"))
    session = await receive(ws)
    assert session["channel"] == "market" and session["type"] == "session"
    assert set(session["data"]) == {"session", "trading_day", "next_open", "next_close"}
    await ws.close()


# --- SSE --------------------------------------------------------------------------------------

async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in event:
                event["data"] = orjson.loads(event["data"])
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            event[name] = value


async def test_sse_quotes_snapshot_then_updates(api: Server, store: redis.Redis) -> None:
    put(store, make_quote("A005930", price=71200))
    token = await api.register("alice@example.com")
    async with httpx.AsyncClient(base_url=api.http, timeout=scaled(10)) as client:
        refused = await client.get("/api/v1/stream/sse?quotes=A005930")
        assert refused.status_code == 401
        bad = await client.get("/api/v1/stream/sse?quotes=A00066",
                               headers={"Authorization": f"Bearer {token}"})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_code"
        async with client.stream("GET", "/api/v1/stream/sse?quotes=A005930",
                                 headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
            async with asyncio.timeout(scaled(5)):
                event = await anext(events)
                while event["event"] != "snapshot":
                    event = await anext(events)
                assert event["data"]["data"]["price"] == 71200
                publish_ticks(store, make_quote("A005930", price=71300))
                while event["event"] != "update":
                    event = await anext(events)
                assert event["data"]["data"]["price"] == 71300


# --- Orders -----------------------------------------------------------------------------------

async def place_market_buy(server: Server, token: str, quantity: int = 1) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http) as client:
        answer = await client.post("/api/v1/orders", headers={"Authorization": f"Bearer {token}"},
                                   json={"code": "A005930", "side": "BUY", "type": "MARKET",
                                         "quantity": quantity})
    assert answer.status_code == 201, answer.text
    order: dict[str, Any] = answer.json()
    return order


async def orders_events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [await receive_until(ws, lambda m: m.get("channel") == "orders"
                                and "offset" in m) for _ in range(count)]


async def test_an_order_shows_up_on_the_orders_channel_and_resumes_with_since(
        api: Server, store: redis.Redis) -> None:
    put(store, make_quote("A005930"))
    alice = await api.register("alice@example.com")
    bob = await api.register("bob@example.com")
    ws = await authed(api, alice)
    await ws.send('{"op": "subscribe", "channel": "orders"}')
    await receive_until(ws, of_type("subscribed"))
    spy = await authed(api, bob)
    await spy.send('{"op": "subscribe", "channel": "orders"}')
    await receive_until(spy, of_type("subscribed"))

    order = await place_market_buy(api, alice)
    async with asyncio.timeout(1 * scaled(1)):  # within a second of the answer
        live = await orders_events(ws, 3)
    assert [(e["type"], e["event"]) for e in live] == [
        ("order", "created"), ("fill", "executed"), ("order", "filled")]
    assert all(e["data"].get("id", order["id"]) for e in live)
    offsets = [int(e["offset"]) for e in live]
    assert offsets == sorted(set(offsets))
    await ws.close()

    # Away: three more orders. Back with `since`: each missed event once, then live.
    for _ in range(3):
        await place_market_buy(api, alice)
    ws = await authed(api, alice)
    await ws.send(orjson.dumps({"op": "subscribe", "channel": "orders",
                                "since": live[-1]["offset"]}).decode())
    replayed = await orders_events(ws, 9)
    await place_market_buy(api, alice)
    after = await orders_events(ws, 3)
    offsets = [int(e["offset"]) for e in replayed + after]
    assert offsets == sorted(set(offsets)) and offsets[0] > int(live[-1]["offset"])
    await ws.send('{"op": "ping"}')  # nothing more than those: the next message is the pong
    assert await receive_until(ws, lambda m: m.get("channel") == "orders"
                               or m.get("type") == "pong") == {"type": "pong"}

    # Bob saw none of it.
    await spy.send('{"op": "ping"}')
    assert await receive_until(spy, lambda m: m.get("channel") == "orders"
                               or m.get("type") == "pong") == {"type": "pong"}
    # An offset that is not one: an error; one beyond the user's: reset.
    await spy.send('{"op": "subscribe", "channel": "orders", "since": "x"}')
    assert (await receive_until(spy, of_type("error")))["code"] == "invalid_offset"
    await spy.send(orjson.dumps({"op": "subscribe", "channel": "orders",
                                 "since": str(offsets[-1])}).decode())
    assert await receive_until(spy, lambda m: m.get("channel") == "orders"
                               and m["type"] != "subscribed") == {
        "channel": "orders", "type": "reset"}
    await ws.close()
    await spy.close()


async def test_sse_orders_resume_with_last_event_id(api: Server, store: redis.Redis) -> None:
    put(store, make_quote("A005930"))
    token = await api.register("alice@example.com")
    await place_market_buy(api, token)
    headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": "1"}
    async with httpx.AsyncClient(base_url=api.http, timeout=scaled(10)) as client, \
            client.stream("GET", "/api/v1/stream/sse?orders=1", headers=headers) as response:
        events = sse_events(response)
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(scaled(5)):
            while len(seen) < 3:
                event = await anext(events)
                if "id" in event and event["event"] != "cash":  # the opening credit
                    seen.append(event)
        assert [e["event"] for e in seen] == ["order", "fill", "order"]
        assert [e["id"] for e in seen] == [e["data"]["offset"] for e in seen]


async def test_a_stopping_server_ends_its_sse_streams_at_once(
        redis_server: RedisServer, database_url: str) -> None:
    """Gunicorn's SIGTERM: Uvicorn waits for open connections, up to the graceful timeout (60 s
    here). An SSE stream ends as soon as the server begins to stop (EventSource reconnects
    elsewhere with its Last-Event-ID), so the worker is not held until it is killed."""
    settings = app_settings(redis_server.url, database_url, **FAST)
    async with serving(settings, graceful_s=60) as server:
        token = await server.register("alice@example.com")
        async with httpx.AsyncClient(base_url=server.http, timeout=None) as client, \
                client.stream("GET", "/api/v1/stream/sse?market=1",
                              headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            async with asyncio.timeout(scaled(5)):
                while "event: session" not in await anext(lines):
                    pass
            server.server.should_exit = True
            async with asyncio.timeout(scaled(10)):  # far less than the 60 s grace
                rest = [line async for line in lines]
        assert all(not line.startswith("event: error") for line in rest)
