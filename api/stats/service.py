"""GET /api/v1/stats: an account's trading statistics over a period (docs/api/STATS.md).

One read transaction gives the account's opening, every one of its fills (the columns the
figures need, in id order: holding periods need the fills before the period too) and how many
orders it placed in the period; api.stats.figures computes the rest, and the instruments
catalog names the codes. "Today" is the app's clock (`resources.clock`), so tests fix it.

Returns and drawdown (total_return_pct, max_drawdown_pct) are those of the same period's
GET /api/v1/portfolio/history (api.performance: the daily snapshots and today's live point),
so the two endpoints always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from api.ledger.service import get_account
from api.models import RESET_CLOSING_REASON, Fill, Order, PortfolioReset
from api.performance.service import history_points, max_drawdown_pct, total_return_pct
from api.resources import Resources
from api.stats.figures import FillRow, TradingFigures
from api.stats.periods import Period, Window
from api.stats.schemas import ResetMarkOut, StatsOut

FILL_COLUMNS = (Fill.id, Fill.order_id, Fill.code, Fill.side, Fill.quantity, Fill.value,
                Fill.commission, Fill.securities_transaction_tax, Fill.rural_special_tax,
                Fill.realized_pnl, Fill.created_at)


@dataclass(frozen=True)
class TradingHistory:
    window: Window
    fills: list[FillRow]  # every fill of the account, in id order
    orders_placed: int  # in the window
    resets: list[ResetMarkOut]  # in the window, oldest first


def trading_history(session: Session, user_id: int, period: Period,
                    now: datetime) -> TradingHistory:
    """Unit of work: what the statistics of `period` at `now` are computed from. 404
    `account_not_found` without an account."""
    account = get_account(session, user_id)
    window = Window.of(period, now, account.created_at)
    fills = [FillRow(*row) for row in session.execute(
        select(*FILL_COLUMNS).where(Fill.user_id == user_id).order_by(Fill.id))]
    # The orders a portfolio reset closed positions with are not orders the user placed.
    orders_placed = session.scalar(select(func.count()).select_from(Order).where(
        Order.user_id == user_id, Order.created_at >= window.start,
        Order.created_at < window.end,
        or_(Order.reason.is_(None), Order.reason != RESET_CLOSING_REASON)))
    resets = [ResetMarkOut.model_validate(row) for row in session.scalars(
        select(PortfolioReset).where(PortfolioReset.account_id == user_id,
                                     PortfolioReset.reset_at >= window.start,
                                     PortfolioReset.reset_at < window.end)
        .order_by(PortfolioReset.id))]
    return TradingHistory(window, fills, int(orders_placed or 0), resets)


async def stats(resources: Resources, user_id: int, period: Period) -> StatsOut:
    now = resources.clock()
    trading = await resources.db.read(trading_history, user_id, period, now)
    catalog = await resources.instruments.snapshot()
    # The history's points, not its answer: two figures of it are needed here.
    points = await history_points(resources, user_id, period)

    def name_of(code: str) -> str | None:
        info = catalog.get(code)
        return None if info is None else info.name

    return StatsOut.of(TradingFigures.of(trading.fills, trading.window),
                       orders_placed=trading.orders_placed, resets=trading.resets, now=now,
                       name_of=name_of,
                       total_return_pct=total_return_pct(points),
                       max_drawdown_pct=max_drawdown_pct(points))
