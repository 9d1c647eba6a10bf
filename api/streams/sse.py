"""Server-sent events for clients that cannot hold a WebSocket: `GET /api/v1/stream/sse`
(docs/api/STREAMS.md).

The same session as the WebSocket (api.streams.session), one way: what to watch is in the
query (`quotes=A005930,A000660`, `orders=1`, `market=1`), the token in the Authorization
header, and the portfolio whose orders are followed in the `X-Portfolio-Id` header, as every
account-scoped REST endpoint takes it (the default portfolio without it). One portfolio per
stream: `Last-Event-ID` is one offset, and offsets are per portfolio; a client following
several opens a stream for each. Each message is an event named by its `type`, its `data` the
WebSocket message; an orders event carries `id:` = its offset, so a browser's EventSource
resumes with `Last-Event-ID` by itself. At the token's expiry an `auth_expired` event ends the
stream (the client reconnects with a new token and the last id). A slow reader's stream is
ended.

Starlette's StreamingResponse writes one chunk at a time and waits for the socket to drain, so
a reader that does not read blocks `send`, which the session's send timeout turns into
SlowClient.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from starlette.types import Receive

from api.auth.tokens import Principal
from api.errors import Unauthorized, Unprocessable
from api.resources import Resources
from api.streams import metrics, protocol
from api.streams.fanout import Hub
from api.streams.protocol import Channel, ProtocolError, Subscribe
from api.streams.session import (
    OrdersSource,
    Send,
    SlowClient,
    StreamSession,
    orders_source,
    verify_token,
)

logger = logging.getLogger(__name__)

# Tells EventSource how long to wait before it reconnects (milliseconds).
RETRY_MS = 1000


def sse_event(message: bytes, event_id: str | None) -> bytes:
    """One event: named by the message's `type`, with its id when it has one."""
    head = b"event: " + protocol.message_type(message).encode() + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    return head + b"data: " + message + b"\n\n"


async def events(resources: Resources, hub: Hub, principal: Principal, expires_at: float,
                 subscriptions: list[Subscribe], source: OrdersSource | None,
                 receive: Receive) -> AsyncIterator[bytes]:
    """The event stream, until the client leaves, its token expires, or it is too slow.

    The client leaving is watched here (`receive` gives `http.disconnect`): under ASGI 2.4
    Starlette no longer does, and Uvicorn drops sends to a closed connection without an error,
    so a stream with nothing to send would otherwise outlive its client. `source`: the
    portfolio of the orders subscription, resolved before the stream began."""
    # One chunk in hand at most: a reader that stops reading blocks the sender at once.
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)

    async def send(message: bytes, event_id: str | None) -> None:
        await chunks.put(sse_event(message, event_id))

    session = StreamSession(resources, hub, principal)
    async with session:
        yield f"retry: {RETRY_MS}\n\n".encode()
        for op in subscriptions:
            try:
                await session.subscribe(op, source)
            except ProtocolError as exc:
                session.push(protocol.error(exc.code, exc.message, **exc.extra))
        driver = asyncio.create_task(_drive(session, send, chunks, expires_at))
        left = asyncio.create_task(_disconnected(receive))
        # The server stopping ends the stream; EventSource reconnects (to another worker)
        # with its Last-Event-ID after `retry`.
        stopping = asyncio.create_task(hub.stopping.wait())
        chunk: asyncio.Task[bytes | None] | None = None
        try:
            while True:
                chunk = asyncio.create_task(chunks.get())
                await asyncio.wait((chunk, left, stopping), return_when=asyncio.FIRST_COMPLETED)
                data = chunk.result() if chunk.done() else None
                if data is None:
                    break
                yield data
        finally:
            # Every task awaited once cancelled: one left pending is logged when destroyed.
            tasks = [driver, left, stopping, *([] if chunk is None else [chunk])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _drive(session: StreamSession, send: Send, chunks: asyncio.Queue[bytes | None],
                 expires_at: float) -> None:
    settings = session.resources.settings

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(settings.stream_heartbeat_s)
            session.push(protocol.ping())

    pump = asyncio.create_task(session.pump(send))
    beat = asyncio.create_task(heartbeat())
    try:
        async with asyncio.timeout(max(expires_at - time.time(), 0)):
            await pump
    except TimeoutError:  # the token expired
        await chunks.put(sse_event(protocol.auth_expired(0), None))
        metrics.CLOSED.labels("unauthorized").inc()
    except SlowClient as exc:
        logger.info("stream: ending a slow SSE client (user %d): %s",
                    session.principal.user_id, exc)
        metrics.CLOSED.labels("slow_client").inc()
    finally:
        for task in (pump, beat):
            task.cancel()
        await asyncio.gather(pump, beat, return_exceptions=True)
    # The end of the stream. A slow reader may not take it: drop what it has not read.
    while not chunks.empty():
        chunks.get_nowait()
    chunks.put_nowait(None)


def subscriptions_of(quotes: str | None, orders: bool, market: bool, since: str | None,
                     max_codes: int, portfolio_id: int | None = None) -> list[Subscribe]:
    """What an SSE request watches, from its query; ProtocolError for invalid codes."""
    ops: list[Subscribe] = []
    if quotes:
        codes = protocol.parse_codes([part for part in quotes.split(",") if part])
        if len(codes) > max_codes:
            raise ProtocolError("too_many_codes", f"{len(codes)} codes; at most {max_codes} "
                                "per connection", max_codes=max_codes)
        if codes:
            ops.append(Subscribe(Channel.QUOTES, codes))
    if orders:
        ops.append(Subscribe(Channel.ORDERS, since=since, portfolio_id=portfolio_id))
    if market:
        ops.append(Subscribe(Channel.MARKET))
    return ops


async def open_stream(resources: Resources, hub: Hub, receive: Receive,
                      authorization: str | None, quotes: str | None, orders: bool, market: bool,
                      since: str | None, portfolio_id: int | None) -> StreamingResponse:
    """The SSE response, after the token, the codes and the portfolio were checked (401, 422,
    404 `portfolio_not_found` problems before any byte of the stream: an EventSource stops at
    an error status instead of reconnecting for ever to a stream that can carry nothing)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required", code="not_authenticated")
    principal, expires_at = verify_token(resources, token.strip())
    try:
        ops = subscriptions_of(quotes, orders, market, since, resources.settings.stream_max_codes,
                               portfolio_id)
    except ProtocolError as exc:
        raise Unprocessable(exc.message, code=exc.code) from None
    # The header counts only with orders=1: nothing else of the stream is a portfolio's.
    source = await orders_source(resources, principal, portfolio_id) if orders else None
    return StreamingResponse(
        events(resources, hub, principal, expires_at, ops, source, receive),
        media_type="text/event-stream",
        # No proxy may buffer or cache a live stream (X-Accel-Buffering: nginx).
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
