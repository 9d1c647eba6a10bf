"""Where the STOMP CONNECT headers come from: static settings, or a key fetched before connecting.

Pluggable because the Toss guest key is an unofficial, browser-internal step (docs/UPSTREAM.md,
"Toss Securities") that may change or be replaced by a static header. Values returned here are
secrets: they are held in memory for one CONNECT and never logged (only header *names* are).
"""

from __future__ import annotations

from typing import Protocol

import httpx
import orjson

from relayer.settings import RelayerSettings
from relayer.upstream import AuthRejected, UpstreamError


class ConnectHeaderSource(Protocol):
    async def headers(self) -> dict[str, str]:
        """The credential-bearing CONNECT headers for the next connection."""
        ...


class StaticHeaders:
    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = dict(headers)

    async def headers(self) -> dict[str, str]:
        return dict(self._headers)


class TossGuestKey:
    """Fetches a Toss guest key (`GET refresh-utk` -> `{"result": key}`) before every connect.

    The key's lifetime is unknown, so a fresh one per connection is the safe choice.
    """

    def __init__(self, http: httpx.AsyncClient, url: str, static: dict[str, str]) -> None:
        self._http = http
        self._url = url
        self._static = dict(static)

    async def headers(self) -> dict[str, str]:
        try:
            response = await self._http.get(self._url)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"guest key request failed: {type(exc).__name__}") from exc
        if response.status_code in (401, 403):
            raise AuthRejected(f"guest key request refused with HTTP {response.status_code}")
        if response.status_code != 200:
            raise UpstreamError(f"guest key request answered HTTP {response.status_code}")
        try:
            key = orjson.loads(response.content)["result"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise UpstreamError("guest key answer has no string 'result'") from exc
        if not isinstance(key, str) or not key:
            raise UpstreamError("guest key answer has no string 'result'")
        return {**self._static, "authorization": key}


def static_connect_headers(settings: RelayerSettings) -> dict[str, str]:
    """login / passcode / host and RELAYER_STOMP_HEADERS, as CONNECT headers."""
    try:
        extra = orjson.loads(settings.relayer_stomp_headers.get_secret_value() or "{}")
    except orjson.JSONDecodeError as exc:
        # Never echo the value: it may hold a credential.
        raise ValueError("RELAYER_STOMP_HEADERS is not a JSON object") from exc
    if not isinstance(extra, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in extra.items()
    ):
        raise ValueError("RELAYER_STOMP_HEADERS must be a JSON object of strings")
    headers: dict[str, str] = {}
    if settings.relayer_stomp_host:
        headers["host"] = settings.relayer_stomp_host
    if settings.relayer_stomp_login:
        headers["login"] = settings.relayer_stomp_login
    if settings.relayer_stomp_passcode is not None:
        headers["passcode"] = settings.relayer_stomp_passcode.get_secret_value()
    headers.update(extra)
    return headers
