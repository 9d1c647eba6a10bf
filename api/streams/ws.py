"""The WebSocket connection loop of `GET /api/v1/stream` (docs/api/STREAMS.md).

    serve
      authenticate      the Authorization header, or the first message within
                        STREAM_AUTH_TIMEOUT_S (tokens stay out of URLs and access logs)
      then, until the first of them ends the connection:
      +-- receive       client operations; silent for STREAM_IDLE_TIMEOUT_S: 4408
      +-- pump          the sender (api.streams.session): slow: 4429
      +-- heartbeat     `{"type": "ping"}` every STREAM_HEARTBEAT_S
      +-- expiry        at the token's `exp`, `auth_expired`; no new token within
                        STREAM_AUTH_GRACE_S: 4401

A bad operation is answered with an `error` message and the connection stays; only
authentication, silence and slowness close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from api.auth.tokens import Principal
from api.errors import Unauthorized
from api.resources import Resources
from api.streams import metrics, protocol
from api.streams.fanout import Hub
from api.streams.frames import direct_frames, text_frame
from api.streams.protocol import Auth, CloseCode, Ping, ProtocolError, Subscribe, Unsubscribe
from api.streams.session import SlowClient, StreamSession, verify_token

logger = logging.getLogger(__name__)

# A client message larger than this is refused (1009): operations are small.
MAX_MESSAGE_BYTES = 64 * 1024


class Close(Exception):
    """End the connection with this close code and reason."""

    def __init__(self, code: CloseCode, reason: str, metric: str | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.metric = code, reason, metric


class Disconnected(Exception):
    """The client went away."""


def bearer_token(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def serve(websocket: WebSocket, resources: Resources, hub: Hub) -> None:
    await websocket.accept()
    try:
        principal, expires_at = await _authenticate(websocket, resources)
    except Close as close:
        await _close(websocket, close)
        return
    except Disconnected:
        return
    connection = _Connection(websocket, resources, hub, principal, expires_at)
    async with connection.session:
        connection.session.push(protocol.authenticated(principal.user_id, expires_at))
        await connection.run()


async def _authenticate(websocket: WebSocket, resources: Resources) -> tuple[Principal, float]:
    token = bearer_token(websocket)
    if token is None:
        try:
            async with asyncio.timeout(resources.settings.stream_auth_timeout_s):
                text = await _receive_text(websocket)
        except TimeoutError:
            raise Close(CloseCode.UNAUTHORIZED, "no auth message in time",
                        "unauthorized") from None
        try:
            op = protocol.parse_operation(text)
        except ProtocolError:
            op = None
        if not isinstance(op, Auth):
            raise Close(CloseCode.UNAUTHORIZED, "the first message must be auth", "unauthorized")
        token = op.token
    try:
        return verify_token(resources, token)
    except Unauthorized as exc:
        raise Close(CloseCode.UNAUTHORIZED, exc.code, "unauthorized") from None


async def _receive_text(websocket: WebSocket) -> str:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise Disconnected
    text = message.get("text")
    if text is None:
        data = message.get("bytes") or b""
        text = data.decode("utf-8", errors="replace")
    if len(text) > MAX_MESSAGE_BYTES:
        raise Close(CloseCode.MESSAGE_TOO_BIG, "message too big")
    return str(text)


async def _close(websocket: WebSocket, close: Close) -> None:
    if close.metric is not None:
        metrics.CLOSED.labels(close.metric).inc()
    if websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):  # the client may be gone already
            await websocket.close(int(close.code), close.reason)


class _Connection:
    def __init__(self, websocket: WebSocket, resources: Resources, hub: Hub,
                 principal: Principal, expires_at: float) -> None:
        self.websocket = websocket
        self.settings = resources.settings
        self.resources = resources
        self.frames = direct_frames(websocket.scope)
        self.session = StreamSession(resources, hub, principal, self.frames)
        self.expires_at = expires_at
        self.renewed = asyncio.Event()

    async def run(self) -> None:
        jobs: list[Coroutine[Any, Any, None]] = [
            self._receive(), self.session.pump(self._send), self._heartbeat(), self._expiry()]
        tasks = [asyncio.create_task(job) for job in jobs]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        error = next(iter(done)).exception()
        if isinstance(error, SlowClient):
            logger.info("stream: closing slow client (user %d): %s",
                        self.session.principal.user_id, error)
            await _close(self.websocket, Close(CloseCode.SLOW_CLIENT, f"slow client: {error}",
                                               "slow_client"))
        elif isinstance(error, Close):
            await _close(self.websocket, error)
        elif isinstance(error, Disconnected | WebSocketDisconnect):
            return
        elif error is not None:
            logger.error("stream: connection failed", exc_info=error)
            await _close(self.websocket, Close(CloseCode.INTERNAL_ERROR, "internal error"))

    async def _send(self, message: bytes, event_id: str | None) -> None:
        frames = self.frames
        if frames is None:
            await self.websocket.send_text(message.decode())
            return
        # Written as the hub writes (api.streams.frames), so that the two keep their order;
        # a socket backed up is waited for (the sender's timeout makes that a slow client).
        if frames.paused:
            await frames.drained()
        frames.write(text_frame(message))

    async def _receive(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.settings.stream_idle_timeout_s):
                    text = await _receive_text(self.websocket)
            except TimeoutError:
                raise Close(CloseCode.IDLE, "client silent", "idle") from None
            except WebSocketDisconnect:
                raise Disconnected from None
            try:
                await self._handle(protocol.parse_operation(text))
            except ProtocolError as exc:
                self.session.push(protocol.error(exc.code, exc.message, **exc.extra))

    async def _handle(self, op: protocol.Operation) -> None:
        if isinstance(op, Ping):
            self.session.push(protocol.pong())
        elif isinstance(op, Subscribe):
            await self.session.subscribe(op)
        elif isinstance(op, Unsubscribe):
            await self.session.unsubscribe(op)
        else:
            await self._reauthenticate(op)

    async def _reauthenticate(self, op: Auth) -> None:
        try:
            principal, expires_at = verify_token(self.resources, op.token)
        except Unauthorized as exc:
            raise Close(CloseCode.UNAUTHORIZED, exc.code, "unauthorized") from None
        if principal.user_id != self.session.principal.user_id:
            raise Close(CloseCode.UNAUTHORIZED, "a token of another user", "unauthorized")
        self.expires_at = expires_at
        self.renewed.set()
        self.session.push(protocol.authenticated(principal.user_id, expires_at))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stream_heartbeat_s)
            self.session.push(protocol.ping())

    async def _expiry(self) -> None:
        grace = self.settings.stream_auth_grace_s
        while True:
            left = self.expires_at - time.time()
            if left > 0:
                await asyncio.sleep(left)
                continue
            self.renewed.clear()
            self.session.push(protocol.auth_expired(grace))
            try:
                async with asyncio.timeout(grace):
                    await self.renewed.wait()
            except TimeoutError:
                raise Close(CloseCode.UNAUTHORIZED, "token expired",
                            "unauthorized") from None
