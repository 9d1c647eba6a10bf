"""The worker Gunicorn runs (`worker_class` in gunicorn.conf.py): uvicorn-worker's
UvicornWorker, speaking HTTP/1.1 through httptools as before, with one addition: a limit on
the request head (request line plus headers), MAX_REQUEST_HEADER_BYTES, and a WebSocket
protocol with direct frame writes for the live stream (api.streams.frames).

Why here, in the HTTP protocol: nothing else limits the head. Gunicorn's own
`limit_request_line` / `limit_request_field_size` / `limit_request_fields` belong to its
own HTTP parser, which a Uvicorn worker does not use; Uvicorn's httptools protocol has no
limit at all (measured: a single 200 MiB header was read whole, the worker grew by 380 MB
and answered 200 after 65 s); its h11 protocol only has a 16 KiB default that it answers
with a plain-text 400. And an ASGI middleware cannot help: the server has read every header
before the app is called.

So the protocol counts the bytes of the head as they arrive. Past the limit, before the head
is even complete, it answers `431 Request Header Fields Too Large` (problem+json, code
`headers_too_large`) and closes the connection; the app never sees the request. A head that
fits costs one addition per read.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]  # no py.typed

from api.errors import PROBLEM_JSON
from api.limits import problem_bytes
from api.settings import ApiSettings
from api.stopping import signal_stopping
from api.streams.frames import FrameWritingWebSocketsProtocol

logger = logging.getLogger(__name__)

HEAD_TOO_LARGE = "headers_too_large"


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, refusing a request head longer than `max_head_bytes`."""

    max_head_bytes = 32 * 1024  # replaced per worker by `with_head_limit`

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._new_head()
        super().connection_made(transport)  # type: ignore[arg-type]

    def _new_head(self) -> None:
        self._in_head = True  # until this request's headers are complete
        self._head_read = 0  # bytes read since the head began (an upper bound of its size)
        self._head_size = 0  # bytes of the head parsed so far
        self._head_refused = False

    def data_received(self, data: bytes) -> None:
        # A head still incomplete after this read is refused as soon as the bytes read for it
        # pass the limit, so a never-ending header is not buffered. (A read that also ends the
        # head is judged by its parsed size, in on_headers_complete.)
        if self._in_head:
            self._head_read += len(data)
        super().data_received(data)
        if (self._in_head and self._head_read > self.max_head_bytes
                and not self.transport.is_closing()):
            self._refuse_head()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_refused:
            return  # a request pipelined behind a refused one, in the same read
        if self._head_size > self.max_head_bytes:
            self._refuse_head()  # no request cycle is started: the app never sees it
            return
        super().on_headers_complete()

    # The parser goes on through the rest of the read in which a head was refused; what it
    # finds there belongs to a connection that is closing, and is dropped.
    def on_body(self, body: bytes) -> None:
        if not self._head_refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._head_refused:
            return
        super().on_message_complete()
        self._new_head()  # the next request on this connection

    def shutdown(self) -> None:
        """The server is stopping: tell the app first (api.stopping), so that an endless
        response (an SSE stream) ends now; Uvicorn only stops keep-alive on a connection
        whose response is still being sent, and then waits for it."""
        signal_stopping(self.app_state)
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        if not self._head_refused:  # already answered, with the 431
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        self._head_refused = True
        logger.warning("request head from %s over %d bytes: refused with 431",
                       self.client[0] if self.client else "?", self.max_head_bytes)
        body = problem_bytes(
            431, HEAD_TOO_LARGE, "Request header fields too large",
            f"the request line and headers are larger than {self.max_head_bytes} bytes",
            "", max_header_bytes=self.max_head_bytes)
        self.transport.write(b"".join([
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            b"content-type: ", PROBLEM_JSON.encode(), b"\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n",
            b"connection: close\r\n\r\n", body]))
        self.transport.close()


def with_head_limit(max_head_bytes: int) -> type[HeadLimitedHttpToolsProtocol]:
    return type("HeadLimitedHttpToolsProtocol", (HeadLimitedHttpToolsProtocol,),
                {"max_head_bytes": max_head_bytes})


class Worker(UvicornWorker):  # type: ignore[misc]  # untyped base
    """UvicornWorker with the limited HTTP protocol, and the WebSocket protocol that lets the
    live stream write a tick's frame once for all its clients (api.streams.frames). The limit
    is read in the worker process, just before it serves, from the same settings the app
    reads."""

    def init_process(self) -> None:
        self.config.http = with_head_limit(ApiSettings().max_request_header_bytes)
        self.config.ws = FrameWritingWebSocketsProtocol
        # Uvicorn tells Gunicorn it is alive once `timeout_notify` seconds have passed since
        # it last did, checking once a second from its event loop; uvicorn-worker sets that to
        # half of Gunicorn's `timeout`, which leaves a busy loop (one whose once-a-second check
        # runs late) only the other half before Gunicorn kills it (measured: both workers
        # killed while streaming to 5,000 clients). A sixth keeps five sixths for lateness.
        self.config.timeout_notify = max(1, self.cfg.timeout // 6)
        super().init_process()
