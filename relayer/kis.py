"""The Korea Investment (KIS) realtime format: messages in, subscribe messages out.

The pure half of the KIS adapter (docs/UPSTREAM.md, "Korea Investment"): it parses what the KIS
WebSocket sends (H0STCNT0 trade lines, JSON acks, PINGPONG) into values, builds the
subscribe/unsubscribe messages, and fetches the approval key the session starts with. It never
opens or reads a socket; the module that owns the connection feeds it text and sends what it
returns. The one network call, `fetch_approval_key`, goes through an injected
`httpx.AsyncClient`.

Errors:

    KisError            root of this module's own errors
     └── KisAuthError   the approval key could not be obtained (status, message; never the secret)
    MalformedTick       (from `relayer.quotes`) a server message that is not what we expect;
                        counted and skipped by the caller, never fatal
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import TypeAlias

import httpx
import orjson

from relayer.bus import INSTRUMENT_CODE
from relayer.quotes import MalformedTick, TradePrint, change_type, decimal_text, exact_int

TRADE_TR_ID = "H0STCNT0"  # KRX stock trade prints ("국내주식 실시간체결가")
PINGPONG_TR_ID = "PINGPONG"

_SEOUL = timezone(timedelta(hours=9), "KST")  # Korea has no daylight saving time
_FIELDS_PER_RECORD = 46
# H0STCNT0 columns we read (0-based); the others are order-book and statistics we do not carry.
_CODE, _TIME, _PRICE, _SIGN, _CHANGE = 0, 1, 2, 3, 4
_OPEN, _HIGH, _LOW = 7, 8, 9
_VOLUME, _CUM_VOLUME, _CUM_AMOUNT = 12, 13, 14
_STRENGTH, _SIDE, _DATE = 18, 21, 33

# Change sign: 1 upper limit, 2 up, 3 flat, 4 lower limit, 5 down.
_CHANGE_TYPES = {"1": "UP", "2": "UP", "3": "FLAT", "4": "DOWN", "5": "DOWN"}
_TRADE_TYPES = {"1": "BUY", "5": "SELL"}  # anything else (e.g. "3", pre-market) is UNKNOWN
_RECORD_COUNT = re.compile(r"[0-9]{1,4}")
_YYYYMMDD = re.compile(r"[0-9]{8}")
_HHMMSS = re.compile(r"[0-9]{6}")
_TR_ID = re.compile(r"[A-Z0-9]{1,16}")


class KisError(Exception):
    """Root of the errors raised by the KIS adapter."""


class KisAuthError(KisError):
    """The approval key request failed. `status` is the HTTP status when there was an answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class KisTrades:
    """One data line: its TR id and its records, in the order the upstream sent them."""

    tr_id: str
    trades: list[TradePrint]


@dataclass(frozen=True, slots=True)
class KisAck:
    """The server's answer to a subscribe or unsubscribe message.

    `already` is set for "ALREADY IN SUBSCRIBE" / "ALREADY IN UNSUBSCRIBE": not ok, but the
    state the caller asked for holds, so it may count it as a success.
    """

    tr_id: str
    tr_key: str | None
    ok: bool
    message: str
    raw: str
    already: bool = False


@dataclass(frozen=True, slots=True)
class KisPingPong:
    """A keep-alive; the server drops the session unless `raw` is sent back unchanged."""

    raw: str


KisMessage: TypeAlias = KisTrades | KisAck | KisPingPong


def parse_kis_message(text: str) -> KisMessage:
    """Classify and parse one server text message; anything unexpected raises MalformedTick."""
    # The first character tells the kind: JSON control message, plain data, encrypted data.
    if text.startswith("{"):
        return _parse_json(text)
    if text.startswith("0|"):
        return _parse_data_line(text)
    if text.startswith("1|"):
        raise MalformedTick("encrypted data is only used for notice TRs; not supported")
    raise MalformedTick(f"unknown KIS message: {text[:40]!r}")


def subscribe_message(
    approval_key: str, tr_id: str, code: str, *, register: bool, custtype: str = "P"
) -> str:
    """The text message that registers (or unregisters) one instrument on one TR.

    `code` may carry the bus "A" prefix (`A005930`) or not (`005930`); KIS wants it without.
    Bad arguments raise ValueError: they are our bug or config, and must not reach a server
    that blocks keys for misbehaving sessions.
    """
    tr_key = code[1:] if len(code) == 7 and code.startswith("A") else code
    # A 6-character code starting with "A" is a bus code missing a character, not a KRX code.
    if tr_key.startswith("A") or not INSTRUMENT_CODE.fullmatch("A" + tr_key):
        raise ValueError(f"invalid instrument code {code!r}")
    if not _TR_ID.fullmatch(tr_id):
        raise ValueError(f"invalid TR id {tr_id!r}")
    if not approval_key:
        raise ValueError("empty approval key")
    if custtype not in ("P", "B"):  # P personal, B business
        raise ValueError(f"invalid custtype {custtype!r}")
    message = {
        "header": {
            "approval_key": approval_key,
            "custtype": custtype,
            "tr_type": "1" if register else "2",
            "content-type": "utf-8",
        },
        "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}},
    }
    return orjson.dumps(message).decode()


async def fetch_approval_key(
    client: httpx.AsyncClient, rest_url: str, app_key: str, app_secret: str
) -> str:
    """Exchange the app key and secret for a WebSocket approval key (valid about 24 hours).

    Every failure, including network errors, is a KisAuthError; its message never contains the
    secret (or the app key), even if the server echoes them back.
    """
    url = f"{rest_url.rstrip('/')}/oauth2/Approval"
    payload = {"grant_type": "client_credentials", "appkey": app_key, "secretkey": app_secret}

    def redact(text: str) -> str:
        for credential in (app_secret, app_key):
            if credential:
                text = text.replace(credential, "***")
        return text

    try:
        response = await client.post(url, json=payload)
    except httpx.HTTPError as exc:
        raise KisAuthError(redact(f"approval key request to {url} failed: {exc!r}")) from exc
    status = response.status_code
    if not response.is_success:
        raise KisAuthError(
            redact(f"approval key request answered HTTP {status}: {response.text[:300]}"), status
        )
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise KisAuthError(f"approval key answer is not JSON (HTTP {status})", status) from exc
    key = data.get("approval_key") if isinstance(data, dict) else None
    if not isinstance(key, str) or not key:
        raise KisAuthError(f"approval key answer has no approval_key (HTTP {status})", status)
    return key


def _parse_json(text: str) -> KisAck | KisPingPong:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedTick(f"KIS control message is not JSON: {exc}") from exc
    header = data.get("header") if isinstance(data, dict) else None
    if not isinstance(header, dict):
        raise MalformedTick("KIS control message has no header object")
    tr_id = header.get("tr_id")
    if not isinstance(tr_id, str) or not tr_id:
        raise MalformedTick(f"KIS control message has no tr_id: {text[:80]!r}")
    if tr_id == PINGPONG_TR_ID:
        return KisPingPong(raw=text)
    body = data.get("body")
    rt_cd = body.get("rt_cd") if isinstance(body, dict) else None
    if not isinstance(rt_cd, str):
        raise MalformedTick(f"KIS ack for {tr_id} has no body.rt_cd")
    msg1 = body.get("msg1") if isinstance(body, dict) else None
    message = msg1.strip() if isinstance(msg1, str) else ""
    tr_key = header.get("tr_key")
    return KisAck(
        tr_id=tr_id,
        tr_key=tr_key if isinstance(tr_key, str) and tr_key else None,
        ok=rt_cd == "0",
        message=message,
        raw=text,
        already=message.upper().startswith("ALREADY IN"),
    )


def _parse_data_line(text: str) -> KisTrades:
    parts = text.split("|", 3)
    if len(parts) != 4:
        raise MalformedTick(f"KIS data line has no payload: {text[:40]!r}")
    _flag, tr_id, count_text, payload = parts
    if tr_id != TRADE_TR_ID:
        raise MalformedTick(f"unsupported KIS TR {tr_id!r}")
    if not _RECORD_COUNT.fullmatch(count_text) or int(count_text) == 0:
        raise MalformedTick(f"{tr_id}: invalid record count {count_text!r}")
    count = int(count_text)
    fields = payload.split("^")
    # A count/field mismatch means the columns are shifted: no record in the line can be trusted.
    if len(fields) != count * _FIELDS_PER_RECORD:
        raise MalformedTick(
            f"{tr_id}: {count} record(s) need {count * _FIELDS_PER_RECORD} fields,"
            f" got {len(fields)}"
        )
    trades = [
        _parse_trade(fields[start : start + _FIELDS_PER_RECORD])
        for start in range(0, len(fields), _FIELDS_PER_RECORD)
    ]
    return KisTrades(tr_id=tr_id, trades=trades)


def _parse_trade(f: list[str]) -> TradePrint:
    code = "A" + f[_CODE]
    if not INSTRUMENT_CODE.fullmatch(code):
        raise MalformedTick(f"invalid instrument code {f[_CODE]!r}")
    price = exact_int(f[_PRICE], "price")
    change = exact_int(f[_CHANGE], "change")
    direction = _CHANGE_TYPES.get(f[_SIGN])
    if direction is None:
        raise MalformedTick(f"{code}: unknown change sign {f[_SIGN]!r}")
    # base = price - change only holds if `change` is signed; a sign that disagrees with it
    # would silently shift the reference price, so refuse the record instead.
    if change_type(change) != direction:
        raise MalformedTick(f"{code}: change {change} disagrees with sign {f[_SIGN]!r}")
    base = price - change
    if price <= 0 or base <= 0:
        raise MalformedTick(f"{code}: non-positive price {price} or base {base}")
    ts, trading_day = _kst_timestamp(f[_DATE], f[_TIME])
    return TradePrint(
        code=code,
        price=price,
        base=base,
        volume=exact_int(f[_VOLUME], "volume"),
        cum_volume=exact_int(f[_CUM_VOLUME], "cumulative volume"),
        cum_amount=exact_int(f[_CUM_AMOUNT], "cumulative amount"),
        ts=ts,
        trading_day=trading_day,
        trade_type=_TRADE_TYPES.get(f[_SIDE], "UNKNOWN"),
        change_type=direction,
        trading_strength=decimal_text(f[_STRENGTH] or None, "trading strength"),
        session=None,
        exchange="KRX",
        currency="KRW",
        open=exact_int(f[_OPEN], "open"),
        high=exact_int(f[_HIGH], "high"),
        low=exact_int(f[_LOW], "low"),
    )


@lru_cache(maxsize=4096)  # thousands of prints share a second
def _kst_timestamp(date: str, time: str) -> tuple[str, str]:
    """(UTC `YYYY-MM-DDTHH:MM:SSZ`, KST trading day `YYYY-MM-DD`) from KIS date and time."""
    if not _YYYYMMDD.fullmatch(date) or not _HHMMSS.fullmatch(time):
        raise MalformedTick(f"invalid business date {date!r} or time {time!r}")
    try:
        moment = datetime(
            int(date[:4]), int(date[4:6]), int(date[6:]),
            int(time[:2]), int(time[2:4]), int(time[4:]),
            tzinfo=_SEOUL,
        )  # fmt: skip
    except ValueError as exc:
        raise MalformedTick(f"impossible business date {date!r} or time {time!r}") from exc
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), moment.strftime("%Y-%m-%d")
