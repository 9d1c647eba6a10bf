"""A tiny local HTTP server with a canned answer, for the credential steps of the upstreams."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CannedHttpServer(ThreadingHTTPServer):
    """Answers every GET and POST with `status` and `answer`, recording each request as
    (method, path, content type, body)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CannedHandler)
        self.status = 200
        self.answer = b""
        self.received: list[tuple[str, str, str | None, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _CannedHandler(BaseHTTPRequestHandler):
    server: CannedHttpServer

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append(
            (self.command, self.path, self.headers.get("Content-Type"), body)
        )
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output to what the test says


@contextmanager
def canned_http_server() -> Iterator[CannedHttpServer]:
    server = CannedHttpServer()
    # A short poll interval so shutdown() returns quickly.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
