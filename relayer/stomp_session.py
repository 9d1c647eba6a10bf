"""STOMP 1.2 over a WebSocket: the `sim`, `toss` and `stomp` upstream adapters.

This module owns the socket: the WebSocket handshake, CONNECT/CONNECTED, heart-beats both ways,
SUBSCRIBE/UNSUBSCRIBE with receipts, ERROR handling and DISCONNECT. Framing is the pure
`relayer.stomp` codec; message bodies are Toss trade ticks (`relayer.toss`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.typing import Subprotocol

from relayer.bus import ActiveSubscription, format_utc
from relayer.credentials import ConnectHeaderSource
from relayer.quotes import MalformedTick
from relayer.stomp import (
    HEARTBEAT,
    Frame,
    FrameParser,
    StompServerError,
    encode_frame,
    negotiate_heartbeats,
)
from relayer.toss import parse_toss_tick
from relayer.upstream import (
    AuthRejected,
    SessionClosed,
    Stalled,
    SubscribeRejected,
    TickSink,
    UpstreamError,
    handshake_refused,
)

logger = logging.getLogger(__name__)

SUBPROTOCOLS = [Subprotocol("v12.stomp"), Subprotocol("v11.stomp"), Subprotocol("v10.stomp")]


@dataclass(frozen=True, slots=True)
class StompOptions:
    url: str
    heartbeat_ms: int
    heartbeat_grace: float
    receipt_timeout_s: float
    connect_timeout_s: float
    disconnect_timeout_s: float
    ws_ping_interval_s: float
    ws_ping_timeout_s: float
    max_frame_bytes: int
    compression: bool
    origin: str | None = None
    # The Toss browser client's identity headers (device-id, connection-id); the simulator
    # accepts them too, a generic broker does not need them.
    toss_identity: bool = False


class StompConnector:
    def __init__(self, options: StompOptions, credentials: ConnectHeaderSource) -> None:
        self._options = options
        self._credentials = credentials
        self._device_id = f"WTS-{uuid.uuid4().hex}"  # one per process, as the browser does

    async def open(self, sink: TickSink) -> StompSession:
        options = self._options
        headers = {"accept-version": "1.2", "heart-beat": f"{options.heartbeat_ms},"
                   f"{options.heartbeat_ms}"}
        if options.toss_identity:
            headers["device-id"] = self._device_id
            headers["connection-id"] = str(uuid.uuid4())
        headers.update(await self._credentials.headers())
        try:
            async with asyncio.timeout(options.connect_timeout_s):
                ws = await connect(
                    options.url,
                    subprotocols=SUBPROTOCOLS,
                    origin=options.origin,  # type: ignore[arg-type]
                    compression="deflate" if options.compression else None,
                    open_timeout=options.connect_timeout_s,
                    ping_interval=options.ws_ping_interval_s,
                    ping_timeout=options.ws_ping_timeout_s,
                    close_timeout=options.disconnect_timeout_s,  # a stalled peer never answers
                    max_size=options.max_frame_bytes,
                    proxy=None,
                )
        except InvalidStatus as exc:
            raise handshake_refused(exc.response.status_code) from exc
        session = StompSession(ws, options, sink)
        try:
            async with asyncio.timeout(options.connect_timeout_s):
                await session.handshake(headers)
        except BaseException:
            await ws.close()
            raise
        return session


class StompSession:
    def __init__(
        self,
        ws: ClientConnection,
        options: StompOptions,
        sink: TickSink,
    ) -> None:
        self._ws = ws
        self._options = options
        self._sink = sink
        self._parser = FrameParser(options.max_frame_bytes)
        self._ids = itertools.count(1)
        self._active: dict[str, ActiveSubscription] = {}
        # receipt id -> (topic or None for non-SUBSCRIBE frames, future)
        self._receipts: dict[str, tuple[str | None, asyncio.Future[None]]] = {}
        self._send_every_s = 0.0
        self._dead_after_s = 0.0
        self._last_received = time.monotonic()
        self._refused: dict[str, SubscribeRejected] = {}

    @property
    def active(self) -> dict[str, ActiveSubscription]:
        return self._active

    @property
    def refused(self) -> dict[str, SubscribeRejected]:
        return self._refused

    async def handshake(self, headers: dict[str, str]) -> None:
        await self._send(Frame("CONNECT", headers))
        while True:
            try:
                message = await self._ws.recv()
            except ConnectionClosed as exc:
                raise SessionClosed(f"closed during CONNECT ({exc})") from exc
            for frame in self._parser.feed(message):
                if frame.command == "CONNECTED":
                    self._negotiate(frame)
                    return
                if frame.command == "ERROR":
                    # Wrong credentials, unknown virtual host, ...: all need an operator.
                    raise AuthRejected(f"CONNECT refused: {StompServerError(frame)}")
                raise UpstreamError(f"expected CONNECTED, got {frame.command}")

    def _negotiate(self, connected: Frame) -> None:
        offered = self._options.heartbeat_ms
        send_ms, receive_ms = negotiate_heartbeats(
            connected.headers.get("heart-beat"), (offered, offered)
        )
        self._send_every_s = send_ms / 1000
        self._dead_after_s = receive_ms / 1000 * self._options.heartbeat_grace
        logger.info(
            "STOMP session open (version %s, server %s, heart-beats: send %d ms, expect %d ms)",
            connected.headers.get("version", "?"),
            connected.headers.get("server", "?"),
            send_ms,
            receive_ms,
        )

    async def subscribe(self, topics: list[str]) -> dict[str, UpstreamError | None]:
        waits: dict[str, tuple[str, str, asyncio.Future[None]]] = {}
        frames: list[bytes] = []
        loop = asyncio.get_running_loop()
        for topic in topics:
            sub_id = str(next(self._ids))
            receipt = f"sub-{sub_id}"
            future: asyncio.Future[None] = loop.create_future()
            self._receipts[receipt] = (topic, future)
            waits[topic] = (sub_id, receipt, future)
            frames.append(
                encode_frame(
                    Frame("SUBSCRIBE", {"id": sub_id, "destination": topic, "receipt": receipt})
                )
            )
        results: dict[str, UpstreamError | None] = {}
        try:
            # Several frames in one WebSocket message is legal STOMP, and one send per batch.
            await self._ws.send(b"".join(frames).decode())
        except ConnectionClosed as exc:
            for _, receipt, _ in waits.values():
                self._receipts.pop(receipt, None)
            error = SessionClosed(f"connection closed while subscribing ({exc})")
            return dict.fromkeys(topics, error)
        for topic, (sub_id, receipt, future) in waits.items():
            try:
                async with asyncio.timeout(self._options.receipt_timeout_s):
                    await asyncio.shield(future)
            except TimeoutError:
                results[topic] = UpstreamError(
                    f"no RECEIPT within {self._options.receipt_timeout_s:g}s"
                )
                # Do not leave a half-known subscription behind: the next reconcile retries.
                with contextlib.suppress(ConnectionClosed):
                    await self._send(Frame("UNSUBSCRIBE", {"id": sub_id}))
                continue
            except UpstreamError as exc:
                results[topic] = exc
                continue
            finally:
                self._receipts.pop(receipt, None)
            self._active[topic] = ActiveSubscription(
                sub_id=sub_id, since=format_utc(datetime.now(UTC), millis=True)
            )
            results[topic] = None
        return results

    async def unsubscribe(self, topic: str) -> None:
        subscription = self._active.pop(topic, None)
        if subscription is None:
            return
        receipt = f"unsub-{subscription.sub_id}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._receipts[receipt] = (None, future)
        try:
            await self._send(Frame("UNSUBSCRIBE", {"id": subscription.sub_id, "receipt": receipt}))
            async with asyncio.timeout(self._options.receipt_timeout_s):
                await asyncio.shield(future)
        except (TimeoutError, ConnectionClosed, UpstreamError) as exc:
            # Whatever happened, the subscription is gone from our side; if the connection is
            # dying it is gone from theirs too. Messages for an unknown id are ignored.
            logger.warning("UNSUBSCRIBE %s not confirmed: %s", topic, exc)
        finally:
            self._receipts.pop(receipt, None)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                if self._send_every_s > 0:
                    tasks.create_task(self._send_heartbeats())
                if self._dead_after_s > 0:
                    tasks.create_task(self._watch_silence())
                await self._read()
                raise SessionClosed("upstream closed the connection")
        except* UpstreamError as group:
            reason = group.exceptions[0]
            assert isinstance(reason, UpstreamError)
            self._fail_pending(reason)
            raise reason from None
        except* ConnectionClosed as group:
            closed = SessionClosed(f"connection lost: {group.exceptions[0]}")
            self._fail_pending(closed)
            raise closed from None

    async def _read(self) -> None:
        sink = self._sink
        trade, malformed, congested = sink.trade, sink.malformed, sink.congested
        parser = self._parser
        try:
            async for message in self._ws:
                self._last_received = time.monotonic()
                for frame in parser.feed(message):
                    if frame.command == "MESSAGE":
                        try:
                            tick = parse_toss_tick(frame.body)
                        except MalformedTick as exc:
                            malformed(exc, frame.body)
                        else:
                            trade(tick)
                    else:
                        self._handle_control(frame)
                if congested():
                    await sink.wait_for_room()
        except ConnectionClosedOK:
            return

    def _handle_control(self, frame: Frame) -> None:
        if frame.command == "RECEIPT":
            waiting = self._receipts.get(frame.headers.get("receipt-id", ""))
            if waiting is not None and not waiting[1].done():
                waiting[1].set_result(None)
        elif frame.command == "ERROR":
            self._handle_error(frame)
        else:
            logger.debug("ignoring %s frame", frame.command)

    def _handle_error(self, frame: Frame) -> None:
        """An ERROR ends the session (the server closes after it); blame the right topic."""
        error = StompServerError(frame)
        blamed = self._receipts.get(error.receipt_id or "")
        pending_subscribes = [
            (topic, future) for topic, future in self._receipts.values()
            if topic is not None and not future.done()
        ]
        refusals: list[tuple[SubscribeRejected, asyncio.Future[None]]] = []
        if blamed is not None and blamed[0] is not None:
            refusals.append((SubscribeRejected(blamed[0], str(error)), blamed[1]))
        elif len(pending_subscribes) == 1:
            topic, future = pending_subscribes[0]
            refusals.append((SubscribeRejected(topic, str(error)), future))
        else:
            # No receipt-id and several SUBSCRIBEs in flight: any of them may be the culprit.
            refusals += [(SubscribeRejected(topic, str(error), certain=False), future)
                         for topic, future in pending_subscribes]
        for refusal, future in refusals:
            # Kept on the session as well: whoever awaits the future may be cancelled by this
            # very ERROR (the connection ends with it), and the refusal must not be lost with it.
            self._refused[refusal.topic] = refusal
            if not future.done():
                future.set_exception(refusal)
        logger.warning("upstream sent ERROR: %s", error)
        raise SessionClosed(f"upstream sent ERROR: {error}")

    def _fail_pending(self, reason: UpstreamError) -> None:
        for _, future in self._receipts.values():
            if not future.done():
                future.set_exception(reason)
                future.exception()  # mark retrieved: nobody may be waiting any more

    async def _send_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._send_every_s)
            await self._ws.send(HEARTBEAT.decode())

    async def _watch_silence(self) -> None:
        check_every = min(1.0, self._dead_after_s / 4)
        while True:
            await asyncio.sleep(check_every)
            silent_for = time.monotonic() - self._last_received
            if silent_for > self._dead_after_s:
                raise Stalled(f"no data or heart-beat from upstream for {silent_for:.1f}s")

    async def close(self, *, graceful: bool) -> None:
        """Close the connection; call after run() has returned (this reads the socket)."""
        if graceful and self._ws.state.name == "OPEN":
            with contextlib.suppress(TimeoutError, ConnectionClosed, UpstreamError):
                async with asyncio.timeout(self._options.disconnect_timeout_s):
                    await self._disconnect()
        await self._ws.close()

    async def _disconnect(self) -> None:
        receipt = f"disconnect-{next(self._ids)}"
        await self._send(Frame("DISCONNECT", {"receipt": receipt}))
        while True:
            for frame in self._parser.feed(await self._ws.recv()):
                if frame.command == "RECEIPT" and frame.headers.get("receipt-id") == receipt:
                    logger.info("DISCONNECT receipted by upstream")
                    return

    async def _send(self, frame: Frame) -> None:
        await self._ws.send(encode_frame(frame).decode())
