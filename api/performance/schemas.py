"""Response bodies of the portfolio history."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # the service builds these answers, so it imports this module
    from api.performance.service import DailyPoint, IntradayPoint

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
    resets: int = Field(description="portfolio resets since the previous point (POST "
                                    "/api/v1/portfolios/{id}/reset): their RESET rows are in "
                                    "net_flows, so a reset is neither a gain nor a loss")

    @classmethod
    def of(cls, point: DailyPoint, return_pct: Decimal,
           cumulative_return_pct: Decimal) -> PointOut:
        return cls(date=point.day, equity=point.equity, cash=point.cash,
                   market_value=point.market_value, net_flows=point.net_flows, pnl=point.pnl,
                   return_pct=return_pct, cumulative_return_pct=cumulative_return_pct,
                   realized_pnl=point.realized_pnl_day, fees=point.fees, taxes=point.taxes,
                   unpriced_positions=point.unpriced_positions, late=point.late,
                   live=point.live, resets=point.resets)


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


class IntradayPointOut(BaseModel):
    time: datetime.datetime = Field(description="the sample time (UTC; a multiple of the "
                                                "timeframe); the live point: now")
    equity: int = Field(description="cash + market_value, KRW")
    cash: int
    market_value: int = Field(description="open positions at the quotes (at book cost "
                                          "without one)")
    net_flows: int = Field(description="deposits + payments - withdrawals - refunds since "
                                       "the previous close, KRW")
    pnl: int = Field(description="since the previous close: equity - base_equity - "
                                 "net_flows, KRW")
    pnl_pct: Decimal = Field(description="pnl / (base_equity + net_flows), " + PERCENT_NOTE,
                             examples=["0.4512"])
    cumulative_return_pct: Decimal = Field(
        description="time-weighted since the previous close, chained over every sample: "
                    "prod(1 + return) - 1, " + PERCENT_NOTE)
    unpriced_positions: int = Field(description="open positions valued at book cost for "
                                                "want of a quote")
    live: bool = Field(description="the equity now, not a sample")

    @classmethod
    def of(cls, point: IntradayPoint, pnl_pct: Decimal,
           cumulative_return_pct: Decimal) -> IntradayPointOut:
        return cls(time=point.at, equity=point.equity, cash=point.cash,
                   market_value=point.market_value, net_flows=point.net_flows, pnl=point.pnl,
                   pnl_pct=pnl_pct, cumulative_return_pct=cumulative_return_pct,
                   unpriced_positions=point.unpriced_positions, live=point.live)


class IntradayHistoryOut(BaseModel):
    period: str = Field(description="`1D`")
    timeframe: str = Field(description="`5Min`, `15Min` or `1H`")
    day: datetime.date = Field(description="the trading day whose session the samples are "
                                           "of: the one on now, else the latest begun")
    base_day: datetime.date | None = Field(description="the previous close: the day of the "
                                                       "snapshot the points are measured "
                                                       "against; null: none yet")
    base_equity: int = Field(description="the equity at that close (0 without one)")
    pnl: int = Field(description="the live point's: the P&L since the previous close, KRW")
    net_flows: int = Field(description="the flows since the previous close, KRW")
    pnl_pct: Decimal = Field(description="the live point's pnl_pct")
    return_pct: Decimal = Field(description="time-weighted return since the previous close "
                                            "(the live point's cumulative_return_pct)")
    max_drawdown_pct: Decimal | None = Field(
        description="largest peak-to-trough fall of the cumulative return index over every "
                    "sample, in percent of the peak (positive)")
    points: list[IntradayPointOut] = Field(description="oldest first; the last is the live "
                                                       "point")
    currency: str = "KRW"
