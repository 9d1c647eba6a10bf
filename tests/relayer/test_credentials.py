"""Where CONNECT credentials come from: settings, and the Toss guest key from a local server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from relayer.credentials import TossGuestKey, static_connect_headers
from relayer.settings import RelayerSettings
from relayer.upstream import AuthRejected, UpstreamError
from tests.support.http_server import CannedHttpServer, canned_http_server


@pytest.fixture
def token_server() -> Iterator[CannedHttpServer]:
    with canned_http_server() as server:
        yield server


async def test_guest_key_becomes_the_authorization_header(token_server: CannedHttpServer) -> None:
    token_server.answer = b'{"result": "guest-key-123"}'
    async with httpx.AsyncClient() as http:
        source = TossGuestKey(http, f"{token_server.url}/api/v1/refresh-utk", {"platform": "x"})
        assert await source.headers() == {"platform": "x", "authorization": "guest-key-123"}
        token_server.answer = b'{"result": "guest-key-456"}'
        assert (await source.headers())["authorization"] == "guest-key-456"  # fresh per connect
    assert [(m, p) for m, p, _, _ in token_server.received] == [
        ("GET", "/api/v1/refresh-utk"), ("GET", "/api/v1/refresh-utk")]


@pytest.mark.parametrize(("status", "answer", "error"), [
    (401, b"{}", AuthRejected),
    (403, b"{}", AuthRejected),
    (500, b"{}", UpstreamError),
    (200, b"not json", UpstreamError),
    (200, b'{"result": ""}', UpstreamError),
    (200, b'{"other": "x"}', UpstreamError),
])
async def test_guest_key_failures(token_server: CannedHttpServer, status: int, answer: bytes,
                                  error: type[Exception]) -> None:
    token_server.status, token_server.answer = status, answer
    async with httpx.AsyncClient() as http:
        with pytest.raises(error):
            await TossGuestKey(http, token_server.url, {}).headers()


async def test_unreachable_token_server_is_a_retryable_error() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(UpstreamError) as caught:
            await TossGuestKey(http, "http://127.0.0.1:9/none", {}).headers()
    assert not isinstance(caught.value, AuthRejected)


def test_static_headers_from_settings() -> None:
    settings = RelayerSettings(
        relayer_stomp_login="svc", relayer_stomp_passcode=SecretStr("pw"),
        relayer_stomp_host="/", relayer_stomp_headers=SecretStr('{"authorization": "Bearer t"}'),
    )
    assert static_connect_headers(settings) == {
        "host": "/", "login": "svc", "passcode": "pw", "authorization": "Bearer t"}


@pytest.mark.parametrize("raw", ["[1]", '{"a": 1}', "{not json"])
def test_static_headers_must_be_a_json_object_of_strings(raw: str) -> None:
    settings = RelayerSettings(relayer_stomp_headers=SecretStr(raw))
    with pytest.raises(ValueError, match="RELAYER_STOMP_HEADERS") as caught:
        static_connect_headers(settings)
    assert raw not in str(caught.value)
