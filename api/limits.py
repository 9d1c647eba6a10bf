"""The request body limit, as a pure ASGI middleware outermost in the app: a body larger than
MAX_REQUEST_BODY_BYTES is refused with `413 request_too_large` before any route, dependency
or authentication sees it.

- A declared `Content-Length` above the limit is refused at once, without reading a byte of
  the body: the app is never called.
- A body without a length (chunked) is counted as the app reads it; the message that crosses
  the limit is not handed on. The 413 is sent in its place and the app is told that the
  client went away (`http.disconnect`), so it stops; anything it still tries to send is
  dropped.
- The 413 carries `Connection: close`: the server closes the connection instead of reading
  the rest of the body to find the next request.

The request line and headers are limited earlier, by the HTTP protocol itself (`api.server`),
because by the time an ASGI app is called the server has already read them whole.

Why not FastAPI's own `max_body_size`: it answers `text/plain` when the route never reads
the body, and it keeps the connection open for the rest of the body.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PROBLEM_JSON, problem_document

BODY_TOO_LARGE = "request_too_large"


def problem_bytes(status: int, code: str, title: str, detail: str, instance: str,
                  **extra: object) -> bytes:
    """The problem document (api.errors) as bytes, for answers given outside the app's
    exception handlers."""
    return json.dumps(problem_document(status, code, title, detail, instance, **extra),
                      ensure_ascii=False).encode()


class RequestBodyLimit:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._declared_too_large(Headers(scope=scope).get("content-length")):
            await self._refuse(scope, send)
            return

        received = 0
        refused = False
        response_started = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    refused = True
                    if not response_started:
                        await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # the 413 has been sent; the app's answer to the "disconnect" is moot
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)

    def _declared_too_large(self, declared: str | None) -> bool:
        # The server has checked the header's syntax; the length bound avoids converting
        # thousands of digits.
        digits = (declared or "").strip()
        return digits.isascii() and digits.isdigit() and (
            len(digits) > 20 or int(digits) > self.max_body_bytes)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = problem_bytes(
            413, BODY_TOO_LARGE, "Content too large",
            f"the request body is larger than {self.max_body_bytes} bytes",
            scope.get("path", ""), max_body_bytes=self.max_body_bytes)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})
