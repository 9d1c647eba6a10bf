"""A toy KRX market for the exchange simulator: prices on the tick grid, trades as Toss tick JSON.

Pure: no I/O, no clock (the caller passes `now`), and all randomness from one `random.Random`, so a
seed and the same sequence of calls reproduce the same ticks. Its instruments (a reference price
and the `PriceRules` of each code) are handed in as a plain mapping, read from the KRX master
files by the caller (`relayer.sim.instruments`); a code the mapping lacks is a synthetic stock.
It must never produce a price off an instrument's tick grid or outside its daily limits (a
KODEX ETF on the 5-won grid, a KONEX stock within +/-15%): the relayer and the order checks
downstream trust both, and the tests check them over tens of thousands of steps.

Sessions: the caller (relayer.sim.session, with relayer.sim.trading_hours) decides when the market
prints; this module only makes the print. A continuous print (`next_tick`) carries the wire
session `REGULAR`; an auction print (`auction_tick`) is one price per instrument, day and auction,
the same for every connection that asks. Given a trading day (`day`), an instrument's state rolls
at the first print of a new day: the base becomes the previous day's last price, and the limits
and the day's totals follow (`CodeState.roll`).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

from relayer.bus import INSTRUMENT_CODE, format_utc
from relayer.krx import STOCK, PriceRules
from relayer.market_calendar import Session

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

# The call auctions: one price where the orders collected since the auction began cross. The
# opening price gaps further from the previous close than a continuous step moves (a night's
# news), the closing one less; both trade a block of several typical orders.
_OPENING_GAP_WEIGHTS = ((0, 30), (1, 25), (2, 15), (3, 10), (5, 10), (8, 6), (12, 4))
_CLOSING_GAP_WEIGHTS = ((0, 50), (1, 30), (2, 15), (3, 5))
_AUCTION_ORDERS = 40.0  # typical orders in an auction's volume (log-normal around it)

# The `session` a print carries on the wire. Toss's value for Korean continuous trading is not
# known (captures elide it; a public US sample says "DAY"): `REGULAR` is what this simulator has
# always sent and the relayer passes through as text. The auctions get names of their own, so a
# reader can tell the single-price prints (docs/UPSTREAM.md, "The simulator").
WIRE_SESSIONS: dict[Session, str] = {
    Session.OPENING_AUCTION: "OPENING_AUCTION",
    Session.CONTINUOUS: "REGULAR",
    Session.CLOSING_AUCTION: "CLOSING_AUCTION",
}


class Instrument(NamedTuple):
    """What the simulator knows of one code: its previous close (None: not known, derived from
    the code) and the grid and daily limit its prices obey."""

    base_price: int | None
    rules: PriceRules


SYNTHETIC = Instrument(None, STOCK)  # a code the simulator was given nothing about


def synthetic_price(code: str, rules: PriceRules = STOCK) -> int:
    """A stable previous close derived from the code, on the grid of `rules`.

    The derivation uses a stable hash (not `hash()`, which is salted per process) so every run and
    every process agrees on a synthetic instrument's price.
    """
    if not INSTRUMENT_CODE.fullmatch(code):
        raise ValueError(f"{code!r} is not an instrument code (A + 6 characters, e.g. A005930)")
    digest = int.from_bytes(hashlib.blake2b(code.encode(), digest_size=8).digest(), "big")
    span = SYNTHETIC_MAX_PRICE - SYNTHETIC_MIN_PRICE + 1
    return max(SYNTHETIC_MIN_PRICE, rules.snap_down(SYNTHETIC_MIN_PRICE + digest % span))


def reference_price(code: str, instrument: Instrument = SYNTHETIC) -> int:
    """Previous close of a code: the instrument's base price when known and positive, moved
    down onto its grid (a master file's price always is on it), else `synthetic_price`."""
    if not INSTRUMENT_CODE.fullmatch(code):
        raise ValueError(f"{code!r} is not an instrument code (A + 6 characters, e.g. A005930)")
    base, rules = instrument
    if base is not None and base > 0:
        return rules.snap_down(base)
    return synthetic_price(code, rules)


def step_up(price: int, rules: PriceRules) -> int:
    return price + rules.tick_size(price)


def step_down(price: int, rules: PriceRules) -> int:
    # The tick below a band boundary belongs to the lower band (2,000 -> 1,999, not 1,995).
    return price - rules.tick_size(price - 1)


@dataclass(slots=True)
class CodeState:
    """One instrument's trading day so far."""

    rules: PriceRules
    base: int
    price: int
    lower: int
    upper: int
    cum_volume: int = 0
    cum_amount: int = 0
    buy_volume: int = 0
    sell_volume: int = 0
    day: date | None = None  # the trading day of these figures; None: days are not followed
    # This day's auction prints by session, so that every connection gets the same one.
    auctions: dict[Session, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, code: str, instrument: Instrument = SYNTHETIC,
             day: date | None = None) -> CodeState:
        base = reference_price(code, instrument)
        lower, upper = instrument.rules.price_limits(base)
        return cls(rules=instrument.rules, base=base, price=base, lower=lower, upper=upper,
                   day=day)

    def roll(self, day: date) -> None:
        """Start trading day `day`: the last price (the previous day's close, always on the
        grid) becomes the base, the limits are the instrument's around it, the totals restart."""
        self.base = self.price
        self.lower, self.upper = self.rules.price_limits(self.base)
        self.cum_volume = self.cum_amount = self.buy_volume = self.sell_volume = 0
        self.auctions = {}
        self.day = day

    @property
    def trading_strength(self) -> float:
        """체결강도: buy volume / sell volume * 100, two decimals."""
        if self.sell_volume == 0:
            return _STRENGTH_CAP if self.buy_volume else 100.0
        return round(self.buy_volume * 100 / self.sell_volume, 2)


class Market:
    """Trades for any number of instruments, one `next_tick` at a time.

    `instruments` maps codes to what is known of them (from the master files); every other code
    trades as a synthetic stock. The mapping is read, never changed.
    """

    def __init__(
        self, seed: int | None = None, instruments: Mapping[str, Instrument] | None = None
    ) -> None:
        self._rng = random.Random(seed)
        self._instruments: Mapping[str, Instrument] = instruments or {}
        self._states: dict[str, CodeState] = {}

    def instrument(self, code: str) -> Instrument:
        """What the market was given about a code, or `SYNTHETIC`."""
        return self._instruments.get(code, SYNTHETIC)

    def state(self, code: str, day: date | None = None) -> CodeState:
        """The state of a code, opened at its reference price on first use; given a trading day
        later than the state's, rolled to it first (`CodeState.roll`)."""
        state = self._states.get(code)
        if state is None:
            state = self._states[code] = CodeState.open(code, self.instrument(code), day)
        elif day is not None and day != state.day:
            if state.day is None:
                state.day = day  # the first day it is told of: its base is the master's
            else:
                state.roll(day)
        return state

    def next_tick(self, code: str, now: datetime, day: date | None = None) -> dict[str, Any]:
        """Print one continuous trade of `code` at `now` (of trading day `day`, if the caller
        follows days) and return it as a Toss tick JSON object."""
        state = self.state(code, day)
        rng = self._rng
        steps = rng.choices([s for s, _ in _STEP_WEIGHTS], [w for _, w in _STEP_WEIGHTS])[0]
        # Above the reference price the walk leans down, below it leans up.
        drift = (state.price - state.base) / state.base * _REVERSION
        up_probability = 0.5 - max(-_MAX_BIAS, min(_MAX_BIAS, drift))
        up = rng.random() < up_probability
        price = self._walk(state, up, steps)
        trade_type = self._trade_type(state, price)
        typical = max(1.0, _TYPICAL_ORDER_KRW / price)
        volume = int(rng.lognormvariate(math.log(typical), _VOLUME_SIGMA))
        volume = max(1, min(int(_MAX_LOTS * typical), volume))
        return self._print(code, state, now, price, volume, trade_type, Session.CONTINUOUS)

    def auction_tick(self, code: str, session: Session, at: datetime,
                     day: date) -> dict[str, Any]:
        """The single price of `code`'s opening or closing auction of trading day `day`, printed
        at `at` (the open or the close), as a Toss tick JSON object.

        Asked again for the same day and auction (another connection), it answers the same
        print: an auction has one price. The opening auction of a new day rolls the state
        first, so it prints near the previous close, within the new day's limits."""
        if session not in (Session.OPENING_AUCTION, Session.CLOSING_AUCTION):
            raise ValueError(f"{session} is not a call auction")
        state = self.state(code, day)
        done = state.auctions.get(session)
        if done is not None:
            return done
        rng = self._rng
        weights = (_OPENING_GAP_WEIGHTS if session is Session.OPENING_AUCTION
                   else _CLOSING_GAP_WEIGHTS)
        steps = rng.choices([s for s, _ in weights], [w for _, w in weights])[0]
        price = self._walk(state, rng.random() < 0.5, steps)
        trade_type = self._trade_type(state, price)
        typical = max(1.0, _TYPICAL_ORDER_KRW / price)
        volume = max(1, int(rng.lognormvariate(math.log(typical * _AUCTION_ORDERS),
                                               _VOLUME_SIGMA / 2)))
        tick = state.auctions[session] = self._print(code, state, at, price, volume,
                                                     trade_type, session)
        return tick

    @staticmethod
    def _walk(state: CodeState, up: bool, steps: int) -> int:
        """`steps` ticks up or down from the last price, on the grid, clamped to the limits."""
        price = state.price
        for _ in range(steps):
            price = step_up(price, state.rules) if up else step_down(price, state.rules)
        return max(state.lower, min(state.upper, price))

    def _trade_type(self, state: CodeState, price: int) -> str:
        """The aggressor side of a trade at `price` after the last one."""
        if price > state.price:
            return "BUY"  # the buyer lifted the offer
        if price < state.price:
            return "SELL"
        return "BUY" if self._rng.random() < 0.5 else "SELL"

    @staticmethod
    def _print(code: str, state: CodeState, now: datetime, price: int, volume: int,
               trade_type: str, session: Session) -> dict[str, Any]:
        """Record a trade in the day's figures and return it as a Toss tick JSON object."""
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
            "session": WIRE_SESSIONS[session],
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
