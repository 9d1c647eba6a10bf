"""The statistics of docs/api/STATS.md, computed from an account's fills: pure functions over
plain rows (no database, no clock of their own), so that each figure is tested with values.

A trade is one SELL fill, its P&L the `realized_pnl` its execution recorded against the
average cost (api.orders.execution.sell_from); a buy is not a trade. Money stays integer KRW;
only ratios and averages are Decimals, rounded half to even to 2 places. A ratio or average
without anything to divide by is None (null), never a division error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cached_property

from api.kst_days import kst_day
from api.models import Side
from api.stats.periods import Window

CENTS = Decimal("0.01")
SECONDS_PER_DAY = 86_400


def rounded(numerator: int, denominator: int, scale: int = 1) -> Decimal | None:
    """`scale` x numerator / denominator to 2 decimals (half to even); None without a
    denominator."""
    if denominator == 0:
        return None
    return (Decimal(numerator) * scale / denominator).quantize(CENTS, rounding=ROUND_HALF_EVEN)


def days(seconds: int, count: int = 1) -> Decimal:
    """`seconds` over `count` durations, in days, 2 decimals (half to even)."""
    return (Decimal(seconds) / (count * SECONDS_PER_DAY)).quantize(CENTS,
                                                                   rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class FillRow:
    """The columns of one fill that the statistics read."""

    id: int
    order_id: int
    code: str
    side: str
    quantity: int
    value: int
    commission: int
    securities_transaction_tax: int
    rural_special_tax: int
    realized_pnl: int | None  # a sale's; None on a buy
    created_at: datetime

    @property
    def is_sale(self) -> bool:
        return self.side == Side.SELL


@dataclass(frozen=True, slots=True)
class Trade:
    """One sale, as a trade: its fill, instrument, KST date and realized P&L."""

    fill_id: int
    code: str
    day: date
    realized_pnl: int

    @classmethod
    def of(cls, fill: FillRow) -> Trade:
        assert fill.realized_pnl is not None, fill.id  # every sale has one (migration 0013)
        return cls(fill.id, fill.code, kst_day(fill.created_at), fill.realized_pnl)


@dataclass(frozen=True, slots=True)
class PnlGroup:
    """The realized P&L of the trades of one day, or of one instrument."""

    realized_pnl: int = 0
    trades: int = 0

    def plus(self, trade: Trade) -> PnlGroup:
        return PnlGroup(self.realized_pnl + trade.realized_pnl, self.trades + 1)


@dataclass(frozen=True)
class TradeFigures:
    """Win rate, averages, profit factor, best and worst, over a list of trades in fill id
    order."""

    trades: Sequence[Trade]

    @property
    def count(self) -> int:
        return len(self.trades)

    # Cached: the answer asks for them several times, and an account may have 10,000s of trades.
    @cached_property
    def wins(self) -> list[Trade]:
        return [t for t in self.trades if t.realized_pnl > 0]

    @cached_property
    def losses(self) -> list[Trade]:
        return [t for t in self.trades if t.realized_pnl < 0]

    @property
    def breakeven(self) -> int:
        """Trades of exactly 0: neither wins nor losses, but counted in the win rate's
        denominator."""
        return self.count - len(self.wins) - len(self.losses)

    @property
    def gross_wins(self) -> int:
        return sum(t.realized_pnl for t in self.wins)

    @property
    def gross_losses(self) -> int:
        """Negative (or 0)."""
        return sum(t.realized_pnl for t in self.losses)

    @property
    def win_rate(self) -> Decimal | None:
        """Percent of trades that won."""
        return rounded(len(self.wins), self.count, 100)

    @property
    def average_win(self) -> Decimal | None:
        return rounded(self.gross_wins, len(self.wins))

    @property
    def average_loss(self) -> Decimal | None:
        return rounded(self.gross_losses, len(self.losses))

    @property
    def profit_factor(self) -> Decimal | None:
        """Gross wins over gross losses (as a positive number); None without a loss."""
        return rounded(self.gross_wins, -self.gross_losses)

    @property
    def best(self) -> Trade | None:
        """The highest P&L; the earliest of equals."""
        return max(self.trades, key=lambda t: t.realized_pnl, default=None)

    @property
    def worst(self) -> Trade | None:
        """The lowest P&L; the earliest of equals."""
        return min(self.trades, key=lambda t: t.realized_pnl, default=None)


@dataclass(frozen=True)
class Activity:
    """What the fills of the period traded and cost."""

    turnover: int = 0  # values of buys and sells
    buy_value: int = 0
    sell_value: int = 0
    fees: int = 0  # commissions
    securities_transaction_tax: int = 0
    rural_special_tax: int = 0
    fills: int = 0
    orders_filled: int = 0  # distinct orders with at least one fill

    @property
    def taxes(self) -> int:
        return self.securities_transaction_tax + self.rural_special_tax

    @classmethod
    def of(cls, fills: Sequence[FillRow]) -> Activity:
        buys = sum(f.value for f in fills if not f.is_sale)
        sells = sum(f.value for f in fills if f.is_sale)
        return cls(turnover=buys + sells, buy_value=buys, sell_value=sells,
                   fees=sum(f.commission for f in fills),
                   securities_transaction_tax=sum(f.securities_transaction_tax for f in fills),
                   rural_special_tax=sum(f.rural_special_tax for f in fills),
                   fills=len(fills), orders_filled=len({f.order_id for f in fills}))


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """A position held from flat to flat: from the fill that opened it to the one that closed
    it."""

    code: str
    opened_at: datetime
    closed_at: datetime

    @property
    def seconds(self) -> int:
        return int((self.closed_at - self.opened_at).total_seconds())


@dataclass(frozen=True, slots=True)
class OpenHolding:
    """A position still open: when the fill that opened it from flat was made."""

    code: str
    opened_at: datetime

    def age_days(self, now: datetime) -> Decimal:
        return days(max(0, int((now - self.opened_at).total_seconds())))


@dataclass(frozen=True)
class Holdings:
    """Every round trip of an account, and the positions open after its last fill."""

    round_trips: list[RoundTrip] = field(default_factory=list)
    open: list[OpenHolding] = field(default_factory=list)

    @classmethod
    def of(cls, fills: Iterable[FillRow]) -> Holdings:
        """Replay every fill in id order, per instrument: a fill that takes a position from 0
        shares opens it, a sale that brings it back to 0 closes it."""
        shares: dict[str, int] = defaultdict(int)
        opened: dict[str, datetime] = {}
        round_trips: list[RoundTrip] = []
        for fill in fills:
            before = shares[fill.code]
            shares[fill.code] += -fill.quantity if fill.is_sale else fill.quantity
            if before == 0 and shares[fill.code] > 0:
                opened[fill.code] = fill.created_at
            elif before > 0 and shares[fill.code] == 0:
                round_trips.append(RoundTrip(fill.code, opened.pop(fill.code), fill.created_at))
        return cls(round_trips, [OpenHolding(code, at) for code, at in sorted(opened.items())])

    def closed_in(self, window: Window) -> list[RoundTrip]:
        return [trip for trip in self.round_trips if trip.closed_at in window]


@dataclass(frozen=True)
class HoldingFigures:
    """The round trips closed in the period (count, average and longest duration), and the
    positions open now with their age."""

    round_trips: list[RoundTrip]
    open: list[OpenHolding]

    @property
    def average_days(self) -> Decimal | None:
        if not self.round_trips:
            return None
        return days(sum(t.seconds for t in self.round_trips), len(self.round_trips))

    @property
    def max_days(self) -> Decimal | None:
        return max((days(t.seconds) for t in self.round_trips), default=None)


@dataclass(frozen=True)
class TradingFigures:
    """Every figure of the period but returns and drawdown (api.stats.service)."""

    window: Window
    trades: TradeFigures
    by_day: dict[date, PnlGroup]  # days with at least one trade, in order
    by_code: dict[str, PnlGroup]  # instruments with at least one trade, by code
    activity: Activity
    holding: HoldingFigures

    @property
    def realized_pnl(self) -> int:
        return sum(t.realized_pnl for t in self.trades.trades)

    @classmethod
    def of(cls, fills: Sequence[FillRow], window: Window) -> TradingFigures:
        """`fills`: every fill of the account, in id order (the holding periods need those
        before the period too)."""
        in_period = [f for f in fills if f.created_at in window]
        trades = [Trade.of(f) for f in in_period if f.is_sale]
        by_day: dict[date, PnlGroup] = defaultdict(PnlGroup)
        by_code: dict[str, PnlGroup] = defaultdict(PnlGroup)
        for trade in trades:
            by_day[trade.day] = by_day[trade.day].plus(trade)
            by_code[trade.code] = by_code[trade.code].plus(trade)
        holdings = Holdings.of(fills)
        return cls(window, TradeFigures(trades), dict(sorted(by_day.items())),
                   dict(sorted(by_code.items())), Activity.of(in_period),
                   HoldingFigures(holdings.closed_in(window), holdings.open))
