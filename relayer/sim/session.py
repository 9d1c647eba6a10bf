"""One simulated exchange connection: the STOMP 1.2 session a client sees after the handshake.

CONNECT -> CONNECTED with negotiated heart-beats, SUBSCRIBE/UNSUBSCRIBE with receipts, MESSAGE
frames carrying Toss tick JSON from `Market` (headers `subscription`, `message-id`,
`content-type`, `content-length`, and no `destination`, as seen live), bare "\\n" heart-beats,
and ERROR-then-close for anything a real broker refuses (docs/UPSTREAM.md, "Generic STOMP 1.2
brokers"). The STOMP bytes come from `relayer.stomp`, the same codec the relayer uses, so the
simulator never grows a second idea of the format.

Ticks follow the market calendar when the server has one (relayer.sim.trading_hours): nothing
while the market is closed or an auction collects orders, one auction print per subscribed
instrument at the open and at the close, continuous prints in between. Trade times and sessions
come from the server's `clock`, which tests replace; the pacing of ticks (so many a second) stays
on the event loop's monotonic time, so a test moves the market's clock without waiting for it.

A session only ever touches its own connection. Everything shared (fault switches, the market,
counters, the record of received frames) lives on the listening server and is reached through the
narrow `SessionHost` protocol; this module must never import `relayer.sim.server`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import date, datetime
from typing import Any, Protocol

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from relayer.bus import TopicTemplate
from relayer.market_calendar import MarketCalendar
from relayer.sim.market import Market
from relayer.sim.trading_hours import Auction, TradingHours
from relayer.stomp import (
    HEARTBEAT,
    Frame,
    FrameParser,
    StompProtocolError,
    encode_frame,
    negotiate_heartbeats,
)

log = logging.getLogger(__name__)

SERVER_NAME = "stocking-sim"
# asyncio timers are millisecond-grained; waking more often than this only burns CPU, and at high
# rates each wake-up emits every tick that fell due since the last one.
_MIN_SLEEP_S = 0.001
# After a stall in the event loop or a slow client, catch up at most this much time's worth of
# ticks instead of flooding the client with the whole backlog.
_MAX_CATCH_UP_S = 0.25
# While nothing prints (closed, an auction collecting), how often the loop looks at the clock: an
# injected clock cannot wake it, and at this rate an auction prints within 50 ms of its moment.
_IDLE_POLL_S = 0.05


class SessionHost(Protocol):
    """What a session needs from the server that accepted it (`SimServer` satisfies this)."""

    # Settings and fault switches, read when the event they govern happens.
    @property
    def refuse_connect(self) -> bool: ...
    @property
    def reject_topics(self) -> set[str]: ...
    @property
    def error_receipt_ids(self) -> bool: ...
    @property
    def heartbeat_ms(self) -> tuple[int, int]: ...
    @property
    def ticks_per_sec(self) -> float: ...
    @property
    def max_subscriptions(self) -> int: ...
    @property
    def frames_per_message(self) -> int: ...
    @property
    def topics(self) -> TopicTemplate: ...
    @property
    def market(self) -> Market: ...
    @property
    def calendar(self) -> MarketCalendar | None:
        """None: print at every moment and never roll a day (the tests' default)."""
    @property
    def clock(self) -> Callable[[], datetime]:
        """The market's wall clock (aware): trade times, sessions, trading days."""

    # Counters the session advances, summed over every connection.
    stomp_sessions_total: int
    ticks_sent: int

    def record(self, frame: Frame) -> None:
        """Keep a client frame for tests to inspect."""

    def notify(self) -> None:
        """Wake anything waiting on the server's state to change."""


class SimSession:
    """One client connection: STOMP state, subscriptions, and the tasks that write to it.

    `server` is read when each event happens (fault switches, rates, limits), not copied at
    construction, so a switch flipped mid-session governs the next CONNECT or SUBSCRIBE.
    """

    def __init__(self, server: SessionHost, ws: ServerConnection, number: int) -> None:
        self.server = server
        self.ws = ws
        self.number = number
        self.parser = FrameParser()
        self.connected = False
        self.closing = False  # once set, only the ERROR/RECEIPT ending the session is written
        self.destinations: dict[str, str] = {}  # sub id -> destination
        self.code_subs: dict[str, list[str]] = {}  # code -> sub ids, in subscription order
        self.codes: list[str] = []  # keys of code_subs, kept as a list for the round-robin
        self.rotation = 0
        self.send_interval_s = 0.0
        self.last_send = time.monotonic()
        self.running = asyncio.Event()  # cleared while stalled
        self.running.set()
        self.subscribed = asyncio.Event()  # set while at least one subscription exists
        self.message_ids = itertools.count(1)
        self.tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async for message in self.ws:
                await self.running.wait()  # a stalled server does not act on what it read
                for frame in self.parser.feed(message):
                    self.server.record(frame)
                    self.server.notify()
                    if not await self.handle(frame):
                        return
        except StompProtocolError as exc:
            await self.fail(f"malformed frame: {exc}")
        except ConnectionClosed:
            pass
        finally:
            self.closing = True
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def stall(self) -> None:
        if self.running.is_set():
            self.running.clear()
            # Not reading also leaves WebSocket pings unanswered, as on a dead path.
            self.ws.transport.pause_reading()

    def unstall(self) -> None:
        if not self.running.is_set():
            self.running.set()
            self.ws.transport.resume_reading()

    def abort(self) -> None:
        self.ws.transport.abort()
        # A stalled reader parks before acting on its last message; let it see the dead socket.
        self.running.set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self.tasks.append(asyncio.create_task(self.guard(coro, name), name=name))

    async def guard(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except ConnectionClosed:
            pass  # the reader sees the close too and ends the session
        except Exception:
            log.exception("connection %d: %s failed", self.number, name)
            self.abort()

    # -- writing -----------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        await self.ws.send(data, text=True)  # STOMP frames are UTF-8: text messages, no decode
        self.last_send = time.monotonic()

    async def reply(self, frame: Frame) -> None:
        await self.write(encode_frame(frame))

    async def fail(self, message: str, receipt: str | None = None) -> None:
        """ERROR, then close: what a STOMP broker does with anything it refuses."""
        log.info("connection %d: ERROR %s", self.number, message)
        self.closing = True
        headers = {"message": message, "content-type": "text/plain"}
        if receipt is not None and self.server.error_receipt_ids:
            headers["receipt-id"] = receipt
        try:
            await self.reply(Frame("ERROR", headers, message.encode()))
        except ConnectionClosed:
            return  # the client left first; nothing to tell it
        await self.ws.close()

    # -- client frames -----------------------------------------------------------------------

    async def handle(self, frame: Frame) -> bool:
        """Act on one client frame; False once the session is over."""
        command = frame.command
        if not self.connected:
            if command not in ("CONNECT", "STOMP"):
                await self.fail(f"expected CONNECT, got {command}")
                return False
            return await self.on_connect(frame)
        receipt = frame.headers.get("receipt")
        if command == "SUBSCRIBE":
            return await self.on_subscribe(frame, receipt)
        if command == "UNSUBSCRIBE":
            sub_id = frame.headers.get("id")
            if not sub_id:
                await self.fail("UNSUBSCRIBE without an id", receipt)
                return False
            self.remove(sub_id)
        elif command == "DISCONNECT":
            self.closing = True
            if receipt is not None:
                await self.reply(Frame("RECEIPT", {"receipt-id": receipt}))
            await self.ws.close()
            return False
        else:
            await self.fail(f"unsupported command {command}", receipt)
            return False
        if receipt is not None:
            await self.reply(Frame("RECEIPT", {"receipt-id": receipt}))
        return True

    async def on_connect(self, frame: Frame) -> bool:
        if self.server.refuse_connect:
            await self.fail("access denied")
            return False
        versions = frame.headers.get("accept-version")
        if versions is not None and "1.2" not in versions.split(","):
            await self.fail(f"supported protocol versions are 1.2, not {versions}")
            return False
        try:
            # The negotiation is symmetric: from our side the client's header is the peer's.
            send_ms, expect_ms = negotiate_heartbeats(
                frame.headers.get("heart-beat"), self.server.heartbeat_ms
            )
        except StompProtocolError as exc:
            await self.fail(str(exc))
            return False
        self.connected = True
        self.send_interval_s = send_ms / 1000
        await self.reply(
            Frame(
                "CONNECTED",
                {"version": "1.2", "heart-beat": f"{send_ms},{expect_ms}", "server": SERVER_NAME},
            )
        )
        self.server.stomp_sessions_total += 1
        self.server.notify()
        if self.server.ticks_per_sec > 0:
            self.spawn(self.tick_loop(), f"sim-ticks-{self.number}")
        if send_ms > 0:
            self.spawn(self.heartbeat_loop(), f"sim-heartbeats-{self.number}")
        return True

    async def on_subscribe(self, frame: Frame, receipt: str | None) -> bool:
        sub_id = frame.headers.get("id")
        destination = frame.headers.get("destination")
        if not sub_id or not destination:
            problem = "SUBSCRIBE needs an id and a destination"
        elif destination in self.server.reject_topics:
            problem = f"subscription to {destination} is not allowed"
        elif (code := self.server.topics.code(destination)) is None:
            problem = f"invalid destination {destination}"
        elif sub_id in self.destinations:
            problem = f"subscription id {sub_id} is already in use"
        elif len(self.destinations) >= self.server.max_subscriptions:
            problem = f"too many subscriptions (at most {self.server.max_subscriptions})"
        else:
            self.destinations[sub_id] = destination
            self.code_subs.setdefault(code, []).append(sub_id)
            self.codes = list(self.code_subs)
            self.subscribed.set()
            self.server.notify()
            log.debug("connection %d: subscribed %s as %s", self.number, destination, sub_id)
            if receipt is not None:
                await self.reply(Frame("RECEIPT", {"receipt-id": receipt}))
            return True
        await self.fail(problem, receipt)
        return False

    def remove(self, sub_id: str) -> None:
        # Unknown ids are ignored: brokers differ here, and being lenient keeps a client's
        # retried UNSUBSCRIBE from killing the connection.
        destination = self.destinations.pop(sub_id, None)
        if destination is None:
            return
        code = self.server.topics.code(destination)
        assert code is not None  # only valid destinations are ever registered
        subs = self.code_subs[code]
        subs.remove(sub_id)
        if not subs:
            del self.code_subs[code]
            self.codes = list(self.code_subs)
        if not self.destinations:
            self.subscribed.clear()
        self.server.notify()
        log.debug("connection %d: unsubscribed %s (%s)", self.number, destination, sub_id)

    # -- background writers ------------------------------------------------------------------

    async def tick_loop(self) -> None:
        """Emit `ticks_per_sec` ticks a second, round-robin over the subscribed codes, while the
        calendar (if any) says the market trades continuously; auction prints at their moments."""
        server = self.server
        rate = server.ticks_per_sec
        max_credit = max(1.0, rate * _MAX_CATCH_UP_S)
        credit = 0.0
        last = time.monotonic()
        calendar = server.calendar
        hours = None if calendar is None else TradingHours(calendar, server.clock())
        while not self.closing:
            if not (self.running.is_set() and self.subscribed.is_set()):
                await self.running.wait()
                await self.subscribed.wait()
                credit, last = 0.0, time.monotonic()  # a pause is not a backlog
                if hours is not None:
                    hours.restart(server.clock())  # nor are the auctions it missed
                continue
            moment = server.clock()
            day = None
            if hours is not None:
                step = hours.advance(moment)
                for auction in step.auctions:
                    await self.emit_auction(auction)
                if not step.continuous:
                    credit, last = 0.0, time.monotonic()  # closed hours are not a backlog
                    await asyncio.sleep(_IDLE_POLL_S)
                    continue
                day = step.day
            now = time.monotonic()
            credit = min(max_credit, credit + (now - last) * rate)
            last = now
            due = int(credit)
            credit -= due
            if due:
                await self.emit(due, moment, day)
            await asyncio.sleep(max(_MIN_SLEEP_S, (1.0 - credit) / rate))

    async def emit(self, count: int, stamp: datetime, day: date | None = None) -> None:
        """`count` continuous prints at `stamp` (one clock read per batch: the wire has second
        resolution), round-robin over the subscribed codes."""
        server = self.server
        batch: list[bytes] = []
        for _ in range(count):
            codes = self.codes
            if not codes or self.closing or not self.running.is_set():
                break  # subscriptions or the session changed while a batch was being written
            code = codes[self.rotation % len(codes)]
            self.rotation += 1
            body = orjson.dumps(server.market.next_tick(code, stamp, day))
            batch = await self.add_messages(batch, code, body)
        if batch and self.running.is_set() and not self.closing:
            await self.flush(batch)

    async def emit_auction(self, auction: Auction) -> None:
        """The auction's print for every code subscribed now (the market gives each code one
        price per auction, whichever connection asks first)."""
        batch: list[bytes] = []
        for code in tuple(self.codes):
            if self.closing or not self.running.is_set():
                return
            tick = self.server.market.auction_tick(code, auction.session, auction.at,
                                                   auction.day)
            batch = await self.add_messages(batch, code, orjson.dumps(tick))
        if batch and self.running.is_set() and not self.closing:
            await self.flush(batch)

    async def add_messages(self, batch: list[bytes], code: str, body: bytes) -> list[bytes]:
        """Append a MESSAGE of `body` for each subscription of `code`; write the batch whenever
        it holds `frames_per_message` frames. Returns what is left to write."""
        per_message = self.server.frames_per_message
        for sub_id in tuple(self.code_subs.get(code, ())):
            if sub_id not in self.destinations:
                continue  # unsubscribed while the previous batch was being written
            headers = {
                "subscription": sub_id,
                "message-id": f"{self.number}-{next(self.message_ids)}",
                "content-type": "application/json",
            }
            batch.append(encode_frame(Frame("MESSAGE", headers, body)))
            if len(batch) >= per_message:
                await self.flush(batch)
                batch = []
        return batch

    async def flush(self, batch: list[bytes]) -> None:
        await self.write(b"".join(batch))
        self.server.ticks_sent += len(batch)
        self.server.notify()

    async def heartbeat_loop(self) -> None:
        """A bare EOL whenever the negotiated interval passes with nothing else written."""
        interval = self.send_interval_s
        while not self.closing:
            await self.running.wait()
            delay = self.last_send + interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            await self.write(HEARTBEAT)
