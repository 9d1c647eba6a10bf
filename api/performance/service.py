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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.ledger.service import get_account
from api.models import AccountSnapshot, LedgerType
from api.performance.schemas import HistoryOut, PointOut
from api.performance.snapshots import ledger_since, net_flows
from api.portfolio.service import valuation
from api.resources import Resources
from api.stats.periods import PERIOD_DAYS, Period  # the same spans as GET /api/v1/stats

PERCENT = Decimal("0.0001")


class Timeframe(StrEnum):
    """One point per trading day (an intraday series is not kept: docs/api/PERFORMANCE.md)."""

    DAY = "1D"


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


def growth_index(points: Sequence[DailyPoint]) -> list[Decimal]:
    """I_t = prod(1 + r_s) for s <= t, unrounded, one per point."""
    index, level = [], Decimal(1)
    for point in points:
        level *= 1 + point.return_ratio
        index.append(level)
    return index


def total_return_pct(points: Sequence[DailyPoint]) -> Decimal | None:
    """The time-weighted return of the points (oldest first), in percent: prod(1 + r_t) - 1.
    None without points."""
    if not points:
        return None
    return percent(growth_index(points)[-1] - 1)


def max_drawdown_pct(points: Sequence[DailyPoint]) -> Decimal | None:
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


def _history_points(session: Session, user_id: int,
                    after: date | None) -> tuple[list[DailyPoint], SinceLastSnapshot]:
    return daily_points(session, user_id, after), since_last_snapshot(session, user_id)


# --- the request ---------------------------------------------------------------------------------


async def history(resources: Resources, user_id: int, period: Period,
                  timeframe: Timeframe) -> HistoryOut:
    """The points of the period, then today's live point: the equity now, valued as GET
    /api/v1/portfolio values it, against the latest snapshot."""
    today = resources.calendar.day_of(resources.clock()).date
    points, since = await resources.db.read(_history_points, user_id,
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
    index = growth_index(points)
    return HistoryOut(
        period=period.value, timeframe=timeframe.value,
        base_equity=points[0].base_equity if points else None,
        pnl=sum(p.pnl for p in points), net_flows=sum(p.net_flows for p in points),
        return_pct=total_return_pct(points), max_drawdown_pct=max_drawdown_pct(points),
        points=[PointOut.of(point, percent(point.return_ratio), percent(level - 1))
                for point, level in zip(points, index, strict=True)])
