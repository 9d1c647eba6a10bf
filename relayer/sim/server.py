"""A local exchange that speaks the Toss realtime feed's wire format, for development and tests.

This module is the listening side: STOMP 1.2 over WebSocket on `/ws` with subprotocol `v12.stomp`
(docs/UPSTREAM.md, "The simulator"), the fault switches (refuse, accept-then-close, drop, stall,
reject topics, HTTP refusal) that let the relayer's tests play every failure the real upstream
can produce, and the counters and `wait_for` those tests observe it through. What happens on one
connection after the handshake (CONNECT, SUBSCRIBE, ticks, heart-beats) is `relayer.sim.session`.

This is a test fixture and a dev tool: it must never be pointed at by production settings, and it
does no authentication (any `authorization` header is accepted and ignored).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from relayer.bus import TopicTemplate
from relayer.market_calendar import MarketCalendar
from relayer.shared_settings import DEFAULT_TOPIC_TEMPLATE
from relayer.sim.market import Instrument, Market
from relayer.sim.session import SimSession
from relayer.stomp import Frame

log = logging.getLogger(__name__)

WS_PATH = "/ws"
SUBPROTOCOL = Subprotocol("v12.stomp")
RECEIVED_LIMIT = 10_000
# Closing handshake wait when a client does not answer (ERROR-then-close, shutdown).
_CLOSE_TIMEOUT_S = 2.0
# An aborted transport reports connection_lost on the next loop iteration; this is a safety net.
_DROP_TIMEOUT_S = 5.0


def wall_clock() -> datetime:
    return datetime.now(UTC)


class SimServer:
    """The simulated exchange. Use as `async with SimServer(port=0) as sim: ... sim.url ...`.

    Fault switches are plain attributes read when the event they govern happens, so flipping one
    affects the next handshake, CONNECT or SUBSCRIBE; `drop_connections` and `stall` act on the
    connections open now.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ticks_per_sec: float = 20.0,
        seed: int | None = None,
        topic_template: str = DEFAULT_TOPIC_TEMPLATE,
        heartbeat_ms: tuple[int, int] = (5000, 5000),
        max_subscriptions: int = 100,
        frames_per_message: int = 1,
        instruments: Mapping[str, Instrument] | None = None,
        calendar: MarketCalendar | None = None,
        clock: Callable[[], datetime] = wall_clock,
    ) -> None:
        if ticks_per_sec < 0:
            raise ValueError("ticks_per_sec must be >= 0")
        if frames_per_message < 1:
            raise ValueError("frames_per_message must be >= 1")
        if min(heartbeat_ms) < 0:
            raise ValueError("heartbeat_ms values must be >= 0")
        self.host = host
        self.port = port  # the bound port once started (port 0 picks a free one)
        self.ticks_per_sec = ticks_per_sec
        self.heartbeat_ms = heartbeat_ms  # (can send every, wants every), as offered in CONNECTED
        self.max_subscriptions = max_subscriptions
        self.frames_per_message = frames_per_message
        self.topics = TopicTemplate(topic_template)
        # None: every code a synthetic stock (tests); `python -m relayer.sim` passes the master's.
        self.market = Market(seed, instruments)
        # When the market prints (relayer.sim.trading_hours). None: at every moment, with no
        # trading days (the tests' default); `python -m relayer.sim` passes MARKET_CALENDAR's.
        self.calendar = calendar
        # The market's time: trade times, sessions and days. Tests pass a clock they move.
        self.clock = clock

        # Fault switches.
        self.refuse_connect = False
        self.accept_then_close = False
        self.reject_topics: set[str] = set()
        # True: an ERROR names the frame it answers (`receipt-id`), as the Toss feed's do.
        # False: it never does, as RabbitMQ's "Invalid destination" ERROR (probed on 3.10).
        self.error_receipt_ids = True
        self.reject_http_status: int | None = None

        # Observability.
        self.connections_total = 0
        self.stomp_sessions_total = 0
        self.ticks_sent = 0
        self.received: list[Frame] = []

        self._sessions: set[SimSession] = set()
        self._server: Server | None = None
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    @property
    def open_connections(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        """Bind and listen; raises OSError (e.g. EADDRINUSE) if the port cannot be bound."""
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=[SUBPROTOCOL],  # picked when offered, alongside v11/v10 or not
            compression=None,
            process_request=self._process_request,
            # The sim never pings: a stalled connection must stay silent, and the relayer's own
            # pings and STOMP heart-beats are what detect it.
            ping_interval=None,
            close_timeout=_CLOSE_TIMEOUT_S,
            server_header=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("exchange simulator listening on %s", self.url)

    async def close(self) -> None:
        if self._server is None:
            return
        self.unstall()  # a stalled connection would hold the closing handshake until timeout
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------------------------------
    # Fault controls

    async def drop_connections(self) -> None:
        """Abort every open connection at the TCP level (no close frame), and wait until gone."""
        dropped = set(self._sessions)
        for session in dropped:
            session.abort()
        await self.wait_for(lambda: not (dropped & self._sessions), _DROP_TIMEOUT_S)

    def stall(self) -> None:
        """Go silent on the open connections: no ticks, heart-beats, pongs or replies."""
        for session in self._sessions:
            session.stall()

    def unstall(self) -> None:
        for session in self._sessions:
            session.unstall()

    # ----------------------------------------------------------------------------------------
    # Observability

    def subscriptions(self) -> dict[str, list[str]]:
        """Destination -> subscription ids, over every open connection."""
        merged: dict[str, list[str]] = {}
        for session in self._sessions:
            for sub_id, destination in session.destinations.items():
                merged.setdefault(destination, []).append(sub_id)
        return merged

    # A deadline argument reads better in tests than wrapping every call in asyncio.timeout.
    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
        """Return once `predicate()` holds, re-checked on every state change; else TimeoutError."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    def notify(self) -> None:
        # Wake every waiter once, then start a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    def record(self, frame: Frame) -> None:
        self.received.append(frame)
        if len(self.received) > RECEIVED_LIMIT:
            del self.received[: len(self.received) - RECEIVED_LIMIT]

    # ----------------------------------------------------------------------------------------
    # WebSocket plumbing

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.reject_http_status is not None:
            status = self.reject_http_status
            return connection.respond(status, f"refused by the simulator ({status})\n")
        if request.path.partition("?")[0] != WS_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections_total += 1
        session = SimSession(self, ws, self.connections_total)
        self._sessions.add(session)
        self.notify()
        log.info("connection %d from %s opened", session.number, ws.remote_address)
        try:
            if self.accept_then_close:
                await ws.close()
                return
            await session.run()
        finally:
            self._sessions.discard(session)
            self.notify()
            log.info("connection %d closed", session.number)
