"""The load source of scripts/bench_relayer.py: a minimal STOMP 1.2 over WebSocket server.

Run as its own process by the benchmark (`python scripts/bench_feeder.py`): it prints the port it
listens on as one JSON line, then obeys one-line commands on stdin (`max K`, `paced R`, `idle`,
`stats`) and answers each with a JSON line of its counters. Ticks are rendered ahead of time into
ready WebSocket frames so that the feeder costs almost nothing per tick and leaves the machine to
the relayer and Redis; probe ticks carry their send time (ns) in `cumulativeAmount`.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from http import HTTPStatus

# Run as a script, only scripts/ is on sys.path: importing bench_support puts the repository
# root there too, for the imports of relayer below.
import bench_support  # noqa: F401
import orjson
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from relayer.bus import TopicTemplate
from relayer.shared_settings import DEFAULT_TOPIC_TEMPLATE
from relayer.stomp import Frame, FrameParser, encode_frame

PROBE_CODE = "A900000"
CODES = (
    "A005930", "A000660", "A035420", "A051910", "A005380", "A000270", "A068270", "A035720",
    "A105560", "A055550", "A012330", "A006400", "A028260", "A003550", "A034730", "A015760",
    "A032830", "A017670", "A096770", "A066570",
)
PRICES_PER_CODE = 50
PROBES_PER_S = 200
TICKS_PER_CHUNK = 64  # max-rate writes: one transport.write per this many ticks
PACE_STEP_S = 0.001
TOPICS = TopicTemplate(DEFAULT_TOPIC_TEMPLATE)


class FeederError(Exception):
    """The feeder was asked to feed something it cannot."""

# ============================================================================================
# Feeder: a minimal STOMP 1.2 over WebSocket server (runs in its own process)


class Mode(StrEnum):
    IDLE = "idle"
    MAX = "max"
    PACED = "paced"


def utc_second() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def tick_body(code: str, price: int, base: int, serial: int, dt: str) -> bytes:
    """One Toss trade tick (docs/UPSTREAM.md, "Toss Securities")."""
    change = price - base
    return orjson.dumps({
        "code": code, "dt": dt, "session": "REGULAR", "exchange": "KRX", "currency": "KRW",
        "base": base, "close": price, "volume": 1 + serial % 37,
        "tradeType": "BUY" if serial % 2 else "SELL",
        "changeType": "UP" if change > 0 else "DOWN" if change < 0 else "FLAT",
        "tradingStrength": 100.0 + serial % 50 / 10, "cumulativeVolume": 1_000_000 + serial,
        "cumulativeAmount": price * (1_000_000 + serial),
    })


def ws_text(payload: bytes) -> bytes:
    """A server-to-client WebSocket text frame, serialised by websockets itself."""
    return WsFrame(Opcode.TEXT, payload).serialize(mask=False)


@dataclass(eq=False)  # hashed by identity: peers live in a set
class StompPeer:
    """One relayer connection: its subscriptions (id -> code) and rendered tick pools."""

    ws: ServerConnection
    codes: dict[str, str] = field(default_factory=dict)
    pools: dict[int, TickPool] = field(default_factory=dict)
    message_ids: Iterator[int] = field(default_factory=itertools.count)

    def answer(self, frame: Frame) -> Frame | None:
        """The reply to a client frame, if any (subscriptions are recorded here)."""
        headers = frame.headers
        if frame.command in ("CONNECT", "STOMP"):
            return Frame("CONNECTED", {"version": "1.2", "heart-beat": "0,0",
                                       "server": "stocking-bench-feeder"})
        if frame.command == "SUBSCRIBE":
            code = TOPICS.code(headers.get("destination", ""))
            if code is not None:
                self.codes[headers.get("id", "")] = code
                self.pools.clear()
        elif frame.command == "UNSUBSCRIBE":
            self.codes.pop(headers.get("id", ""), None)
            self.pools.clear()
        receipt = headers.get("receipt")
        return Frame("RECEIPT", {"receipt-id": receipt}) if receipt else None

    def pool(self, per_message: int) -> TickPool:
        if per_message not in self.pools:
            self.pools[per_message] = TickPool(self, per_message)
        return self.pools[per_message]

    def message(self, sub_id: str, body: bytes) -> bytes:
        headers = {"subscription": sub_id, "message-id": f"{sub_id}-{next(self.message_ids)}",
                   "content-type": "application/json"}
        return encode_frame(Frame("MESSAGE", headers, body))

    def probe(self) -> bytes | None:
        """A probe tick stamped now (ns) in cumulativeAmount, as a WebSocket frame."""
        sub_id = next((s for s, c in self.codes.items() if c == PROBE_CODE), None)
        if sub_id is None:
            return None
        body = orjson.dumps({"code": PROBE_CODE, "dt": utc_second(), "base": 10_000,
                             "close": 10_000, "volume": 1, "tradeType": "BUY",
                             "cumulativeVolume": 1, "cumulativeAmount": time.time_ns()})
        return ws_text(self.message(sub_id, body))


class TickPool:
    """Pre-rendered WebSocket messages (each of `per_message` MESSAGE frames), cycled."""

    def __init__(self, peer: StompPeer, per_message: int) -> None:
        dt = utc_second()
        feed = [(s, c) for s, c in peer.codes.items() if c != PROBE_CODE]
        if not feed:
            raise FeederError("no instrument subscribed")
        stomp = []
        for serial in range(len(feed) * PRICES_PER_CODE):
            sub_id, code = feed[serial % len(feed)]
            base = 10_000 + 1_000 * (serial % len(feed))
            price = base + 10 * (serial // len(feed) - PRICES_PER_CODE // 2)
            stomp.append(peer.message(sub_id, tick_body(code, price, base, serial, dt)))
        frames = [ws_text(b"".join(stomp[i:i + per_message]))
                  for i in range(0, len(stomp) - per_message + 1, per_message)]
        self._blob = b"".join(frames)
        self._offsets = [0, *itertools.accumulate(len(f) for f in frames)]
        self._size = len(frames)
        self._next = 0
        step = max(1, TICKS_PER_CHUNK // per_message)
        self.chunks = [(self._blob[self._offsets[i]:self._offsets[min(i + step, self._size)]],
                        (min(i + step, self._size) - i) * per_message)
                       for i in range(0, self._size, step)]

    def take(self, messages: int) -> bytes:
        """The next `messages` WebSocket messages of the cycle, as one bytes."""
        parts = []
        while messages > 0:
            count = min(messages, self._size - self._next)
            parts.append(self._blob[self._offsets[self._next]:self._offsets[self._next + count]])
            self._next = (self._next + count) % self._size
            messages -= count
        return b"".join(parts)


class Feeder:
    """Streams ticks to every connected peer in the mode set over stdin."""

    def __init__(self) -> None:
        self.mode = Mode.IDLE
        self.per_message = 1
        self.rate = 0.0
        self.sent = 0  # ticks written to sockets (probes excluded)
        self.probes = 0
        self.peers: set[StompPeer] = set()
        self._generation = 0
        self._changed = asyncio.Event()

    def apply(self, words: list[str]) -> None:
        """`idle` | `max K` | `paced RATE` | `stats` (no change)."""
        if not words or words[0] == "stats":
            return
        self.mode = Mode(words[0])
        if self.mode is Mode.MAX:
            self.per_message = int(words[1])
        elif self.mode is Mode.PACED:
            self.rate = float(words[1])
        self._generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def stats(self) -> dict[str, object]:
        return {"mode": self.mode.value, "sent": self.sent, "probes": self.probes,
                "peers": len(self.peers)}

    async def stream(self, peer: StompPeer) -> None:
        while True:
            generation, changed = self._generation, self._changed
            if self.mode is Mode.MAX:
                await self._stream_max(peer, generation)
            elif self.mode is Mode.PACED:
                await self._stream_paced(peer, generation)
            if generation == self._generation:
                await changed.wait()

    async def _stream_max(self, peer: StompPeer, generation: int) -> None:
        transport = peer.ws.transport
        chunks = peer.pool(self.per_message).chunks
        while generation == self._generation and not transport.is_closing():
            for data, ticks in chunks:
                transport.write(data)
                self.sent += ticks
                await peer.ws.drain()  # waits only while the socket buffer is over its limit
            await asyncio.sleep(0)  # let control commands in when the socket never blocks

    async def _stream_paced(self, peer: StompPeer, generation: int) -> None:
        transport = peer.ws.transport
        pool = peer.pool(1)
        rate, started = self.rate, time.monotonic()
        sent = probes = 0
        while generation == self._generation and not transport.is_closing():
            elapsed = time.monotonic() - started
            due = max(0, int(elapsed * rate) - sent)
            probes_due = max(0, int(elapsed * PROBES_PER_S) - probes)
            parts = [pool.take(due)] if due else []
            # Probes are stamped last, just before the write, behind the ticks due with them.
            parts += filter(None, (peer.probe() for _ in range(probes_due)))
            sent, probes = sent + due, probes + probes_due
            self.sent += due
            self.probes += len(parts) - (1 if due else 0)
            if parts:
                transport.write(b"".join(parts))
                await peer.ws.drain()
            await asyncio.sleep(PACE_STEP_S)


async def serve_peer(ws: ServerConnection, feeder: Feeder) -> None:
    peer = StompPeer(ws)
    parser = FrameParser()
    feeder.peers.add(peer)
    streaming = asyncio.create_task(feeder.stream(peer))
    try:
        async for message in ws:
            for frame in parser.feed(message):
                reply = peer.answer(frame)
                if reply is not None:
                    await ws.send(encode_frame(reply).decode())
                if frame.command == "DISCONNECT":
                    await ws.close()
    except websockets.ConnectionClosed:
        pass
    finally:
        streaming.cancel()
        feeder.peers.discard(peer)


def only_ws_path(connection: ServerConnection, request: Request) -> Response | None:
    if request.path != "/ws":
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
    return None


async def run_feeder() -> None:
    """Listen on a free port, say which on stdout, obey stdin commands until EOF."""
    feeder = Feeder()
    async with serve(lambda ws: serve_peer(ws, feeder), "127.0.0.1", 0,
                     subprotocols=[Subprotocol("v12.stomp")], compression=None,
                     ping_interval=None, process_request=only_ws_path) as server:
        port = server.sockets[0].getsockname()[1]
        print(orjson.dumps({"port": port}).decode(), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            feeder.apply(line.decode().split())
            print(orjson.dumps(feeder.stats()).decode(), flush=True)



if __name__ == "__main__":
    asyncio.run(run_feeder())
