"""The portfolio history (GET /api/v1/portfolio/history): the user's daily snapshots
(api.performance.snapshots) as points with their P&L and time-weighted returns, plus today's
live point; and the figures other reports build on (`total_return_pct`, `max_drawdown_pct`).

Definitions (docs/api/PERFORMANCE.md, with examples). For a point t:
- `pnl_t = E_t - B_t - F_t`: equity at its close, minus the equity at the previous snapshot
  (B_t, 0 before the first), minus the net external flows since then (F_t: deposits,
  withdrawals, payments, refunds). Money, exact.
- `r_t = E_t / (B_t + F_t) - 1`, or 0 when `B_t + F_t <= 0` (nothing was at work): the flows
  count as arriving at the start of the day, so a deposit is capital, never a gain, and an
  account's first day is measured against its opening deposit.
- cumulative over a period: `prod(1 + r_t) - 1` over its points (time-weighted: flows change
  the capital, not the return); the index `I_t = prod(1 + r_s), s <= t`, from 1 before the
  first point; max drawdown: the largest `1 - I_t / max(1, I_s for s <= t)`.
Percentages are Decimals rounded half-even to 4 decimals (a string in JSON), computed from the
unrounded ratios.

Today's intraday series (period=1D, timeframe 5Min, 15Min or 1H): the samples of the fills
worker's intraday job (api.performance.intraday) in the latest session, each measured against
the previous close (the snapshot before that day): `pnl = E - B - F` with F the flows since it,
`pnl_pct = pnl / (B + F)`, and the time-weighted return chained over every sample, each step's
flows counted from the start of the step (as a day's are); then the live point now.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from itertools import accumulate
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.ledger.service import get_account
from api.models import (
    AccountSnapshot,
    IntradaySnapshot,
    LedgerEntry,
    LedgerType,
    PortfolioReset,
)
from api.performance.schemas import HistoryOut, IntradayHistoryOut, IntradayPointOut, PointOut
from api.performance.snapshots import FLOW_TYPES, ledger_since, net_flows
from api.performance.valuing import unpriced
from api.portfolio.service import Valuation, valuation
from api.resources import Resources
from api.stats.periods import PERIOD_DAYS, Period  # the same spans as GET /api/v1/stats
from relayer.market_calendar import MarketCalendar, TradingDay

PERCENT = Decimal("0.0001")


class Timeframe(StrEnum):
    """The points' spacing: one per trading day, or today's intraday samples every 5, 15 or
    60 minutes (period=1D only)."""

    DAY = "1D"
    FIVE_MINUTES = "5Min"
    FIFTEEN_MINUTES = "15Min"
    HOUR = "1H"


# The intraday timeframes: a point at each sample time that is a multiple of this.
INTRADAY_STEP_S = {Timeframe.FIVE_MINUTES: 300, Timeframe.FIFTEEN_MINUTES: 900,
                   Timeframe.HOUR: 3600}


class HistoryPeriod(StrEnum):
    """The history's periods: today's intraday series (`1D`), or GET /api/v1/stats' spans."""

    DAY = "1D"
    WEEK = "1W"
    MONTH = "1M"
    QUARTER = "3M"
    YEAR = "1Y"
    ALL = "all"


def period_start(period: Period, today: date) -> date | None:
    """The day before the period's first: its points are dated after it (None: all)."""
    return None if period is Period.ALL else today - timedelta(days=PERIOD_DAYS[period])


@dataclass(frozen=True)
class DailyPoint:
    """One day of an account: a snapshot, or the live point of today."""

    day: date
    equity: int
    cash: int
    market_value: int
    base_equity: int  # the equity at the previous snapshot; 0 before the first
    net_flows: int
    realized_pnl: int  # cumulative, as the positions say
    realized_pnl_day: int  # realized since the previous snapshot
    fees: int
    taxes: int
    unpriced_positions: int
    late: bool = False
    live: bool = False
    resets: int = 0  # portfolio resets since the previous point

    @property
    def pnl(self) -> int:
        """일별 손익: the equity's change that is not a flow."""
        return self.equity - self.base_equity - self.net_flows

    @property
    def return_ratio(self) -> Decimal:
        """r_t, unrounded: the equity over the capital at work (base plus flows), minus 1."""
        capital = self.base_equity + self.net_flows
        if capital <= 0:
            return Decimal(0)
        return Decimal(self.equity) / Decimal(capital) - 1


def percent(ratio: Decimal) -> Decimal:
    return (ratio * 100).quantize(PERCENT, rounding=ROUND_HALF_EVEN)


class Step(Protocol):
    """A point of a time-weighted chain: its return over the step before it."""

    @property
    def return_ratio(self) -> Decimal: ...


def growth_index(points: Sequence[Step]) -> list[Decimal]:
    """I_t = prod(1 + r_s) for s <= t, unrounded, one per point."""
    index, level = [], Decimal(1)
    for point in points:
        level *= 1 + point.return_ratio
        index.append(level)
    return index


def total_return_pct(points: Sequence[Step]) -> Decimal | None:
    """The time-weighted return of the points (oldest first), in percent: prod(1 + r_t) - 1.
    None without points."""
    if not points:
        return None
    return percent(growth_index(points)[-1] - 1)


def max_drawdown_pct(points: Sequence[Step]) -> Decimal | None:
    """The largest peak-to-trough fall of the growth index over the points (oldest first), in
    percent of the peak, as a positive number (0: it never fell). The index starts at 1 before
    the first point, so a first day's loss counts. None without points."""
    if not points:
        return None
    peak, deepest = Decimal(1), Decimal(0)
    for level in growth_index(points):
        peak = max(peak, level)
        deepest = max(deepest, 1 - level / peak)
    return percent(deepest)


# --- SQL units of work ---------------------------------------------------------------------------


# The columns a point needs: rows, not ORM objects (a year of them loads 3-4x faster).
POINT_COLUMNS = (AccountSnapshot.day, AccountSnapshot.equity, AccountSnapshot.cash,
                 AccountSnapshot.market_value, AccountSnapshot.base_equity,
                 AccountSnapshot.net_flows, AccountSnapshot.realized_pnl, AccountSnapshot.fees,
                 AccountSnapshot.taxes, AccountSnapshot.unpriced_positions, AccountSnapshot.late)


def daily_points(session: Session, user_id: int, after: date | None = None,
                 until: date | None = None) -> list[DailyPoint]:
    """The user's snapshots dated after `after` and up to `until` (both optional), oldest
    first, as points. Reads the (user_id, day) index: one range and one row before it (the
    first point's realized P&L of the day is counted from it)."""
    mine = AccountSnapshot.user_id == user_id
    if until is not None:
        mine = mine & (AccountSnapshot.day <= until)
    realized = 0
    query = select(*POINT_COLUMNS).where(mine)
    if after is not None:
        realized = session.scalar(
            select(AccountSnapshot.realized_pnl).where(mine, AccountSnapshot.day <= after)
            .order_by(AccountSnapshot.day.desc()).limit(1)) or 0
        query = query.where(AccountSnapshot.day > after)
    points = []
    for row in session.execute(query.order_by(AccountSnapshot.day)):
        points.append(DailyPoint(
            day=row.day, equity=row.equity, cash=row.cash, market_value=row.market_value,
            base_equity=row.base_equity, net_flows=row.net_flows,
            realized_pnl=row.realized_pnl, realized_pnl_day=row.realized_pnl - realized,
            fees=row.fees, taxes=row.taxes, unpriced_positions=row.unpriced_positions,
            late=bool(row.late)))
        realized = row.realized_pnl
    return points


@dataclass(frozen=True)
class SinceLastSnapshot:
    """What today's live point adds to the user's latest snapshot."""

    last: AccountSnapshot | None
    ledger: dict[str, int]  # the sums of the ledger rows since it, by type


def since_last_snapshot(session: Session, user_id: int) -> SinceLastSnapshot:
    get_account(session, user_id)  # 404 account_not_found, as the portfolio answers
    last = session.scalar(select(AccountSnapshot).where(AccountSnapshot.user_id == user_id)
                          .order_by(AccountSnapshot.day.desc()).limit(1))
    sums, _ = ledger_since(session, user_id, 0 if last is None else last.ledger_upto)
    return SinceLastSnapshot(last, sums)


@dataclass(frozen=True)
class ResetTimes:
    """When the account was reset (api.portfolios.reset), oldest first; and, only when it was,
    when each snapshot of the period was valued (`valued`, by day) and the one before the
    period (`valued_before`; None: there is none, or no period). Read apart from the points:
    most accounts were never reset, and parsing 245 more DATETIMEs costs 2 ms a year
    (docs/BENCHMARKS.md, "Performance history and statistics")."""

    times: list[datetime]
    valued: dict[date, datetime]
    valued_before: datetime | None


def reset_times(session: Session, user_id: int, after: date | None) -> ResetTimes:
    times = list(session.scalars(select(PortfolioReset.reset_at).where(
        PortfolioReset.account_id == user_id).order_by(PortfolioReset.reset_at)))
    if not times:
        return ResetTimes([], {}, None)
    mine = AccountSnapshot.user_id == user_id
    query = select(AccountSnapshot.day, AccountSnapshot.priced_at).where(mine)
    valued_before = None
    if after is not None:
        query = query.where(AccountSnapshot.day > after)
        valued_before = session.scalar(
            select(AccountSnapshot.priced_at).where(mine, AccountSnapshot.day <= after)
            .order_by(AccountSnapshot.day.desc()).limit(1))
    valued = {row.day: row.priced_at for row in session.execute(query)}
    return ResetTimes(times, valued, valued_before)


def marked(points: list[DailyPoint], resets: ResetTimes) -> list[DailyPoint]:
    """Each point with the number of resets between the valuation of the point before it and
    its own (the live point: every reset after the last snapshot): the points whose
    `net_flows` hold their RESET rows."""
    if not resets.times:
        return points
    out = []
    since = resets.valued_before
    for point in points:
        upto = None if point.live else resets.valued[point.day]
        count = sum(1 for at in resets.times
                    if (since is None or at > since) and (upto is None or at <= upto))
        out.append(replace(point, resets=count) if count else point)
        since = upto
    return out


def _history_points(session: Session, user_id: int, after: date | None
                    ) -> tuple[list[DailyPoint], SinceLastSnapshot, ResetTimes]:
    return (daily_points(session, user_id, after), since_last_snapshot(session, user_id),
            reset_times(session, user_id, after))


# --- the request ---------------------------------------------------------------------------------


async def history_points(resources: Resources, user_id: int,
                         period: Period) -> list[DailyPoint]:
    """The points of the period, then today's live point: the equity now, valued as GET
    /api/v1/portfolio values it, against the latest snapshot."""
    today = resources.calendar.day_of(resources.clock()).date
    points, since, resets = await resources.db.read(_history_points, user_id,
                                                    period_start(period, today))
    now = await valuation(resources, user_id)
    last = since.last
    if last is None or last.day < today:
        points.append(DailyPoint(
            day=today, equity=now.equity, cash=now.account.cash,
            market_value=now.market_value, base_equity=0 if last is None else last.equity,
            net_flows=net_flows(since.ledger),
            realized_pnl=now.realized_pnl,
            realized_pnl_day=now.realized_pnl - (0 if last is None else last.realized_pnl),
            fees=-since.ledger.get(LedgerType.FEE.value, 0),
            taxes=-since.ledger.get(LedgerType.TAX.value, 0),
            unpriced_positions=sum(p.last_price is None for p in now.open_positions),
            live=True))
    return marked(points, resets)


async def history(resources: Resources, user_id: int, period: Period,
                  timeframe: Timeframe) -> HistoryOut:
    points = await history_points(resources, user_id, period)
    index = growth_index(points)
    return HistoryOut(
        period=period.value, timeframe=timeframe.value,
        base_equity=points[0].base_equity if points else None,
        pnl=sum(p.pnl for p in points), net_flows=sum(p.net_flows for p in points),
        return_pct=total_return_pct(points), max_drawdown_pct=max_drawdown_pct(points),
        points=[PointOut.of(point, percent(point.return_ratio), percent(level - 1))
                for point, level in zip(points, index, strict=True)])


# --- today's intraday series ---------------------------------------------------------------------


@dataclass(frozen=True)
class IntradayPoint:
    """A sample of the session (or the live point), measured against the previous close."""

    at: datetime
    equity: int
    cash: int
    market_value: int
    base_equity: int  # B: the equity at the previous close's snapshot; 0 before the first
    net_flows: int  # F: the flows since that snapshot, up to this point
    step_capital: int  # the previous point's equity plus the flows since it
    unpriced_positions: int
    live: bool = False

    @property
    def pnl(self) -> int:
        """The P&L since the previous close: E - B - F."""
        return self.equity - self.base_equity - self.net_flows

    @property
    def pnl_ratio(self) -> Decimal:
        """The P&L over the capital at work since the previous close (B + F); 0 without."""
        capital = self.base_equity + self.net_flows
        return Decimal(0) if capital <= 0 else Decimal(self.pnl) / Decimal(capital)

    @property
    def return_ratio(self) -> Decimal:
        """This step's return: the equity over the previous point's plus the flows since it,
        minus 1 (flows count from the step's start, as a day's do); 0 without capital."""
        if self.step_capital <= 0:
            return Decimal(0)
        return Decimal(self.equity) / Decimal(self.step_capital) - 1


def session_day(calendar: MarketCalendar, now: datetime) -> TradingDay:
    """The trading day whose session is on at `now`, else the latest one that has begun (in
    the evening, that day; on a weekend, Friday): the day the 1D series shows."""
    day = calendar.day_of(now)
    if now >= day.auction_start:
        return day
    return calendar.day_of(calendar.previous_close(now) - timedelta(microseconds=1))


@dataclass(frozen=True)
class IntradayRows:
    base: AccountSnapshot | None  # the latest snapshot before the day: the previous close
    samples: list[IntradaySnapshot]  # the day's, oldest first
    flows: list[tuple[int, int]]  # (ledger id, amount) of every flow since `base`, by id


def intraday_rows(session: Session, user_id: int, day: TradingDay) -> IntradayRows:
    """The day's samples and what they are measured against, in one transaction. A sample
    taken before the previous close's snapshot was written (the worker catching up a close
    late) counts ledger rows that snapshot counts too: it is left out."""
    get_account(session, user_id)  # 404 account_not_found, as the portfolio answers
    base = session.scalar(select(AccountSnapshot).where(
        AccountSnapshot.user_id == user_id, AccountSnapshot.day < day.date)
        .order_by(AccountSnapshot.day.desc()).limit(1))
    upto = 0 if base is None else base.ledger_upto
    samples = list(session.scalars(select(IntradaySnapshot).where(
        IntradaySnapshot.user_id == user_id, IntradaySnapshot.at >= day.auction_start,
        IntradaySnapshot.at < day.close, IntradaySnapshot.ledger_upto >= upto)
        .order_by(IntradaySnapshot.at)))
    flows = [(row.id, row.amount) for row in session.execute(
        select(LedgerEntry.id, LedgerEntry.amount).where(
            LedgerEntry.user_id == user_id, LedgerEntry.id > upto,
            LedgerEntry.type.in_(FLOW_TYPES)).order_by(LedgerEntry.id))]
    return IntradayRows(base, samples, flows)


def chained(rows: IntradayRows, now_value: Valuation, now: datetime) -> list[IntradayPoint]:
    """The samples as points, each with the flows up to it, then the live point: the account
    valued now."""
    base = 0 if rows.base is None else rows.base.equity
    ids = [flow_id for flow_id, _ in rows.flows]
    totals = [0, *accumulate(amount for _, amount in rows.flows)]
    points: list[IntradayPoint] = []
    equity, flows = base, 0
    for sample in rows.samples:
        upto_now = totals[bisect_right(ids, sample.ledger_upto)]
        points.append(IntradayPoint(
            at=sample.at, equity=sample.equity, cash=sample.cash,
            market_value=sample.market_value, base_equity=base, net_flows=upto_now,
            step_capital=equity + upto_now - flows,
            unpriced_positions=sample.unpriced_positions))
        equity, flows = sample.equity, upto_now
    points.append(IntradayPoint(
        at=now, equity=now_value.equity, cash=now_value.account.cash,
        market_value=now_value.market_value, base_equity=base, net_flows=totals[-1],
        step_capital=equity + totals[-1] - flows, unpriced_positions=unpriced(now_value),
        live=True))
    return points


async def intraday_history(resources: Resources, user_id: int,
                           timeframe: Timeframe) -> IntradayHistoryOut:
    """The samples of the latest session at the timeframe's times, then the live point: the
    equity now, valued as GET /api/v1/portfolio values it. Every figure is computed over all
    the samples; the timeframe only chooses the points listed."""
    now = resources.clock()
    day = session_day(resources.calendar, now)
    rows = await resources.db.read(intraday_rows, user_id, day)
    value = await valuation(resources, user_id)
    points = chained(rows, value, now.astimezone(UTC))
    index = growth_index(points)
    step = INTRADAY_STEP_S[timeframe]
    live = points[-1]
    return IntradayHistoryOut(
        period=HistoryPeriod.DAY.value, timeframe=timeframe.value, day=day.date,
        base_day=None if rows.base is None else rows.base.day, base_equity=live.base_equity,
        pnl=live.pnl, net_flows=live.net_flows, pnl_pct=percent(live.pnl_ratio),
        return_pct=percent(index[-1] - 1), max_drawdown_pct=max_drawdown_pct(points),
        points=[IntradayPointOut.of(point, percent(point.pnl_ratio), percent(level - 1))
                for point, level in zip(points, index, strict=True)
                if point.live or int(point.at.timestamp()) % step == 0])


async def portfolio_history(resources: Resources, user_id: int, period: HistoryPeriod,
                            timeframe: Timeframe) -> HistoryOut | IntradayHistoryOut:
    """GET /api/v1/portfolio/history: the daily points of a period, or today's intraday series
    (period=1D with an intraday timeframe; the route refuses other pairs)."""
    if period is HistoryPeriod.DAY:
        return await intraday_history(resources, user_id, timeframe)
    return await history(resources, user_id, Period(period.value), timeframe)
