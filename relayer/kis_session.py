"""Korea Investment's realtime WebSocket: the `kis` upstream adapter.

This module owns the KIS socket; the wire format is the pure `relayer.kis`. KIS has no session
handshake: the approval key rides in every subscribe message, each registration is acknowledged
with a JSON ack naming its `tr_key`, PINGPONG messages must be echoed, and trade data arrives as
caret-separated lines. A refused registration does not close the connection (unlike STOMP).

The approval key is fetched once and reused for 23 hours: KIS blocks keys that reconnect or
re-authenticate in loops (docs/UPSTREAM.md, "Korea Investment").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus

from relayer.bus import ActiveSubscription, TopicTemplate, format_utc
from relayer.kis import (
    KisAck,
    KisAuthError,
    KisPingPong,
    KisTrades,
    fetch_approval_key,
    parse_kis_message,
    subscribe_message,
)
from relayer.quotes import MalformedTick
from relayer.upstream import (
    AuthRejected,
    SessionClosed,
    SubscribeRejected,
    TickSink,
    UpstreamError,
    handshake_refused,
)

logger = logging.getLogger(__name__)

_APPROVAL_KEY_LIFETIME_S = 23 * 3600


@dataclass(frozen=True, slots=True)
class KisOptions:
    """How to reach Korea Investment and what to ask it for: one value, as `StompOptions` is for
    the STOMP adapters (built from the settings in relayer.adapters)."""

    url: str  # the realtime WebSocket
    topics: TopicTemplate  # which instrument a topic of the desired set names
    rest_url: str  # where approval keys are issued
    tr_id: str  # the realtime service: H0STCNT0, domestic trades
    custtype: str  # P (personal) or B (business)
    ack_timeout_s: float  # per registration
    connect_timeout_s: float
    ws_ping_interval_s: float
    ws_ping_timeout_s: float


@dataclass(frozen=True, slots=True)
class KisCredentials:
    """A static approval key, or the app key and secret to fetch one with. Secrets: never in a
    repr, hence in no log line or traceback."""

    app_key: str | None = field(default=None, repr=False)
    app_secret: str | None = field(default=None, repr=False)
    approval_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.approval_key and not (self.app_key and self.app_secret):
            raise ValueError("the kis upstream needs KIS_APPROVAL_KEY or KIS_APP_KEY and "
                             "KIS_APP_SECRET")


class KisConnector:
    def __init__(self, options: KisOptions, credentials: KisCredentials,
                 http: httpx.AsyncClient) -> None:
        self._options = options
        self._credentials = credentials
        self._http = http
        self._approval_key = credentials.approval_key
        self._approval_key_expires = float("inf") if credentials.approval_key else 0.0

    async def _current_approval_key(self) -> str:
        if self._approval_key is None or time.monotonic() >= self._approval_key_expires:
            app_key, app_secret = self._credentials.app_key, self._credentials.app_secret
            assert app_key and app_secret  # KisCredentials: no static key, so these
            try:
                self._approval_key = await fetch_approval_key(
                    self._http, self._options.rest_url, app_key, app_secret
                )
            except KisAuthError as exc:
                if exc.status in (401, 403):
                    raise AuthRejected(str(exc)) from exc
                raise UpstreamError(str(exc)) from exc
            self._approval_key_expires = time.monotonic() + _APPROVAL_KEY_LIFETIME_S
            logger.info("obtained a KIS approval key")
        return self._approval_key

    async def open(self, sink: TickSink) -> KisSession:
        approval_key = await self._current_approval_key()
        options = self._options
        try:
            ws = await connect(
                options.url,
                open_timeout=options.connect_timeout_s,
                ping_interval=options.ws_ping_interval_s,
                ping_timeout=options.ws_ping_timeout_s,
                close_timeout=1.0,  # a stalled peer never answers the close handshake
                proxy=None,
            )
        except InvalidStatus as exc:
            raise handshake_refused(exc.response.status_code) from exc
        return KisSession(ws, options, approval_key, sink)


class KisSession:
    def __init__(
        self,
        ws: ClientConnection,
        options: KisOptions,
        approval_key: str,
        sink: TickSink,
    ) -> None:
        self._ws = ws
        self._options = options
        self._approval_key = approval_key
        self._sink = sink
        self._active: dict[str, ActiveSubscription] = {}
        self._acks: dict[str, asyncio.Future[KisAck]] = {}  # tr_key -> the ack we wait for
        self._refused: dict[str, SubscribeRejected] = {}

    @property
    def active(self) -> dict[str, ActiveSubscription]:
        return self._active

    @property
    def refused(self) -> dict[str, SubscribeRejected]:
        return self._refused

    async def subscribe(self, topics: list[str]) -> dict[str, UpstreamError | None]:
        results: dict[str, UpstreamError | None] = {}
        for topic in topics:
            code = self._options.topics.code(topic)
            if code is None:
                results[topic] = SubscribeRejected(topic, "not an instrument topic")
                continue
            try:
                ack = await self._request(code, register=True)
            except UpstreamError as exc:
                results[topic] = exc
                continue
            if ack.ok or ack.already:
                self._active[topic] = ActiveSubscription(
                    sub_id=code[1:], since=format_utc(datetime.now(UTC), millis=True)
                )
                results[topic] = None
            else:
                results[topic] = self._refused[topic] = SubscribeRejected(topic, ack.message)
        return results

    async def unsubscribe(self, topic: str) -> None:
        subscription = self._active.pop(topic, None)
        if subscription is None:
            return
        with contextlib.suppress(UpstreamError):
            await self._request("A" + subscription.sub_id, register=False)

    async def _request(self, code: str, *, register: bool) -> KisAck:
        tr_key = code[1:]
        future: asyncio.Future[KisAck] = asyncio.get_running_loop().create_future()
        self._acks[tr_key] = future
        options = self._options
        try:
            await self._ws.send(subscribe_message(
                self._approval_key, options.tr_id, code, register=register,
                custtype=options.custtype,
            ))
            async with asyncio.timeout(options.ack_timeout_s):
                return await asyncio.shield(future)
        except TimeoutError as exc:
            raise UpstreamError(f"no ack within {options.ack_timeout_s:g}s") from exc
        except ConnectionClosed as exc:
            raise SessionClosed(f"connection closed ({exc})") from exc
        finally:
            self._acks.pop(tr_key, None)

    async def run(self) -> None:
        try:
            async for message in self._ws:
                text = message if isinstance(message, str) else message.decode()
                try:
                    parsed = parse_kis_message(text)
                except MalformedTick as exc:
                    self._sink.malformed(exc, text.encode())
                    continue
                if isinstance(parsed, KisTrades):
                    for trade in parsed.trades:
                        self._sink.trade(trade)
                elif isinstance(parsed, KisPingPong):
                    await self._ws.send(parsed.raw)
                elif isinstance(parsed, KisAck):
                    waiting = self._acks.get(parsed.tr_key or "")
                    if waiting is not None and not waiting.done():
                        waiting.set_result(parsed)
                if self._sink.congested():
                    await self._sink.wait_for_room()
        except ConnectionClosedOK:
            pass
        except ConnectionClosed as exc:
            raise SessionClosed(f"connection lost: {exc}") from exc
        finally:
            for future in self._acks.values():
                if not future.done():
                    future.set_exception(SessionClosed("connection closed"))
                    future.exception()
        raise SessionClosed("upstream closed the connection")

    async def close(self, *, graceful: bool) -> None:
        # KIS has no goodbye message: registrations end with the session.
        await self._ws.close()
