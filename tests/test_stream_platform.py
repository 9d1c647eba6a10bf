"""The live stream (WebSocket `GET /api/v1/stream`, SSE `GET /api/v1/stream/sse`) as operators
run it: real Gunicorn with two Uvicorn workers (gunicorn.conf.py, WEB_CONCURRENCY=2), the real
relayer with the simulator as its upstream, a private Redis and a fresh database, over real
sockets (issue 14). tests/api/test_streams.py holds the protocol's details against one
in-process server; this module holds what only the platform shows: ticks that travel
simulator -> relayer -> Redis -> each worker's hub -> client, an order placed on one worker
reaching a stream on the other, resumes landing on either worker, a relayer's upstream
reconnect seen by both hubs.

Which worker serves a connection is the kernel's choice. Where it matters, a test makes
connections until both workers hold one, and tells them apart by the worker's own metrics file
(`stocking_stream_messages_total{channel="orders"}` in PROMETHEUS_MULTIPROC_DIR): a connection
that has just replayed N orders events moved exactly one worker's count by N.

Ticks come from the simulator through the relayer, except on one code the relayer does not
subscribe (QUIET), where a test writes one as the relayer writes it, to know its price.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from api.auth.tokens import Principal, TokenType, issue
from api.models import Role
from api.streams.protocol import CloseCode
from relayer.bus import STREAM_QUOTE_FIELD, decode_quote, stream_id_key
from tests.api.test_streams import (
    close_code,
    of_type,
    receive_until,
    sse_events,
)
from tests.conftest import RedisServer, private_redis_server
from tests.support.api import TEST_JWT_KEY
from tests.support.databases import (
    fresh_mysql_database,
    fresh_sqlite_database,
    mysql_unreachable_reason,
)
from tests.support.env import free_port, scaled
from tests.support.platform import (
    alive,
    counter_per_worker,
    environment,
    port_free,
    start,
    start_gunicorn,
    stop,
    wait_for,
    wait_for_workers,
)
from tests.support.quotes import NAMES, make_quote, publish_ticks
from tests.support.relayer_process import TEST_ENV as RELAYER_TEST_ENV

# One platform (Redis, database, simulator, relayer, Gunicorn) for the module, on one test
# worker: with `--dist loadgroup` the tests of a module without a group may be spread over
# several test workers, each of which would start a platform of its own. Sharing it is safe:
# each test has users of its own (the orders channel is per user), reads only the quote
# messages of the connections it opens, and leaves the platform as it found it (the gap test
# restarts the simulator it kills). Starting it costs about 4 s, more than any test of it.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("stream_platform")]

CODES = ["A000660", "A005930"]  # the relayer's (RELAYER_SUBSCRIBE), printed by the simulator
QUIET = "A035720"  # no upstream subscribes it: its one tick is written by the test
MARKET_BUY = [("order", "created"), ("fill", "executed"), ("order", "filled")]
# Connections a test opens, at most, to have one on each Gunicorn worker.
MAX_CONNECTIONS = 40


@dataclass
class StreamPlatform:
    http: str
    ws: str
    redis: RedisServer
    metrics_dir: Path
    worker_pids: list[int]
    sim_env: dict[str, str]
    sim_log: Path
    sim: subprocess.Popen[bytes]

    async def sign_up(self, email: str) -> str:
        """A new user, registered and signed in through the API: its access token."""
        account = {"email": email, "password": "stream-password-0001"}
        await call(self, "POST", "/api/v1/auth/register", body=account)
        return str((await call(self, "POST", "/api/v1/auth/login", body=account))["access_token"])

    def orders_sent(self) -> dict[str, float]:
        """pid -> orders events each Gunicorn worker has sent to its clients."""
        return counter_per_worker(self.metrics_dir, "stocking_stream_messages_total",
                                  channel="orders")

    async def worker_that_sent(self, before: dict[str, float], count: int) -> int:
        """The one worker that has sent `count` orders events since `before` (a worker counts
        a message just after sending it: polled)."""
        deadline = time.monotonic() + scaled(5)
        while True:
            after = self.orders_sent()
            moved = {pid: n - before.get(pid, 0.0) for pid, n in after.items()
                     if n != before.get(pid, 0.0)}
            if sum(moved.values()) >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert len(moved) == 1 and sum(moved.values()) == count, moved
        pid = int(next(iter(moved)))
        assert pid in self.worker_pids, (pid, self.worker_pids)
        return pid

    def restart_simulator(self) -> None:
        """The relayer's upstream dies (SIGKILL: no goodbye) and comes back on its port."""
        self.sim.kill()
        self.sim.wait()
        self.sim = start([sys.executable, "-m", "relayer.sim"], self.sim_env, self.sim_log)

    def relayer_reconnects(self) -> int:
        with contextlib.closing(self.redis.client()) as store:
            return int(store.hget(NAMES.relayer_health, "reconnects") or -1)


@contextlib.contextmanager
def platform_database(folder: Path) -> Iterator[str]:
    """MariaDB when reachable (the test of record), else SQLite, as the pytest header says."""
    if mysql_unreachable_reason() is None:
        with fresh_mysql_database() as url:
            yield url
    else:
        with fresh_sqlite_database(folder) as url:
            yield url


def stop_all(processes: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """What a failed test left running: each process group killed."""
    for _, process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamPlatform]:
    folder = tmp_path_factory.mktemp("stream-platform")
    with private_redis_server() as redis_server, platform_database(folder) as database_url:
        port, sim_port = free_port(), free_port()
        shared = environment(REDIS_URL=redis_server.url, DATABASE_URL=database_url)
        sim_env = {**shared, "SIM_PORT": str(sim_port), "SIM_TICKS_PER_SEC": "40",
                   "SIM_SEED": "7"}
        logs = {name: folder / f"{name}.log" for name in ("sim", "relayer", "gunicorn")}
        metrics_dir = folder / "metrics"
        platform = StreamPlatform(
            f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/api/v1/stream", redis_server,
            metrics_dir, [], sim_env, logs["sim"],
            start([sys.executable, "-m", "relayer.sim"], sim_env, logs["sim"]))
        processes = [("simulator", platform.sim)]  # each one listed as soon as it runs
        try:
            relayer = start([sys.executable, "-m", "relayer"], {
                **shared, **RELAYER_TEST_ENV, "RELAYER_SUBSCRIBE": ",".join(CODES),
                "RELAYER_UPSTREAM_URL": f"ws://127.0.0.1:{sim_port}/ws"}, logs["relayer"])
            processes.append(("relayer", relayer))
            gunicorn = start_gunicorn({
                **shared, "PORT": str(port), "WEB_CONCURRENCY": "2",
                "JWT_SECRET_KEY": TEST_JWT_KEY, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                "PASSWORD_HASH_PROFILE": "tests-only",
                # A relayer reconnect is noticed within a tenth of a second, not a second.
                "STREAM_RELAYER_POLL_S": "0.1"}, logs["gunicorn"])
            processes.append(("gunicorn", gunicorn))
            platform.worker_pids = wait_for_workers(gunicorn, logs["gunicorn"], 2)
            with contextlib.closing(redis_server.client()) as store:
                wait_for(lambda: all(store.exists(NAMES.quote(code)) for code in CODES),
                         "quotes from the relayer", 30, relayer, logs["relayer"])
            yield platform

            # The stop, as operators stop it: the API first, then the relayer, then its
            # upstream; each exits 0, promptly, and leaves nothing behind.
            took = stop(gunicorn, signal.SIGTERM, timeout=15)
            log = logs["gunicorn"].read_text()
            assert gunicorn.returncode == 0, log
            # Nothing left behind by the workers' shutdown (api.cancellation: a cancellation
            # redis-py swallowed once held the hub's relayer watch for SHUTDOWN_WAIT_S).
            assert not re.findall(r"shutdown: .* did not end within .*", log), log
            assert took < scaled(5), f"SIGTERM took {took:.1f}s"
            assert port_free(port)
            assert not [pid for pid in platform.worker_pids if alive(pid)]
            stop(relayer, signal.SIGTERM, timeout=10)
            stop(platform.sim, signal.SIGTERM, timeout=10)
            assert (relayer.returncode, platform.sim.returncode) == (0, 0), (
                logs["relayer"].read_text(), logs["sim"].read_text())
            assert port_free(sim_port)
        finally:
            stop_all([*processes, ("simulator", platform.sim)])  # the one restarted, too


# --- Helpers ----------------------------------------------------------------------------------

def not_ping(message: dict[str, Any]) -> bool:
    return message.get("type") != "ping"


async def authed(platform: StreamPlatform, token: str) -> ClientConnection:
    """A connection signed in by its Authorization header (tests/api/test_streams.py signs in
    by the first message too)."""
    ws = await connect(platform.ws, additional_headers={"Authorization": f"Bearer {token}"})
    assert (await receive_until(ws, not_ping))["type"] == "authenticated"
    return ws


async def until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send a ping; what came before its pong (heartbeats left out)."""
    await ws.send('{"op": "ping"}')
    before: list[dict[str, Any]] = []
    while (message := await receive_until(ws, not_ping)) != {"type": "pong"}:
        before.append(message)
    return before


async def subscribe_orders(ws: ClientConnection, since: str | None = None) -> None:
    op: dict[str, Any] = {"op": "subscribe", "channel": "orders"}
    if since is not None:
        op["since"] = since
    await ws.send(orjson.dumps(op).decode())
    # Live (no `since`): every event committed after `subscribed` arrives (the server reads
    # the starting offset before it answers).
    assert await receive_until(ws, not_ping) == {"type": "subscribed", "channel": "orders"}


async def orders_stream(platform: StreamPlatform, token: str, since: str | None,
                        count: int) -> tuple[ClientConnection, list[dict[str, Any]], int]:
    """A new connection subscribed to the orders channel from `since`, the `count` events it
    replayed, and the pid of the worker that serves it."""
    before = platform.orders_sent()
    ws = await authed(platform, token)
    await subscribe_orders(ws, since)
    replayed = await orders_events(ws, count)
    return ws, replayed, await platform.worker_that_sent(before, count)


async def on_both_workers(platform: StreamPlatform, token: str,
                          events: int) -> list[ClientConnection]:
    """Connections of one user, each subscribed to its orders from the start (`events` so
    far, replayed), until each Gunicorn worker serves at least one."""
    connections: list[ClientConnection] = []
    workers: set[int] = set()
    while len(workers) < 2:
        assert len(connections) < MAX_CONNECTIONS, f"every connection on worker {workers}"
        ws, _, pid = await orders_stream(platform, token, "0", events)
        connections.append(ws)
        workers.add(pid)
    return connections


async def orders_events(ws: ClientConnection, count: int,
                        timeout: float = 5) -> list[dict[str, Any]]:
    """The next `count` messages of the orders channel (a `reset` too), within `timeout`;
    what did come, when they do not."""
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(scaled(timeout)):
            while len(found) < count:
                message = orjson.loads(await ws.recv())
                if message.get("channel") == "orders":
                    found.append(message)
    except TimeoutError:
        raise AssertionError(f"{len(found)} of {count} orders events within {timeout}s: "
                             f"{kinds(found)}, offsets {offsets(found)}") from None
    return found


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(event["type"], event.get("event", "")) for event in events]


def assert_market_buy(events: list[dict[str, Any]], order: dict[str, Any]) -> None:
    """The three events of one market buy, in order, each about `order`."""
    assert kinds(events) == MARKET_BUY, events
    created, fill, filled = (event["data"] for event in events)
    assert created["id"] == filled["id"] == fill["order_id"] == order["id"]
    assert fill["quantity"] == order["quantity"]
    assert [fill["id"]] == [f["id"] for f in filled["fills"]]
    assert filled["status"] == "FILLED"


def offsets(events: list[dict[str, Any]]) -> list[int]:
    return [int(event.get("offset", -1)) for event in events]


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


async def call(platform: StreamPlatform, method: str, path: str, token: str | None = None,
               body: dict[str, Any] | None = None) -> Any:
    """One REST request (a new connection: either worker may answer it); its JSON answer."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=platform.http, timeout=scaled(10)) as client:
        answer = await client.request(method, path, json=body, headers=headers)
    assert answer.is_success, answer.text
    return answer.json()


async def market_buy(platform: StreamPlatform, token: str) -> dict[str, Any]:
    order: dict[str, Any] = await call(platform, "POST", "/api/v1/orders", token, {
        "code": "A005930", "side": "BUY", "type": "MARKET", "quantity": 1})
    return order


@contextlib.asynccontextmanager
async def sse(platform: StreamPlatform, token: str, query: str,
              headers: dict[str, str] | None = None
              ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """The SSE stream `GET /api/v1/stream/sse?<query>`: its events."""
    async with httpx.AsyncClient(base_url=platform.http, timeout=scaled(30)) as client, \
            client.stream("GET", f"/api/v1/stream/sse?{query}", headers={
                "Authorization": f"Bearer {token}", **(headers or {})}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield sse_events(response)


async def sse_orders(events: AsyncIterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The next `count` orders events (those with an id) of an SSE stream."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(scaled(10)):
        while len(found) < count:
            event = await anext(events)
            if "id" in event:
                assert event["id"] == event["data"]["offset"]
                found.append(event)
    return found


# --- 1. Quotes --------------------------------------------------------------------------------

async def test_quotes_a_snapshot_per_code_then_updates_as_ticks_arrive(
        platform: StreamPlatform) -> None:
    token = await platform.sign_up("quotes@example.com")
    ws = await authed(platform, token)
    await ws.send(orjson.dumps({"op": "subscribe", "channel": "quotes",
                                "codes": ["000660", "A005930", QUIET]}).decode())
    assert await receive_until(ws, not_ping) == {
        "type": "subscribed", "channel": "quotes", "codes": [*CODES, QUIET]}
    snapshots = [await receive_until(ws, not_ping) for _ in range(3)]
    assert [s["type"] for s in snapshots] == ["snapshot"] * 3
    assert snapshots[2] == {"channel": "quotes", "type": "snapshot", "code": QUIET, "data": None}
    last: dict[str, tuple[int, int]] = {}
    for code, snapshot in zip(CODES, snapshots, strict=False):
        data = snapshot["data"]
        assert data["code"] == code and data["price"] > 0 and data["stale"] is False
        last[code] = stream_id_key(data["tick_id"])

    # Updates from the simulator's prints, through the relayer: each one a print of the tick
    # stream (the same price and sequence), each newer than the one before; the first may be
    # the snapshot's own print again, never an older one.
    store = platform.redis.client()
    updates: dict[str, int] = dict.fromkeys(CODES, 0)
    async with asyncio.timeout(scaled(15)):
        while min(updates.values()) < 3:
            update = await receive_until(ws, not_ping)
            assert update["type"] == "update", update
            data = update["data"]
            assert data["code"] in CODES
            key = stream_id_key(data["tick_id"])
            assert key > last[data["code"]] or (
                key == last[data["code"]] and not updates[data["code"]]), (update, last)
            last[data["code"]] = key
            entries: Any = store.xrange(NAMES.tick_stream, data["tick_id"], data["tick_id"])
            ((_, fields),) = entries
            printed = decode_quote(fields[STREAM_QUOTE_FIELD.encode()])
            assert (printed["code"], printed["price"], printed["seq"]) == (
                data["code"], data["price"], data["seq"])
            updates[data["code"]] += 1

    # A print of the quiet code, written as the relayer writes it: its update is the quote as
    # the REST API answers it.
    (tick_id,) = publish_ticks(store, make_quote(QUIET, price=51_000, base=50_000, seq=1))
    store.close()
    update = await receive_until(ws, lambda m: m.get("type") == "update"
                                 and m["data"]["code"] == QUIET)
    assert (update["data"]["price"], update["data"]["tick_id"]) == (51_000, tick_id)
    answer = await call(platform, "GET", f"/api/v1/trading/realtime/stock/{QUIET}", token)
    assert {**update["data"], "age_s": None} == {**answer, "age_s": None}
    await ws.close()


# --- 2. Orders: live ---------------------------------------------------------------------------

async def test_an_order_placed_over_rest_is_on_the_orders_channel_within_a_second(
        platform: StreamPlatform, record_property: Callable[[str, object], None]) -> None:
    """Measured from the REST answer to the last event; asserted only against a generous
    deadline (a loaded machine is slow, not wrong). The order's worker and the stream's worker
    may differ: the event reaches the stream through Redis."""
    token = await platform.sign_up("orders@example.com")
    ws = await authed(platform, token)
    await subscribe_orders(ws)
    took: list[float] = []
    for _ in range(3):
        order = await market_buy(platform, token)
        answered = time.monotonic()
        events = await orders_events(ws, 3)
        took.append(time.monotonic() - answered)
        assert_market_buy(events, order)
        assert events[2]["data"] == await call(platform, "GET", f"/api/v1/orders/{order['id']}",
                                               token)

    # A limit order that rests: created, and nothing else until it is cancelled.
    quote = await call(platform, "GET", "/api/v1/trading/realtime/stock/A005930", token)
    resting = await call(platform, "POST", "/api/v1/orders", token, {
        "code": "A005930", "side": "BUY", "type": "LIMIT", "quantity": 1,
        "price": quote["lower_limit"], "time_in_force": "GTC"})
    answered = time.monotonic()
    (created,) = await orders_events(ws, 1)
    took.append(time.monotonic() - answered)
    assert kinds([created]) == [("order", "created")]
    assert created["data"] == resting
    await call(platform, "DELETE", f"/api/v1/orders/{resting['id']}", token)
    answered = time.monotonic()
    (cancelled,) = await orders_events(ws, 1)
    took.append(time.monotonic() - answered)
    assert kinds([cancelled]) == [("order", "cancelled")]
    assert (cancelled["data"]["id"], cancelled["data"]["reason"]) == (resting["id"], "user")
    assert await until_pong(ws) == []
    await ws.close()
    record_property("orders_event_latency_s", [round(t, 3) for t in took])
    print(f"REST answer -> last event: {', '.join(f'{t * 1000:.0f} ms' for t in took)}")


# --- 3. Orders: resume ------------------------------------------------------------------------

async def test_a_client_resuming_with_since_gets_every_missed_event_once_then_live_ones(
        platform: StreamPlatform) -> None:
    """Away, then back with `since` on a new connection, again and again, until both workers
    have served a resume; at the end the user's whole log, replayed from the start, is what
    the connections received, in order, each event once."""
    token = await platform.sign_up("resume@example.com")
    ws = await authed(platform, token)
    await subscribe_orders(ws)
    order = await market_buy(platform, token)
    received = await orders_events(ws, 3)
    assert_market_buy(received, order)
    workers: set[int] = set()
    resumes = 0
    while resumes < 3 or len(workers) < 2:
        assert resumes < MAX_CONNECTIONS, f"every resume on worker {workers}"
        await ws.close()
        missed = [await market_buy(platform, token) for _ in range(2)]
        deposit = await call(platform, "POST", "/api/v1/account/deposit", token,
                             {"amount": 1_000})
        since = received[-1]["offset"]
        ws, replayed, pid = await orders_stream(platform, token, since, 7)
        workers.add(pid)
        assert_market_buy(replayed[:3], missed[0])
        assert_market_buy(replayed[3:6], missed[1])
        assert kinds(replayed[6:]) == [("cash", "deposit")]
        assert replayed[6]["data"] == deposit["entry"]
        # Then live ones, and nothing more.
        order = await market_buy(platform, token)
        live = await orders_events(ws, 3)
        assert_market_buy(live, order)
        assert await until_pong(ws) == []
        received += replayed + live
        assert strictly_increasing(offsets(received))
        resumes += 1
    await ws.close()

    ws, everything, _ = await orders_stream(platform, token, "0", len(received) + 1)
    assert kinds(everything[:1]) == [("cash", "deposit")]  # the opening credit
    assert everything[1:] == received
    assert await until_pong(ws) == []
    await ws.close()


# --- 4. Orders: only one's own ----------------------------------------------------------------

async def test_another_users_events_never_reach_my_stream(platform: StreamPlatform) -> None:
    alice = await platform.sign_up("alice@example.com")
    bob = await platform.sign_up("bob@example.com")
    bob_streams = await on_both_workers(platform, bob, 1)  # his opening credit, replayed
    alice_ws = await authed(platform, alice)
    await subscribe_orders(alice_ws)
    alice_orders = [await market_buy(platform, alice) for _ in range(2)]
    alice_events = await orders_events(alice_ws, 6)
    assert_market_buy(alice_events[:3], alice_orders[0])
    assert_market_buy(alice_events[3:], alice_orders[1])

    # Bob's next events, on every connection of his, are his order's: Alice's came before
    # them (committed, and notified on her channel), and none of them was sent to him.
    bob_order = await market_buy(platform, bob)
    for ws in bob_streams:
        assert_market_buy(await orders_events(ws, 3), bob_order)
        assert await until_pong(ws) == []
        await ws.close()
    # Nor the other way round.
    alice_order = await market_buy(platform, alice)
    assert_market_buy(await orders_events(alice_ws, 3), alice_order)
    await alice_ws.close()

    # Resuming from one of Alice's offsets replays Bob's events after it, not hers.
    ws, replayed, _ = await orders_stream(platform, bob, alice_events[0]["offset"], 3)
    assert_market_buy(replayed, bob_order)
    assert await until_pong(ws) == []
    await ws.close()
    # So does SSE, from the start.
    async with sse(platform, bob, "orders=1&since=0") as events:
        found = await sse_orders(events, 4)
    assert [(e["event"], e["data"]["event"]) for e in found] == [
        ("cash", "deposit"), *MARKET_BUY]
    assert_market_buy([e["data"] for e in found[1:]], bob_order)


# --- 5. Authentication ------------------------------------------------------------------------

async def test_a_bad_token_closes_with_4401_by_header_and_by_first_message(
        platform: StreamPlatform) -> None:
    token = await platform.sign_up("mallory@example.com")
    me = await call(platform, "GET", "/api/v1/users/me", token)
    principal = Principal(me["id"], me["email"], Role.USER)
    key = TEST_JWT_KEY  # the one Gunicorn's workers sign with (JWT_SECRET_KEY)
    bad = {
        "nonsense": "invalid_token",
        issue(principal, TokenType.ACCESS, "another-signing-key-" + "y" * 40, 900):
            "invalid_token",
        issue(principal, TokenType.REFRESH, key, 900): "invalid_token",
        issue(principal, TokenType.ACCESS, key, -60): "token_expired",
    }
    for _ in range(2):  # each connection lands on either worker
        for wrong, reason in bad.items():
            async with connect(platform.ws, additional_headers={
                    "Authorization": f"Bearer {wrong}"}) as ws:
                assert await close_code(ws) == CloseCode.UNAUTHORIZED
                assert ws.close_reason == reason
            async with connect(platform.ws) as ws:
                await ws.send(orjson.dumps({"op": "auth", "token": wrong}).decode())
                assert await close_code(ws) == CloseCode.UNAUTHORIZED
                assert ws.close_reason == reason
        async with connect(platform.ws) as ws:
            await ws.send('{"op": "ping"}')  # the first message must be auth
            assert await close_code(ws) == CloseCode.UNAUTHORIZED
    # The token that works, both ways, for contrast; and SSE refuses a bad one before the
    # stream starts.
    ws = await authed(platform, token)
    await ws.close()
    async with connect(platform.ws) as ws:
        await ws.send(orjson.dumps({"op": "auth", "token": token}).decode())
        hello = await receive_until(ws, not_ping)
        assert (hello["type"], hello["user_id"]) == ("authenticated", me["id"])
    async with httpx.AsyncClient(base_url=platform.http) as client:
        refused = await client.get("/api/v1/stream/sse?orders=1",
                                   headers={"Authorization": "Bearer nonsense"})
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_token"


# --- 6. SSE: resume with Last-Event-ID --------------------------------------------------------

async def test_sse_resumes_after_last_event_id(platform: StreamPlatform) -> None:
    token = await platform.sign_up("sse@example.com")
    orders = [await market_buy(platform, token) for _ in range(2)]
    async with sse(platform, token, "orders=1&since=0") as events:
        everything = await sse_orders(events, 7)
    assert [e["event"] for e in everything] == ["cash", *["order", "fill", "order"] * 2]
    assert_market_buy([e["data"] for e in everything[1:4]], orders[0])
    assert_market_buy([e["data"] for e in everything[4:]], orders[1])

    for index in (0, 3, 5):  # several connections: each lands on either worker
        async with sse(platform, token, "orders=1",
                       {"Last-Event-ID": everything[index]["id"]}) as events:
            assert await sse_orders(events, 6 - index) == everything[index + 1:]
            if index == 5:  # then live ones, and no repeat
                order = await market_buy(platform, token)
                live = await sse_orders(events, 3)
                assert_market_buy([e["data"] for e in live], order)


# --- 7. Gaps ----------------------------------------------------------------------------------

async def test_an_upstream_reconnect_is_a_gap_on_every_worker(platform: StreamPlatform) -> None:
    """The relayer's upstream (the simulator) dies and comes back: the relayer reconnects,
    counts it in its health hash, and each worker's hub tells its quotes clients."""
    token = await platform.sign_up("gap@example.com")
    watchers = await on_both_workers(platform, token, 1)
    for ws in watchers:
        await ws.send(orjson.dumps({"op": "subscribe", "channel": "quotes",
                                    "codes": CODES}).decode())
        await receive_until(ws, of_type("subscribed"))
        await receive_until(ws, of_type("update"))  # prints flow
    bystander, _, _ = await orders_stream(platform, token, "0", 1)  # no quotes: no gap
    reconnects = platform.relayer_reconnects()

    platform.restart_simulator()
    for ws in watchers:
        gap = await receive_until(ws, of_type("gap"), timeout=30)
        assert gap == {"channel": "quotes", "type": "gap", "codes": CODES}
        # A fresh snapshot of each code, then updates again.
        snapshots = [await receive_until(ws, not_ping) for _ in CODES]
        assert [(s["type"], s["data"]["code"]) for s in snapshots] == [
            ("snapshot", code) for code in CODES]
        await receive_until(ws, of_type("update"), timeout=15)
        assert "gap" not in [m["type"] for m in await until_pong(ws)]
    assert platform.relayer_reconnects() == reconnects + 1
    assert await until_pong(bystander) == []
    for ws in [*watchers, bystander]:
        await ws.close()
