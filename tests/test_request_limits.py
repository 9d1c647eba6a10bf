"""Request size limits as a client meets them on the real server: Gunicorn with the API's
worker (gunicorn.conf.py, api/server.py) over raw sockets, so that what is sent, and what the
server answers before the client has finished sending, is exact.

- The request head (MAX_REQUEST_HEADER_BYTES): 431 problem+json from the HTTP protocol, for a
  complete head and for one that never ends; Gunicorn's own limit_request_* settings do not
  apply to Uvicorn workers (shown by one that would refuse everything here).
- The body (MAX_REQUEST_BODY_BYTES, api/limits.py): 413 problem+json on a declared length
  before any body byte is sent, and after about the limit of a chunked body, to a client that
  is not signed in.
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RedisServer
from tests.support.databases import SQLiteTemplate
from tests.support.env import free_port, scaled
from tests.support.platform import answers, environment, start_gunicorn, stop, wait_for

# One Gunicorn for the module, on one test worker (scripts/test.sh runs `--dist loadgroup`).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("request_limits")]

HEAD_LIMIT = 8192
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_redis_server: RedisServer,
           sqlite_template: SQLiteTemplate) -> Iterator[int]:
    """Gunicorn with one worker and small limits; Gunicorn's own header limits set to refuse
    any header over 100 bytes, to show that they are not the ones that apply. Shared by the
    module's tests: a refused request changes nothing, and the last check is that the worker
    lived through them all. The limits are met before any SQL, so SQLite serves."""
    folder = tmp_path_factory.mktemp("request-limits")
    port = free_port()
    log = folder / "gunicorn.log"
    env = environment(REDIS_URL=shared_redis_server.url,
                      DATABASE_URL=sqlite_template.copy_into(folder), PORT=str(port),
                      WEB_CONCURRENCY="1", MAX_REQUEST_HEADER_BYTES=str(HEAD_LIMIT),
                      MAX_REQUEST_BODY_BYTES=str(BODY_LIMIT),
                      GUNICORN_CMD_ARGS="--limit-request-field_size 100 "
                                        "--limit-request-line 100")
    gunicorn = start_gunicorn(env, log)
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/health"), "answer on /health", 60,
                 gunicorn, log)
        yield port
        assert answers(f"http://127.0.0.1:{port}/health")  # the worker lived through it all
    finally:
        stop(gunicorn, signal.SIGTERM, 30)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(scaled(10))
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one answer, read until the server closes."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def problem(answer: tuple[int, dict[str, str], bytes], status: int, code: str) -> Any:
    got_status, headers, body = answer
    assert got_status == status, body
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    document = json.loads(body)
    assert (document["status"], document["code"]) == (status, code)
    return document


def get_with_header(port: int, size: int) -> tuple[int, dict[str, str], bytes]:
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Pad: " + b"p" * size
                     + b"\r\nConnection: close\r\n\r\n")
        return read_answer(sock)


def test_a_request_head_over_the_limit_is_431_from_the_server(server: int) -> None:
    # Well over Gunicorn's limit_request_field_size (100), under ours: served.
    assert get_with_header(server, HEAD_LIMIT // 2)[0] == 200

    # Over ours, sent whole in one write.
    document = problem(get_with_header(server, HEAD_LIMIT), 431, "headers_too_large")
    assert document["max_header_bytes"] == HEAD_LIMIT
    # Many small headers count together, and so does the request line.
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n"
                     + b"".join(b"X-%d: v\r\n" % n for n in range(HEAD_LIMIT // 8))
                     + b"\r\n")
        problem(read_answer(sock), 431, "headers_too_large")
    with connect(server) as sock:
        sock.sendall(b"GET /health?" + b"q" * HEAD_LIMIT + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        problem(read_answer(sock), 431, "headers_too_large")


def test_a_head_that_never_ends_is_refused_once_past_the_limit(server: int) -> None:
    """One header left open: the answer comes although the head never ends, so the server
    did not wait for (or buffer) the rest of it."""
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Endless: " + b"e" * HEAD_LIMIT)
        problem(read_answer(sock), 431, "headers_too_large")


def test_a_declared_body_over_the_limit_is_413_before_a_byte_of_it_is_sent(
        server: int) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: test\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n")
        document = problem(read_answer(sock), 413, "request_too_large")
    assert document["max_body_bytes"] == BODY_LIMIT


def test_a_chunked_body_is_refused_once_past_the_limit(server: int) -> None:
    """Chunks a little past the limit, and the body left open (no last chunk): the 413 comes
    without the body ever ending, to a client that is not signed in."""
    with connect(server) as sock:
        sock.sendall(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: test\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(BODY_LIMIT // 4096 + 1):
            sock.sendall(b"1000\r\n" + b"c" * 4096 + b"\r\n")
        problem(read_answer(sock), 413, "request_too_large")


def test_the_head_limit_is_per_request_on_a_kept_alive_connection(server: int) -> None:
    """Three requests in one write, each head under the limit and all of them over it: all
    three are served, then a fourth, too large, is refused on the same connection."""
    def request(size: int, close: bool = False) -> bytes:
        return (b"GET /health HTTP/1.1\r\nHost: test\r\nX-Pad: " + b"p" * size + b"\r\n"
                + (b"Connection: close\r\n" if close else b"") + b"\r\n")

    with connect(server) as sock:
        sock.sendall(request(HEAD_LIMIT * 3 // 4) * 3)
        received = b""
        while received.count(b'{"status":"ok"}') < 3:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        assert received.count(b"HTTP/1.1 200 OK") == 3
        sock.sendall(request(HEAD_LIMIT, close=True))
        problem(read_answer(sock), 431, "headers_too_large")
