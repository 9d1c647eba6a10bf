"""Direct frame writes: a tick's update framed once, and the same bytes written to every
WebSocket client that watches its code, past the ASGI send.

Why: through ASGI, every message to every client is a task wake-up, an `await send(...)`, a
str -> bytes encode, a framing by websockets, and a flow-control wait (scripts/bench_stream.py
measured ~40 us of worker CPU per update per client, 65% of it in that path): 5,000 clients
at the simulator's rate (100,000 updates/s) would need four cores. A server-to-client frame is
not masked (RFC 6455 5.1), so the frame of a message is the same bytes for every client; it
is built once per tick and written with one `transport.write` per client, in the hub's loop,
with no task switch. This is what gorilla/websocket's PreparedMessage and Centrifugo do.

No library or ASGI extension offers this, so it is an extension of our own:
`FrameWritingWebSocketsProtocol` is Uvicorn's sans-I/O WebSocket protocol (the one it picks
by default) that puts a `DirectFrames` in the connection's ASGI scope, under `EXTENSION`.
Gunicorn's workers use it (api.server.Worker); a server without it (another ASGI server, the
test client) serves the stream through plain ASGI sends, unchanged, only slower.

Rules that keep this correct:
- Only whole, final text frames are written, on the event loop, so they never interleave with
  the protocol's own frames (pings, pongs, close), which are also written whole.
- Frames written here are uncompressed. With permessage-deflate negotiated, a message without
  the RSV1 bit is an uncompressed one (RFC 7692 6), valid whatever the compression context.
- Nothing is written after the close frame, or to a connection that is gone.
- The transport's flow control is respected by the caller: `paused` is true while the
  socket's write buffer is above its high-water mark (asyncio's pause_writing), and then the
  stream coalesces updates instead of writing (api.streams.fanout).
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode

EXTENSION = "stocking.websocket.frames"


def text_frame(message: bytes) -> bytes:
    """The complete server-to-client frame of one text message (UTF-8 `message`)."""
    return Frame(Opcode.TEXT, message).serialize(mask=False)


class DirectFrames:
    """One connection's direct writes (see the module docstring)."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    @property
    def open(self) -> bool:
        protocol = self._protocol
        return not (protocol.close_sent or protocol.disconnected
                    or protocol.transport.is_closing())

    @property
    def paused(self) -> bool:
        """The socket's write buffer is above its high-water mark: the client is behind."""
        return not self._protocol.writable.is_set()

    def write(self, frame: bytes) -> bool:
        """Write a frame made by `text_frame`; False (nothing written) once the connection is
        closing."""
        if not self.open:
            return False
        self._protocol.transport.write(frame)
        return True

    async def drained(self) -> None:
        """Until the write buffer is below its low-water mark again (or the connection is
        lost: Uvicorn then sets `writable` so that no one waits forever)."""
        await self._protocol.writable.wait()


def direct_frames(scope: Scope) -> DirectFrames | None:
    """The connection's direct writes, when its server offers them."""
    extension: Any = scope.get("extensions", {}).get(EXTENSION)
    return extension if isinstance(extension, DirectFrames) else None


class FrameWritingWebSocketsProtocol(WebSocketsSansIOProtocol):
    """Uvicorn's sans-I/O WebSocket protocol, offering `DirectFrames` in the ASGI scope."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The app's task was created above but has not run yet (it starts at the loop's next
        # turn), so the scope it receives already holds the extension. A refused handshake
        # starts no app and has no scope.
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = DirectFrames(self)
