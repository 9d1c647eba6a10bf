"""What the daemon needs from an upstream adapter, and the errors adapters raise.

An adapter is a `Connector` (opens one connection: credentials, WebSocket handshake, session
handshake) that yields an `UpstreamSession` (subscribe, unsubscribe, read until the connection
ends, close). The STOMP adapters (`sim`, `toss`, `stomp`) live in `relayer.stomp_session`, the
Korea Investment one in `relayer.kis_session`. Everything above this seam (reconnects,
subscriptions, Redis) is the same for every upstream.

UpstreamError
 +-- AuthRejected        the server refused our credentials (HTTP 401/403 or a STOMP/KIS refusal)
 +-- SubscribeRejected   the server refused one topic (for STOMP, the connection dies with it)
 +-- SessionClosed       the connection ended (cleanly or not) while we were using it
 +-- Stalled             no byte and no heart-beat from the server for too long
"""

from __future__ import annotations

from typing import Protocol

from relayer.bus import ActiveSubscription
from relayer.quotes import MalformedTick, TradePrint


class UpstreamError(Exception):
    pass


class AuthRejected(UpstreamError):
    pass


class SubscribeRejected(UpstreamError):
    """The server refused a topic. `certain` is False when the refusal could not be pinned on
    this topic alone (an ERROR without receipt-id while several SUBSCRIBEs were in flight)."""

    def __init__(self, topic: str, reason: str, *, certain: bool = True) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic = topic
        self.reason = reason
        self.certain = certain


class SessionClosed(UpstreamError):
    pass


class Stalled(UpstreamError):
    pass


def handshake_refused(status: int) -> UpstreamError:
    """The error for an HTTP answer other than 101 to the WebSocket handshake.

    401/403 mean our credentials: retried slowly, with a clear message. Anything else (502, 503,
    ...) is a server having a bad moment: normal backoff.
    """
    if status in (401, 403):
        return AuthRejected(f"WebSocket handshake refused with HTTP {status}")
    return UpstreamError(f"WebSocket handshake answered HTTP {status}")


class TickSink(Protocol):
    """Where a session's read loop delivers what it reads.

    `trade` and `malformed` are synchronous on purpose: they run once per tick on the hot path.
    After each WebSocket message the loop checks `congested()` and, when it is true, awaits
    `wait_for_room()`: reading stops, TCP pushes back on the upstream, and memory stays bounded
    when ticks arrive faster than Redis takes them.
    """

    def trade(self, trade: TradePrint) -> None: ...

    def malformed(self, error: MalformedTick, body: bytes) -> None: ...

    def congested(self) -> bool: ...

    async def wait_for_room(self) -> None: ...


class UpstreamSession(Protocol):
    """One open upstream connection, past its handshake."""

    @property
    def active(self) -> dict[str, ActiveSubscription]:
        """Topics subscribed on this connection (confirmed by the server)."""
        ...

    @property
    def refused(self) -> dict[str, SubscribeRejected]:
        """Every topic the server refused on this connection, kept after it ends.

        A STOMP server closes the connection with the ERROR that refuses a SUBSCRIBE, which
        cancels whoever was waiting for the answer; this record is how the refusal still
        reaches the subscription manager (`SubscriptionManager.connection_ended`).
        """
        ...

    async def subscribe(self, topics: list[str]) -> dict[str, UpstreamError | None]:
        """Subscribe several topics at once; per topic None (confirmed) or the error.

        A `SubscribeRejected` names a topic the server refused. Other errors (a receipt that
        never came, the connection closing) say nothing about the topic itself.
        """
        ...

    async def unsubscribe(self, topic: str) -> None: ...

    async def run(self) -> None:
        """Read until the connection ends, passing trades to the handler; raises why it ended."""
        ...

    async def close(self, *, graceful: bool) -> None:
        """Graceful: say goodbye the protocol's way (bounded in time), then close."""
        ...


class Connector(Protocol):
    async def open(self, sink: TickSink) -> UpstreamSession: ...
