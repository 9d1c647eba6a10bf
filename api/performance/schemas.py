"""Response bodies of the portfolio history."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # the service builds these answers, so it imports this module
    from api.performance.service import DailyPoint

PERCENT_NOTE = "percent, 4 decimals (half-even), a string"


class PointOut(BaseModel):
    date: datetime.date = Field(description="the trading day (KST) whose close this is; the live "
                                   "point: the trading day now belongs to")
    equity: int = Field(description="cash + market_value, KRW")
    cash: int
    market_value: int = Field(description="open positions at the quotes (at book cost "
                                          "without one)")
    net_flows: int = Field(description="deposits + payments - withdrawals - refunds since "
                                       "the previous point, KRW")
    pnl: int = Field(description="일별 손익: equity - previous equity - net_flows, KRW")
    return_pct: Decimal = Field(description="equity / (previous equity + net_flows) - 1, "
                                            + PERCENT_NOTE, examples=["0.4512"])
    cumulative_return_pct: Decimal = Field(
        description="time-weighted, from the period's start: prod(1 + return) - 1, "
                    + PERCENT_NOTE)
    realized_pnl: int = Field(description="realized since the previous point, net of costs")
    fees: int = Field(description="commissions since the previous point, KRW")
    taxes: int = Field(description="sell taxes since the previous point, KRW")
    unpriced_positions: int = Field(description="open positions valued at book cost for "
                                                "want of a quote")
    late: bool = Field(description="snapshot taken after the next trading day began (the "
                                   "worker was down): valued at the holdings and quotes of "
                                   "that later moment")
    live: bool = Field(description="today's point: the equity now, not a close")

    @classmethod
    def of(cls, point: DailyPoint, return_pct: Decimal,
           cumulative_return_pct: Decimal) -> PointOut:
        return cls(date=point.day, equity=point.equity, cash=point.cash,
                   market_value=point.market_value, net_flows=point.net_flows, pnl=point.pnl,
                   return_pct=return_pct, cumulative_return_pct=cumulative_return_pct,
                   realized_pnl=point.realized_pnl_day, fees=point.fees, taxes=point.taxes,
                   unpriced_positions=point.unpriced_positions, late=point.late,
                   live=point.live)


class HistoryOut(BaseModel):
    period: str
    timeframe: str
    base_equity: int | None = Field(description="the equity before the first point (0 if "
                                                "it is the account's first); null: no points")
    pnl: int = Field(description="the sum of the points' pnl: the change of equity that is "
                                 "not a flow, KRW")
    net_flows: int = Field(description="the sum of the points' net_flows, KRW")
    return_pct: Decimal | None = Field(description="time-weighted return of the period (the "
                                                   "last point's cumulative_return_pct)")
    max_drawdown_pct: Decimal | None = Field(
        description="largest peak-to-trough fall of the cumulative return index, in percent "
                    "of the peak (positive)")
    points: list[PointOut] = Field(description="oldest first; the last is the live point")
    currency: str = "KRW"
