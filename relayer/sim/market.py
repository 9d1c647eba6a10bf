"""A toy KRX market for the exchange simulator: prices on the tick grid, trades as Toss tick JSON.

Pure: no I/O, no clock (the caller passes `now`), and all randomness from one `random.Random`, so a
seed and the same sequence of calls reproduce the same ticks. It must never produce a price off the
KRX tick grid or outside the daily +/-30% limits: the relayer and the order book downstream trust
both, and the tests check them over tens of thousands of steps.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relayer.bus import INSTRUMENT_CODE, format_utc
from relayer.krx import price_limits, snap_down, tick_size

# Approximate reference prices (previous closes, KRW) of well-known KRX listings; each on the grid.
REFERENCE_PRICES: dict[str, int] = {
    "A005930": 70_000,  # Samsung Electronics
    "A000660": 200_000,  # SK hynix
    "A035420": 215_000,  # NAVER
    "A035720": 42_050,  # Kakao
    "A005380": 215_000,  # Hyundai Motor
    "A051910": 310_000,  # LG Chem
    "A006400": 276_500,  # Samsung SDI
    "A207940": 1_020_000,  # Samsung Biologics
    "A068270": 175_300,  # Celltrion
    "A005490": 290_000,  # POSCO Holdings
    "A028260": 150_200,  # Samsung C&T
    "A105560": 98_700,  # KB Financial Group
    "A055550": 55_600,  # Shinhan Financial Group
    "A012330": 262_000,  # Hyundai Mobis
    "A066570": 74_300,  # LG Electronics
    "A003550": 72_800,  # LG Corp
    "A096770": 110_500,  # SK Innovation
    "A017670": 56_700,  # SK Telecom
    "A030200": 48_250,  # KT
    "A034730": 162_000,  # SK Inc
    "A015760": 24_500,  # KEPCO
    "A032830": 95_600,  # Samsung Life Insurance
    "A086790": 62_300,  # Hana Financial Group
    "A316140": 16_880,  # Woori Financial Group
    "A024110": 14_920,  # Industrial Bank of Korea
    "A010130": 780_000,  # Korea Zinc
    "A009150": 128_400,  # Samsung Electro-Mechanics
    "A018260": 141_700,  # Samsung SDS
    "A011200": 18_650,  # HMM
    "A003670": 245_500,  # POSCO Future M
    "A010140": 9_870,  # Samsung Heavy Industries
    "A003280": 1_695,  # Heung-A Shipping (a sub-2,000 price, so the 1-won band is exercised)
}

SYNTHETIC_MIN_PRICE = 1_000
SYNTHETIC_MAX_PRICE = 300_000

# Trade quantity: log-normal around a typical order value, so a 1,000,000-won stock trades in
# ones and twos while a 2,000-won stock trades in hundreds, with the odd block trade.
_TYPICAL_ORDER_KRW = 250_000
_VOLUME_SIGMA = 1.2
_MAX_LOTS = 2_000
# Up to this many ticks per trade; small moves dominate as they do on a liquid book.
_STEP_WEIGHTS = ((0, 50), (1, 35), (2, 10), (3, 5))
# A pull back towards the reference price so a long run does not sit at the limits all day.
_REVERSION = 1.5
_MAX_BIAS = 0.2
_STRENGTH_CAP = 999.99  # reported while nobody has sold yet (buy / 0 is undefined)


def reference_price(code: str) -> int:
    """Previous close of a code: the table for well-known codes, else derived from the code.

    The derivation uses a stable hash (not `hash()`, which is salted per process) so every run and
    every process agrees on a synthetic instrument's price.
    """
    if not INSTRUMENT_CODE.fullmatch(code):
        raise ValueError(f"{code!r} is not an instrument code (A + 6 characters, e.g. A005930)")
    known = REFERENCE_PRICES.get(code)
    if known is not None:
        return known
    digest = int.from_bytes(hashlib.blake2b(code.encode(), digest_size=8).digest(), "big")
    span = SYNTHETIC_MAX_PRICE - SYNTHETIC_MIN_PRICE + 1
    return max(SYNTHETIC_MIN_PRICE, snap_down(SYNTHETIC_MIN_PRICE + digest % span))


def step_up(price: int) -> int:
    return price + tick_size(price)


def step_down(price: int) -> int:
    # The tick below a band boundary belongs to the lower band (2,000 -> 1,999, not 1,995).
    return price - tick_size(price - 1)


@dataclass(slots=True)
class CodeState:
    """One instrument's trading day so far."""

    base: int
    price: int
    lower: int
    upper: int
    cum_volume: int = 0
    cum_amount: int = 0
    buy_volume: int = 0
    sell_volume: int = 0

    @classmethod
    def open(cls, code: str) -> CodeState:
        base = reference_price(code)
        lower, upper = price_limits(base)
        return cls(base=base, price=base, lower=lower, upper=upper)

    @property
    def trading_strength(self) -> float:
        """체결강도: buy volume / sell volume * 100, two decimals."""
        if self.sell_volume == 0:
            return _STRENGTH_CAP if self.buy_volume else 100.0
        return round(self.buy_volume * 100 / self.sell_volume, 2)


class Market:
    """Trades for any number of instruments, one `next_tick` at a time."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._states: dict[str, CodeState] = {}

    def state(self, code: str) -> CodeState:
        """The day's state of a code, opened at its reference price on first use."""
        state = self._states.get(code)
        if state is None:
            state = self._states[code] = CodeState.open(code)
        return state

    def next_tick(self, code: str, now: datetime) -> dict[str, Any]:
        """Print one trade of `code` at `now` and return it as a Toss tick JSON object."""
        state = self.state(code)
        rng = self._rng
        steps = rng.choices([s for s, _ in _STEP_WEIGHTS], [w for _, w in _STEP_WEIGHTS])[0]
        # Above the reference price the walk leans down, below it leans up.
        drift = (state.price - state.base) / state.base * _REVERSION
        up_probability = 0.5 - max(-_MAX_BIAS, min(_MAX_BIAS, drift))
        up = rng.random() < up_probability
        price = state.price
        for _ in range(steps):
            price = step_up(price) if up else step_down(price)
        price = max(state.lower, min(state.upper, price))

        if price > state.price:
            trade_type = "BUY"  # the buyer lifted the offer
        elif price < state.price:
            trade_type = "SELL"
        else:
            trade_type = "BUY" if rng.random() < 0.5 else "SELL"
        typical = max(1.0, _TYPICAL_ORDER_KRW / price)
        volume = int(rng.lognormvariate(math.log(typical), _VOLUME_SIGMA))
        volume = max(1, min(int(_MAX_LOTS * typical), volume))

        state.price = price
        state.cum_volume += volume
        state.cum_amount += price * volume
        if trade_type == "BUY":
            state.buy_volume += volume
        else:
            state.sell_volume += volume

        if price > state.base:
            change_type = "UP"
        elif price < state.base:
            change_type = "DOWN"
        else:
            change_type = "FLAT"
        return {
            "code": code,
            "dt": format_utc(now),
            "session": "REGULAR",
            "exchange": "KRX",
            "currency": "KRW",
            "base": state.base,
            "close": price,
            "volume": volume,
            "tradeType": trade_type,
            "changeType": change_type,
            "tradingStrength": state.trading_strength,
            "cumulativeVolume": state.cum_volume,
            "cumulativeAmount": state.cum_amount,
        }
