"""The simulator on the wire: a real server on port 0, a real websockets client, our STOMP codec."""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.typing import Subprotocol

from relayer.krx import is_on_grid, price_limits
from relayer.sim import SimServer
from relayer.sim.__main__ import SimSettings
from relayer.sim.market import reference_price
from relayer.stomp import Frame, FrameParser, encode_frame
from relayer.toss import parse_toss_tick

FACTOR = float(os.environ.get("STOCKING_TEST_TIMEOUT_FACTOR", "1"))
TOPIC = "/topic/v1/kr/stock/trade/{code}"
# v12 offered last: the server's preference must win, not the order of the offer.
OFFERED = [Subprotocol(p) for p in ("v10.stomp", "v11.stomp", "v12.stomp")]
FRAME_TIMEOUT_S = 3.0
MESSAGE_HEADERS = {"subscription", "message-id", "content-type", "content-length"}


def seconds(value: float) -> float:
    return value * FACTOR


def topic(code: str) -> str:
    return TOPIC.format(code=code)


class StompClient:
    """A test-side STOMP session: frames out through encode_frame, in through FrameParser."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.parser = FrameParser()
        self.pending: deque[Frame] = deque()
        self.frames_per_message: list[int] = []

    async def send(self, *frames: Frame) -> None:
        await self.ws.send(b"".join(encode_frame(frame) for frame in frames).decode())

    async def frame(self) -> Frame:
        async with asyncio.timeout(seconds(FRAME_TIMEOUT_S)):
            while not self.pending:
                frames = self.parser.feed(await self.ws.recv())
                self.frames_per_message.append(len(frames))
                self.pending.extend(frames)
        return self.pending.popleft()

    async def reply(self) -> Frame:
        """The next frame that is not a tick."""
        while (frame := await self.frame()).command == "MESSAGE":
            pass
        return frame

    async def connect(self, heart_beat: str = "0,0") -> Frame:
        await self.send(
            Frame("CONNECT", {"accept-version": "1.2", "heart-beat": heart_beat, "host": "sim"})
        )
        return await self.frame()

    async def subscribe(self, sub_id: str, destination: str, receipt: str | None = None) -> None:
        headers = {"id": sub_id, "destination": destination}
        if receipt is not None:
            headers["receipt"] = receipt
        await self.send(Frame("SUBSCRIBE", headers))


@asynccontextmanager
async def stomp_client(sim: SimServer, *, max_queue: int | None = 16) -> AsyncIterator[StompClient]:
    async with connect(
        sim.url,
        subprotocols=OFFERED,
        compression=None,
        ping_interval=None,  # the tests that need a ping send it themselves
        open_timeout=seconds(5),
        max_queue=max_queue,
    ) as ws:
        yield StompClient(ws)


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(ticks_per_sec=200, seed=7) as server:
        yield server


async def test_connect_negotiates_subprotocol_and_heartbeats() -> None:
    async with SimServer(heartbeat_ms=(5000, 2000)) as sim:
        assert sim.port > 0 and sim.url == f"ws://127.0.0.1:{sim.port}/ws"
        async with stomp_client(sim) as client:
            assert client.ws.subprotocol == "v12.stomp"
            connected = await client.connect(heart_beat="1000,3000")
            # server->client max(5000, 3000); client->server max(1000, 2000)
            assert connected == Frame(
                "CONNECTED", {"version": "1.2", "heart-beat": "5000,2000", "server": "stocking-sim"}
            )
        async with stomp_client(sim) as client:
            assert (await client.connect(heart_beat="0,0")).headers["heart-beat"] == "0,0"
        await sim.wait_for(lambda: sim.open_connections == 0, seconds(3))
        assert (sim.connections_total, sim.stomp_sessions_total) == (2, 2)
        assert [f.headers["heart-beat"] for f in sim.received] == ["1000,3000", "0,0"]


async def test_subscribe_receipt_then_toss_ticks_with_exact_headers(sim: SimServer) -> None:
    async with stomp_client(sim) as client:
        await client.connect()
        await client.subscribe("sub-1", topic("A005930"), receipt="r-1")
        assert await client.frame() == Frame("RECEIPT", {"receipt-id": "r-1"})
        assert sim.subscriptions() == {topic("A005930"): ["sub-1"]}
        lower, upper = price_limits(reference_price("A005930"))  # the fixture has no master
        message_ids = set()
        for _ in range(20):
            frame = await client.frame()
            assert frame.command == "MESSAGE"
            assert set(frame.headers) == MESSAGE_HEADERS  # no destination, as upstream
            assert frame.headers["subscription"] == "sub-1"
            assert frame.headers["content-type"] == "application/json"
            assert int(frame.headers["content-length"]) == len(frame.body)
            message_ids.add(frame.headers["message-id"])
            tick = orjson.loads(frame.body)
            assert tick["code"] == "A005930" and tick["base"] == reference_price("A005930")
            assert is_on_grid(tick["close"]) and lower <= tick["close"] <= upper
            trade = parse_toss_tick(frame.body)  # the relayer's own parser accepts it
            assert (trade.price, trade.currency) == (tick["close"], "KRW")
        assert len(message_ids) == 20
        assert [f.command for f in sim.received] == ["CONNECT", "SUBSCRIBE"]
        assert sim.received[1].headers == {
            "id": "sub-1", "destination": topic("A005930"), "receipt": "r-1"
        }  # fmt: skip


async def test_invalid_destination_is_an_error_with_receipt_then_close(sim: SimServer) -> None:
    async with stomp_client(sim) as client:
        await client.connect()
        await client.subscribe("bad", "/topic/v1/kr/stock/trade/005930", receipt="r-bad")
        error = await client.frame()
        assert error.command == "ERROR"
        assert error.headers["receipt-id"] == "r-bad"
        assert "invalid destination /topic/v1/kr/stock/trade/005930" in error.headers["message"]
        with pytest.raises(ConnectionClosed):
            await client.frame()
    assert sim.subscriptions() == {}


async def test_rejected_topic_and_subscription_cap_kill_the_connection() -> None:
    async with SimServer(ticks_per_sec=50, max_subscriptions=1) as sim:
        sim.reject_topics = {topic("A000660")}
        async with stomp_client(sim) as client:
            await client.connect()
            await client.subscribe("s1", topic("A000660"), receipt="r1")
            error = await client.frame()
            assert (error.command, error.headers["receipt-id"]) == ("ERROR", "r1")
            assert "not allowed" in error.headers["message"]
            with pytest.raises(ConnectionClosed):
                await client.frame()
        async with stomp_client(sim) as client:
            await client.connect()
            await client.subscribe("s1", topic("A005930"), receipt="r1")
            await client.subscribe("s2", topic("A035720"), receipt="r2")
            assert await client.reply() == Frame("RECEIPT", {"receipt-id": "r1"})
            error = await client.reply()
            assert (error.command, error.headers["receipt-id"]) == ("ERROR", "r2")
            assert error.headers["message"] == "too many subscriptions (at most 1)"
            with pytest.raises(ConnectionClosed):
                await client.reply()


async def test_error_without_receipt_id_as_rabbitmq_sends_it(sim: SimServer) -> None:
    sim.reject_topics = {topic("A000660")}
    sim.error_receipt_ids = False
    async with stomp_client(sim) as client:
        await client.connect()
        await client.subscribe("s1", topic("A005930"), receipt="r1")
        await client.subscribe("s2", topic("A000660"), receipt="r2")
        assert await client.reply() == Frame("RECEIPT", {"receipt-id": "r1"})
        error = await client.reply()
        assert error.command == "ERROR" and "receipt-id" not in error.headers
        assert "not allowed" in error.headers["message"]
        with pytest.raises(ConnectionClosed):
            await client.reply()


def test_cli_reads_rejected_topics_as_codes_or_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_REJECT_TOPICS", f"A035420, {topic('A000660')}")
    monkeypatch.setenv("SIM_ERROR_RECEIPT_IDS", "false")
    settings = SimSettings()
    assert settings.sim_reject_topics == [topic("A035420"), topic("A000660")]
    assert settings.sim_error_receipt_ids is False
    monkeypatch.setenv("SIM_REJECT_TOPICS", "A03542")
    with pytest.raises(ValidationError, match="neither an instrument code"):
        SimSettings()


async def test_unsubscribe_stops_that_subscriptions_messages(sim: SimServer) -> None:
    async with stomp_client(sim) as client:
        await client.connect()
        await client.subscribe("a", topic("A005930"))
        await client.subscribe("b", topic("A000660"), receipt="rb")
        assert await client.reply() == Frame("RECEIPT", {"receipt-id": "rb"})
        seen = {(await client.frame()).headers["subscription"] for _ in range(10)}
        assert seen == {"a", "b"}  # round-robin over both codes
        await client.send(Frame("UNSUBSCRIBE", {"id": "a", "receipt": "ua"}))
        assert await client.reply() == Frame("RECEIPT", {"receipt-id": "ua"})
        assert sim.subscriptions() == {topic("A000660"): ["b"]}
        after = [await client.frame() for _ in range(10)]
        assert {f.headers["subscription"] for f in after} == {"b"}
        assert {orjson.loads(f.body)["code"] for f in after} == {"A000660"}


async def test_no_ticks_without_subscriptions_only_heartbeats() -> None:
    # A heart-beat is sent only after an interval with no other output, so heart-beats arriving
    # back to back prove that no tick was sent in between.
    async with SimServer(ticks_per_sec=500, heartbeat_ms=(50, 0)) as sim:
        async with stomp_client(sim) as client:
            assert (await client.connect(heart_beat="0,50")).headers["heart-beat"] == "50,0"
            await client.subscribe("a", topic("A005930"))
            assert (await client.frame()).command == "MESSAGE"
            await client.send(Frame("UNSUBSCRIBE", {"id": "a", "receipt": "u"}))
            await client.reply()
            client.pending.clear()
            async with asyncio.timeout(seconds(3)):
                raw = [await client.ws.recv() for _ in range(3)]
            assert raw == ["\n", "\n", "\n"]


async def test_heartbeat_arrives_when_idle() -> None:
    async with SimServer(ticks_per_sec=20, heartbeat_ms=(100, 0)) as sim:
        async with stomp_client(sim) as client:
            connected = await client.connect(heart_beat="0,100")
            assert connected.headers["heart-beat"] == "100,0"
            async with asyncio.timeout(seconds(2)):
                assert await client.ws.recv() == "\n"
            assert client.parser.feed("\n") == []


async def test_stall_silences_everything_until_unstall() -> None:
    async with SimServer(ticks_per_sec=20, heartbeat_ms=(50, 0)) as sim:
        async with stomp_client(sim) as client:
            await client.connect(heart_beat="0,50")
            async with asyncio.timeout(seconds(2)):
                assert await client.ws.recv() == "\n"
            sim.stall()
            pong = asyncio.ensure_future(await client.ws.ping())
            # Ten heart-beat intervals of silence: nothing at all, not even a pong. Not scaled:
            # a slower machine would only send fewer heart-beats, never more.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await client.ws.recv()
            assert not pong.done()
            sim.unstall()
            async with asyncio.timeout(seconds(2)):
                await pong
                assert await client.ws.recv() == "\n"


async def test_frames_per_message_packs_several_frames() -> None:
    async with SimServer(ticks_per_sec=20_000, frames_per_message=5, seed=1) as sim:
        # Unbounded client queue: with the default one the client stops reading once 16
        # messages wait, so the server's close frame stays stuck behind ticks until timeout.
        async with stomp_client(sim, max_queue=None) as client:
            await client.connect()
            await client.subscribe("s", topic("A035720"))
            frames = [await client.frame() for _ in range(200)]
            assert max(client.frames_per_message) == 5  # never more than asked for
            assert all(f.command == "MESSAGE" and f.headers["subscription"] == "s" for f in frames)
            closes = [orjson.loads(f.body)["close"] for f in frames]
            assert all(is_on_grid(price) for price in closes)
            assert len({f.headers["message-id"] for f in frames}) == 200
            assert sim.ticks_sent >= 200


async def test_refuse_connect_sends_access_denied_then_closes(sim: SimServer) -> None:
    sim.refuse_connect = True
    async with stomp_client(sim) as client:
        error = await client.connect()
        assert (error.command, error.headers["message"]) == ("ERROR", "access denied")
        with pytest.raises(ConnectionClosed):
            await client.frame()
    assert sim.stomp_sessions_total == 0


async def test_accept_then_close_closes_before_any_stomp(sim: SimServer) -> None:
    sim.accept_then_close = True
    async with stomp_client(sim) as client:
        with pytest.raises(ConnectionClosed):
            await client.frame()
        assert client.frames_per_message == []
    assert (sim.connections_total, sim.stomp_sessions_total) == (1, 0)


@pytest.mark.parametrize("status", [401, 403, 503])
async def test_http_refusal_fails_the_handshake(sim: SimServer, status: int) -> None:
    sim.reject_http_status = status
    with pytest.raises(InvalidStatus) as info:
        async with stomp_client(sim):
            pass
    assert info.value.response.status_code == status
    assert sim.connections_total == 0


async def test_other_paths_are_not_found(sim: SimServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(sim.url.replace("/ws", "/other"), subprotocols=OFFERED):
            pass
    assert info.value.response.status_code == 404


async def test_drop_connections_aborts_without_a_close_frame(sim: SimServer) -> None:
    async with stomp_client(sim) as client:
        await client.connect()
        await client.subscribe("s", topic("A005930"))
        await client.frame()
        await sim.drop_connections()
        assert sim.open_connections == 0
        with pytest.raises(ConnectionClosedError) as info:
            while True:
                await client.frame()
        assert info.value.rcvd is None  # abrupt: no close frame came


async def test_disconnect_receipt_and_unknown_commands(sim: SimServer) -> None:
    async with stomp_client(sim) as client:
        await client.connect()
        await client.send(Frame("DISCONNECT", {"receipt": "bye"}))
        assert await client.frame() == Frame("RECEIPT", {"receipt-id": "bye"})
        with pytest.raises(ConnectionClosed):
            await client.frame()
    async with stomp_client(sim) as client:
        await client.connect()
        await client.send(Frame("SEND", {"destination": topic("A005930")}, b"x"))
        error = await client.frame()
        assert (error.command, error.headers["message"]) == ("ERROR", "unsupported command SEND")
    async with stomp_client(sim) as client:
        await client.send(Frame("SUBSCRIBE", {"id": "s", "destination": topic("A005930")}))
        error = await client.frame()
        assert error.headers["message"] == "expected CONNECT, got SUBSCRIBE"


async def test_frames_split_across_messages_and_batched(sim: SimServer) -> None:
    async with stomp_client(sim) as client:
        data = (
            encode_frame(Frame("CONNECT", {"accept-version": "1.2"}))
            + b"\n"
            + encode_frame(
                Frame("SUBSCRIBE", {"id": "s", "destination": topic("A068270"), "receipt": "r"})
            )
        )
        for start in range(0, len(data), 7):
            await client.ws.send(data[start : start + 7])  # binary, odd-sized pieces
        assert (await client.frame()).command == "CONNECTED"
        assert await client.frame() == Frame("RECEIPT", {"receipt-id": "r"})
        await sim.wait_for(lambda: sim.ticks_sent > 0, seconds(3))
        assert orjson.loads((await client.frame()).body)["code"] == "A068270"


async def test_drop_connections_also_ends_stalled_connections(sim: SimServer) -> None:
    async with stomp_client(sim) as client:
        await client.connect()
        sim.stall()
        # Whether or not the server reads this before the stall bites, the drop must end it.
        await client.subscribe("s", topic("A005930"))
        await sim.wait_for(lambda: len(sim.received) >= 1, seconds(3))
        await sim.drop_connections()
        assert (sim.open_connections, sim.subscriptions()) == (0, {})
        with pytest.raises(ConnectionClosedError):
            await client.reply()
