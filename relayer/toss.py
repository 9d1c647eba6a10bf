"""The Toss Securities trade-tick format (also spoken by the simulator and the `stomp` adapter).

One JSON object per STOMP MESSAGE body; see docs/UPSTREAM.md, "Toss Securities". Parsing is
defensive: unknown keys are ignored, optional keys may be missing, numbers must be exact, and
anything that is not a trade print raises `MalformedTick` for the caller to count and skip.
"""

from __future__ import annotations

import orjson

from relayer.bus import INSTRUMENT_CODE
from relayer.quotes import (
    MalformedTick,
    TradePrint,
    count_int,
    decimal_text,
    exact_int,
    normalize_timestamp,
)

# Codes already validated: a feed repeats a few hundred codes all day, the regex need not.
_valid_codes: set[str] = set()
_VALID_CODES_MAX = 10_000


def parse_toss_tick(body: bytes) -> TradePrint:
    """Parse one tick body. Runs for every tick: exact ints take an inline fast path."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedTick(f"body is not JSON: {exc}") from exc
    if type(data) is not dict:
        raise MalformedTick("body is not a JSON object")
    get = data.get
    code = get("code")
    if code not in _valid_codes:
        if not isinstance(code, str) or not INSTRUMENT_CODE.fullmatch(code):
            raise MalformedTick(f"invalid instrument code {code!r}")
        if len(_valid_codes) >= _VALID_CODES_MAX:
            _valid_codes.clear()
        _valid_codes.add(code)
    price = get("close")
    if type(price) is not int:
        price = exact_int(price, "close")
    base = get("base")
    if type(base) is not int:
        base = exact_int(base, "base")
    if price <= 0 or base <= 0:
        raise MalformedTick(f"non-positive price {price} or base {base}")
    ts, trading_day = normalize_timestamp(get("dt"))
    return TradePrint(  # positional, in field order: keywords cost a measurable share here
        code,
        price,
        base,
        count_int(get("volume", 0), "volume"),
        count_int(get("cumulativeVolume", 0), "cumulativeVolume"),
        count_int(get("cumulativeAmount", 0), "cumulativeAmount"),
        ts,
        trading_day,
        _text(get("tradeType")) or "UNKNOWN",
        _text(get("changeType")),
        decimal_text(get("tradingStrength"), "tradingStrength"),
        _text(get("session")),
        _text(get("exchange")),
        _text(get("currency")) or "KRW",
        _optional_int(get("open"), "open"),
        _optional_int(get("high"), "high"),
        _optional_int(get("low"), "low"),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _optional_int(value: object, name: str) -> int | None:
    return None if value is None else exact_int(value, name)
