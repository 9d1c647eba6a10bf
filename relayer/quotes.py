"""From an upstream trade print to the bus `Quote`.

Each upstream adapter parses its own wire format into a `TradePrint` (exact integers, a UTC
timestamp string); `QuoteBuilder` adds what the relayer owns: the day's open/high/low when the
upstream does not send them, `received_at` and `seq`. Pure apart from the clock, which is
injectable for tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache

from relayer.bus import Quote

KST = timedelta(hours=9)
_CENT = Decimal("0.01")
_HUNDRED = Decimal(100)


class MalformedTick(ValueError):
    """An upstream payload that cannot be a trade print. Counted and skipped, never fatal."""


@dataclass(slots=True)
class TradePrint:
    """One trade as the upstream reported it, already validated and exact."""

    code: str
    price: int
    base: int
    volume: int
    cum_volume: int
    cum_amount: int
    ts: str  # ISO 8601 UTC, whole seconds, `Z`: lexical order is time order
    trading_day: str  # YYYY-MM-DD in Korea (KST), the day open/high/low belong to
    trade_type: str = "UNKNOWN"
    change_type: str | None = None
    trading_strength: str | None = None
    session: str | None = None
    exchange: str | None = None
    currency: str = "KRW"
    open: int | None = None
    high: int | None = None
    low: int | None = None


@dataclass(slots=True)
class _DayStats:
    trading_day: str
    open: int
    high: int
    low: int


class QuoteBuilder:
    """Turns trade prints into quotes, keeping per-instrument day statistics.

    `seq` starts at the wall-clock time in microseconds and counts up by one per tick, so it keeps
    increasing across relayer restarts as long as the relayer averages under a million ticks a
    second over its life.
    """

    __slots__ = ("_clock", "_day_stats", "_received_millis", "_received_prefix",
                 "_received_second", "_received_text", "_seq")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seq = int(clock() * 1_000_000)
        self._day_stats: dict[str, _DayStats] = {}
        self._received_millis = -1
        self._received_second = -1
        self._received_prefix = ""
        self._received_text = ""

    def seed_day(self, quote: Quote) -> None:
        """Resume a day's open/high/low from the quote already in Redis (after a restart)."""
        if quote.code in self._day_stats:
            return
        self._day_stats[quote.code] = _DayStats(
            trading_day_of(quote.ts), quote.open, quote.high, quote.low
        )

    def build(self, trade: TradePrint) -> Quote:
        price = trade.price
        day = self._day_stats.get(trade.code)
        if day is None or trade.trading_day > day.trading_day:
            day = _DayStats(trade.trading_day, price, price, price)
            self._day_stats[trade.code] = day
        elif trade.trading_day == day.trading_day:
            day.high = max(day.high, price)
            day.low = min(day.low, price)
        else:
            # A late print from an earlier day must not reset today's figures.
            day = _DayStats(trade.trading_day, price, price, price)
        # The upstream's own figures win when it sends them; ours track them for later ticks.
        if trade.open is not None:
            day.open = trade.open
        if trade.high is not None:
            day.high = trade.high
        if trade.low is not None:
            day.low = trade.low

        change = price - trade.base
        self._seq += 1
        return Quote(
            code=trade.code,
            price=price,
            base=trade.base,
            change=change,
            change_rate=change_rate(change, trade.base),
            change_type=trade.change_type or change_type(change),
            volume=trade.volume,
            cum_volume=trade.cum_volume,
            cum_amount=trade.cum_amount,
            trade_type=trade.trade_type,
            trading_strength=trade.trading_strength,
            open=day.open,
            high=day.high,
            low=day.low,
            session=trade.session,
            exchange=trade.exchange,
            currency=trade.currency,
            ts=trade.ts,
            received_at=self._received_at(),
            seq=self._seq,
        )

    def _received_at(self) -> str:
        # Dozens of ticks share a millisecond at high rates: format each millisecond once.
        millis = int(self._clock() * 1000)
        if millis != self._received_millis:
            self._received_millis = millis
            second, fraction = divmod(millis, 1000)
            if second != self._received_second:
                self._received_second = second
                self._received_prefix = datetime.fromtimestamp(second, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%S."
                )
            self._received_text = f"{self._received_prefix}{fraction:03d}Z"
        return self._received_text


@lru_cache(maxsize=65536)  # prices move on a tick grid: the same pairs recur all day
def change_rate(change: int, base: int) -> str:
    """Percent change against the reference price, two decimals, half up: "0.99", "-1.25"."""
    if base <= 0:
        return "0.00"
    rate = (Decimal(change) * _HUNDRED / Decimal(base)).quantize(_CENT, ROUND_HALF_UP)
    return str(rate)


def change_type(change: int) -> str:
    return "UP" if change > 0 else "DOWN" if change < 0 else "FLAT"


def exact_int(value: object, name: str) -> int:
    """An exact integer from JSON: ints, integral floats and digit strings; anything else raises."""
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    # int() alone would also take " 71200", "+71200" and "71_200": not what an upstream sends.
    if isinstance(value, str) and value.removeprefix("-").isdigit() and value.isascii():
        return int(value)
    raise MalformedTick(f"{name} is not an exact integer: {value!r}")


def count_int(value: object, name: str) -> int:
    """A non-negative exact integer (volumes, amounts)."""
    number = value if type(value) is int else exact_int(value, name)
    if number < 0:
        raise MalformedTick(f"{name} is negative: {number}")
    return number


def decimal_text(value: object, name: str) -> str | None:
    """A two-decimal string ("112.30") from a JSON number or numeric string; None if absent."""
    if value is None:
        return None
    if type(value) is float and math.isfinite(value) and value == round(value, 2):
        # Fast path for what feeds send (112.3): the double nearest a two-decimal number prints
        # as exactly that number, so this equals the Decimal route below.
        return f"{value:.2f}"
    try:
        # repr() of a float is its shortest round-trip form, so 112.3 stays 112.3, not 112.2999...
        number = Decimal(repr(value) if isinstance(value, float) else str(value))
        if not number.is_finite():  # quantize() lets a quiet "NaN" through unchanged
            raise InvalidOperation
        return str(number.quantize(_CENT, ROUND_HALF_UP))
    except (InvalidOperation, ValueError) as exc:
        raise MalformedTick(f"{name} is not a number: {value!r}") from exc


_timestamp_cache: dict[str, tuple[str, str]] = {}


def normalize_timestamp(raw: object) -> tuple[str, str]:
    """(UTC timestamp `YYYY-MM-DDTHH:MM:SSZ`, KST trading day) from an upstream ISO 8601 time.

    Cached: thousands of ticks share the same second.
    """
    if not isinstance(raw, str):
        raise MalformedTick(f"timestamp is not a string: {raw!r}")
    cached = _timestamp_cache.get(raw)
    if cached is not None:
        return cached
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise MalformedTick(f"timestamp is not ISO 8601: {raw!r}") from exc
    if moment.tzinfo is None:
        raise MalformedTick(f"timestamp has no time zone: {raw!r}")
    try:
        moment = moment.astimezone(UTC)
        kst_moment = moment + KST
    except OverflowError as exc:  # year 1 or 9999 pushed out of range by the offset
        raise MalformedTick(f"timestamp out of range: {raw!r}") from exc
    result = (moment.strftime("%Y-%m-%dT%H:%M:%SZ"), kst_moment.strftime("%Y-%m-%d"))
    if len(_timestamp_cache) > 4096:
        _timestamp_cache.clear()
    _timestamp_cache[raw] = result
    return result


def trading_day_of(ts: str) -> str:
    return normalize_timestamp(ts)[1]
