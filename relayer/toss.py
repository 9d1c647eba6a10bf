"""The Toss Securities trade-tick format (also spoken by the simulator and the `stomp` adapter).

One JSON object per STOMP MESSAGE body; see UPSTREAM.md section 1. Parsing is defensive: unknown
keys are ignored, optional keys may be missing, numbers must be exact, and anything that is not a
trade print raises `MalformedTick` for the caller to count and skip.
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


def parse_toss_tick(body: bytes) -> TradePrint:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedTick(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedTick("body is not a JSON object")
    code = data.get("code")
    if not isinstance(code, str) or not INSTRUMENT_CODE.fullmatch(code):
        raise MalformedTick(f"invalid instrument code {code!r}")
    price = exact_int(data.get("close"), "close")
    base = exact_int(data.get("base"), "base")
    if price <= 0 or base <= 0:
        raise MalformedTick(f"non-positive price {price} or base {base}")
    ts, trading_day = normalize_timestamp(data.get("dt"))
    get = data.get
    return TradePrint(
        code=code,
        price=price,
        base=base,
        volume=count_int(get("volume", 0), "volume"),
        cum_volume=count_int(get("cumulativeVolume", 0), "cumulativeVolume"),
        cum_amount=count_int(get("cumulativeAmount", 0), "cumulativeAmount"),
        ts=ts,
        trading_day=trading_day,
        trade_type=_text(get("tradeType")) or "UNKNOWN",
        change_type=_text(get("changeType")),
        trading_strength=decimal_text(get("tradingStrength"), "tradingStrength"),
        session=_text(get("session")),
        exchange=_text(get("exchange")),
        currency=_text(get("currency")) or "KRW",
        open=_optional_int(get("open"), "open"),
        high=_optional_int(get("high"), "high"),
        low=_optional_int(get("low"), "low"),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _optional_int(value: object, name: str) -> int | None:
    return None if value is None else exact_int(value, name)
