"""The live stream's wire protocol (docs/api/STREAMS.md): what a client may send, parsed into
typed operations, and every message the server sends, as JSON bytes.

Pure: no I/O, no clock, no Redis. The connection loops (api.streams.ws, api.streams.sse) feed
text in and send the bytes out; the tests feed it strings.

Errors: `ProtocolError` (a message the server answers with `{"type": "error", ...}` and keeps
the connection) carries a stable `code`, like the REST API's problem documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import orjson

from api.errors import Unprocessable
from api.ids import MAX_ROW_ID
from api.instruments.codes import unique_codes


class CloseCode(IntEnum):
    """WebSocket close codes (4000-4999 are the application's, RFC 6455 section 7.4.2)."""

    GOING_AWAY = 1001  # the server is shutting down: reconnect to another worker
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    UNAUTHORIZED = 4401  # no, a bad, or an expired token (past the grace period)
    IDLE = 4408  # the client sent nothing for STREAM_IDLE_TIMEOUT_S
    SLOW_CLIENT = 4429  # it could not keep up: a send blocked, or too much was pending


class Channel(StrEnum):
    QUOTES = "quotes"
    ORDERS = "orders"
    MARKET = "market"


class ProtocolError(ValueError):
    """A client message the server refuses; answered with an `error` message."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


# --- What a client sends ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Auth:
    token: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: Channel
    codes: tuple[str, ...] = ()  # quotes: bus form, validated, without repeats
    since: str | None = None  # orders: the last offset the client has
    portfolio_id: int | None = None  # orders: the portfolio followed; None: the default one


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: Channel
    codes: tuple[str, ...] = ()  # quotes: empty means every code
    portfolio_id: int | None = None  # orders: the portfolio left; None: the default one


@dataclass(frozen=True, slots=True)
class Ping:
    pass


Operation = Auth | Subscribe | Unsubscribe | Ping


def parse_operation(text: str | bytes) -> Operation:
    """One client message; ProtocolError for anything this protocol does not say."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("invalid_message", "a message is one JSON object") from exc
    if not isinstance(message, dict):
        raise ProtocolError("invalid_message", "a message is one JSON object")
    op = message.get("op")
    if op == "ping":
        return Ping()
    if op == "auth":
        token = message.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError("invalid_message", "auth needs a `token` (an access token)")
        return Auth(token)
    if op in ("subscribe", "unsubscribe"):
        channel = _channel(message.get("channel"))
        codes = _codes(message.get("codes"), required=(op == "subscribe"
                                                       and channel is Channel.QUOTES))
        portfolio_id = _portfolio_id(message.get("portfolio_id"), channel)
        if op == "unsubscribe":
            return Unsubscribe(channel, codes, portfolio_id)
        since = message.get("since")
        if since is not None and not isinstance(since, str | int):
            raise ProtocolError("invalid_message", "`since` is an offset the server sent")
        return Subscribe(channel, codes, None if since is None else str(since), portfolio_id)
    raise ProtocolError("unknown_op", f"unknown op {op!r}: auth, subscribe, unsubscribe or ping")


def _channel(value: object) -> Channel:
    try:
        return Channel(str(value))
    except ValueError:
        raise ProtocolError("unknown_channel",
                            f"unknown channel {value!r}: quotes, orders or market") from None


def _portfolio_id(value: object, channel: Channel) -> int | None:
    """The portfolio an orders (un)subscription names, as REST's X-Portfolio-Id takes it: an
    id from 1 to 2^63-1, here a JSON integer. Whether it is one of the user's is the session's
    to check (it needs SQL); this is the shape only."""
    if value is None:
        return None
    if channel is not Channel.ORDERS:
        raise ProtocolError("invalid_message", "`portfolio_id` is for the orders channel")
    # bool is an int in Python; `true` is not an id.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ROW_ID:
        raise ProtocolError("invalid_message", "`portfolio_id` is the id of one of your "
                            "portfolios: an integer from 1 to 2^63-1")
    return value


def _codes(value: object, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ProtocolError("invalid_message", "`codes` is a non-empty list of instrument codes")
    return parse_codes(value)


def parse_codes(texts: list[str]) -> tuple[str, ...]:
    """Instrument codes as the REST API takes them (api.instruments.codes); `invalid_code`."""
    try:
        return tuple(unique_codes(texts))
    except Unprocessable as exc:
        raise ProtocolError(exc.code, exc.detail) from exc


# --- What the server sends --------------------------------------------------------------------
# Each builder returns the JSON bytes a WebSocket sends as a text frame, and an SSE `data:` line.

def error(code: str, message: str, **extra: Any) -> bytes:
    return orjson.dumps({"type": "error", "code": code, "message": message, **extra})


def pong() -> bytes:
    return b'{"type":"pong"}'


def ping() -> bytes:
    return b'{"type":"ping"}'


def authenticated(user_id: int, expires_at: float) -> bytes:
    return orjson.dumps({"type": "authenticated", "user_id": user_id,
                         "expires_at": int(expires_at)})


def auth_expired(grace_s: float) -> bytes:
    return orjson.dumps({"type": "auth_expired", "grace_s": grace_s})


# `portfolio_id` (orders): only when the client named a portfolio; a client that never does
# gets the messages it got before portfolios existed, byte for byte.

def subscribed(channel: Channel, codes: tuple[str, ...] = (),
               portfolio_id: int | None = None) -> bytes:
    body: dict[str, Any] = {"type": "subscribed", "channel": channel.value}
    if codes:
        body["codes"] = list(codes)
    if portfolio_id is not None:
        body["portfolio_id"] = portfolio_id
    return orjson.dumps(body)


def unsubscribed(channel: Channel, codes: tuple[str, ...] = (),
                 portfolio_id: int | None = None) -> bytes:
    body: dict[str, Any] = {"type": "unsubscribed", "channel": channel.value}
    if codes:
        body["codes"] = list(codes)
    if portfolio_id is not None:
        body["portfolio_id"] = portfolio_id
    return orjson.dumps(body)


def quote(kind: str, data: dict[str, Any]) -> bytes:
    """`snapshot` or `update` of one quote (the REST answer's shape)."""
    return orjson.dumps({"channel": "quotes", "type": kind, "data": data})


def quote_missing(code: str) -> bytes:
    """A snapshot of a code without a quote yet: `data` null, updates follow its first print."""
    return orjson.dumps({"channel": "quotes", "type": "snapshot", "code": code, "data": None})


def gap(codes: list[str]) -> bytes:
    return orjson.dumps({"channel": "quotes", "type": "gap", "codes": codes})


def market_session(data: dict[str, Any]) -> bytes:
    return orjson.dumps({"channel": "market", "type": "session", "data": data})


def orders_reset(portfolio_id: int | None = None) -> bytes:
    if portfolio_id is None:
        return b'{"channel":"orders","type":"reset"}'
    return orjson.dumps({"channel": "orders", "type": "reset", "portfolio_id": portfolio_id})


def order_event(kind: str, offset: str, data: Any) -> bytes:
    return orjson.dumps({"channel": "orders", "type": kind, "offset": offset, "data": data})


def message_type(message: bytes) -> str:
    """The `type` of a message built here (the SSE event name). Parses: not for hot paths."""
    kind = orjson.loads(message).get("type")
    return kind if isinstance(kind, str) else "message"
