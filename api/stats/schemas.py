"""The answer of GET /api/v1/stats. Every figure is defined in docs/api/STATS.md."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from api.stats.figures import Trade, TradingFigures
from api.stats.periods import Period

# An instrument's name by its code (the KRX master), None when the master lacks it.
NameOf = Callable[[str], str | None]


class DayPnlOut(BaseModel):
    day: date = Field(description="KST date of the sales")
    realized_pnl: int = Field(description="KRW")
    trades: int


class InstrumentPnlOut(BaseModel):
    code: str
    name: str | None = Field(description="from the KRX master; null if it lacks the code")
    realized_pnl: int = Field(description="KRW")
    trades: int


class RealizedPnlOut(BaseModel):
    total: int = Field(description="realized P&L of the sales in the period, KRW")
    by_day: list[DayPnlOut] = Field(description="days with at least one sale, oldest first")
    by_instrument: list[InstrumentPnlOut] = Field(
        description="instruments with at least one sale, by code")


class TradeOut(BaseModel):
    fill_id: int
    code: str
    name: str | None
    day: date = Field(description="KST date of the sale")
    realized_pnl: int = Field(description="KRW")

    @classmethod
    def of(cls, trade: Trade | None, name_of: NameOf) -> TradeOut | None:
        if trade is None:
            return None
        return cls(fill_id=trade.fill_id, code=trade.code, name=name_of(trade.code),
                   day=trade.day, realized_pnl=trade.realized_pnl)


class TradesOut(BaseModel):
    count: int = Field(description="sales (SELL fills) in the period: one trade each")
    wins: int = Field(description="trades with realized_pnl > 0")
    losses: int = Field(description="trades with realized_pnl < 0")
    breakeven: int = Field(description="trades with realized_pnl = 0: neither wins nor losses")
    win_rate: Decimal | None = Field(
        description="wins over count, percent, 2 decimals (half to even), a string; null "
                    "without trades", examples=["66.67"])
    gross_wins: int = Field(description="sum of the wins, KRW")
    gross_losses: int = Field(description="sum of the losses, KRW (0 or negative)")
    average_win: Decimal | None = Field(
        description="gross_wins over wins, KRW, 2 decimals, a string; null without wins")
    average_loss: Decimal | None = Field(
        description="gross_losses over losses, KRW (negative), 2 decimals, a string; null "
                    "without losses")
    profit_factor: Decimal | None = Field(
        description="gross_wins over -gross_losses, 2 decimals, a string; null without losses")
    best: TradeOut | None = Field(description="the trade of the highest P&L (the earliest of "
                                              "equals); null without trades")
    worst: TradeOut | None = Field(description="the trade of the lowest P&L (the earliest of "
                                               "equals); null without trades")


class ActivityOut(BaseModel):
    turnover: int = Field(description="sum of the values of every fill, buys and sells, KRW")
    buy_value: int
    sell_value: int
    fills: int
    orders_filled: int = Field(description="orders with at least one fill in the period")
    orders_placed: int = Field(description="orders placed in the period, whatever came of "
                                           "them")


class CostsOut(BaseModel):
    fees_paid: int = Field(description="commissions of the period's fills, KRW")
    securities_transaction_tax: int = Field(description="증권거래세 of the period's sales, KRW")
    rural_special_tax: int = Field(description="농어촌특별세 of the period's sales, KRW")
    taxes_paid: int = Field(description="the two taxes together, KRW")


class OpenPositionAgeOut(BaseModel):
    code: str
    name: str | None
    opened_at: datetime = Field(description="the fill that took the position from 0 shares")
    age_days: Decimal = Field(description="from opened_at to now, days, 2 decimals, a string")


class HoldingPeriodsOut(BaseModel):
    round_trips: int = Field(description="positions closed (back to 0 shares) in the period")
    average_days: Decimal | None = Field(
        description="their average time from the opening fill to the closing one, days, 2 "
                    "decimals, a string; null without round trips")
    max_days: Decimal | None = Field(description="the longest of them; null without any")
    open_positions: list[OpenPositionAgeOut] = Field(
        description="positions open now (whatever the period), by code")


class ResetMarkOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    reset_at: datetime
    equity_before: int = Field(description="the equity just before, KRW")
    cash_after: int = Field(description="the cash it started over with, KRW")


class StatsOut(BaseModel):
    period: Period
    first_day: date = Field(description="the first KST day counted: the period's, or the "
                                        "day the account was opened if later")
    last_day: date = Field(description="the last KST day counted: today")
    as_of: datetime = Field(description="when the figures were computed")
    realized_pnl: RealizedPnlOut
    trades: TradesOut
    activity: ActivityOut
    costs: CostsOut
    holding_periods: HoldingPeriodsOut
    total_return_pct: Decimal | None = Field(
        description="time-weighted return of the period, percent, 4 decimals, a string: the "
                    "`return_pct` of GET /api/v1/portfolio/history for the same period "
                    "(deposits and payments are not gains); null without points")
    max_drawdown_pct: Decimal | None = Field(
        description="largest peak-to-trough fall of the cumulative return index in the "
                    "period, percent of the peak (positive), as the history reports it")
    resets: list[ResetMarkOut] = Field(
        description="the portfolio's resets in the period, oldest first (POST "
                    "/api/v1/portfolios/{id}/reset): the figures count the trades on both "
                    "sides of one, and a reset's closing sales are trades")
    currency: str = "KRW"

    @classmethod
    def of(cls, figures: TradingFigures, *, orders_placed: int, resets: list[ResetMarkOut],
           now: datetime,
           name_of: NameOf, total_return_pct: Decimal | None,
           max_drawdown_pct: Decimal | None) -> StatsOut:
        window, trades, activity, holding = (figures.window, figures.trades, figures.activity,
                                             figures.holding)
        return cls(
            period=window.period, first_day=window.first_day, last_day=window.last_day,
            as_of=now.astimezone(UTC),
            realized_pnl=RealizedPnlOut(
                total=figures.realized_pnl,
                by_day=[DayPnlOut(day=day, realized_pnl=group.realized_pnl,
                                  trades=group.trades) for day, group in figures.by_day.items()],
                by_instrument=[InstrumentPnlOut(code=code, name=name_of(code),
                                                realized_pnl=group.realized_pnl,
                                                trades=group.trades)
                               for code, group in figures.by_code.items()]),
            trades=TradesOut(
                count=trades.count, wins=len(trades.wins), losses=len(trades.losses),
                breakeven=trades.breakeven, win_rate=trades.win_rate,
                gross_wins=trades.gross_wins, gross_losses=trades.gross_losses,
                average_win=trades.average_win, average_loss=trades.average_loss,
                profit_factor=trades.profit_factor, best=TradeOut.of(trades.best, name_of),
                worst=TradeOut.of(trades.worst, name_of)),
            activity=ActivityOut(
                turnover=activity.turnover, buy_value=activity.buy_value,
                sell_value=activity.sell_value, fills=activity.fills,
                orders_filled=activity.orders_filled, orders_placed=orders_placed),
            costs=CostsOut(
                fees_paid=activity.fees,
                securities_transaction_tax=activity.securities_transaction_tax,
                rural_special_tax=activity.rural_special_tax, taxes_paid=activity.taxes),
            holding_periods=HoldingPeriodsOut(
                round_trips=len(holding.round_trips), average_days=holding.average_days,
                max_days=holding.max_days,
                open_positions=[OpenPositionAgeOut(code=h.code, name=name_of(h.code),
                                                   opened_at=h.opened_at,
                                                   age_days=h.age_days(now))
                                for h in holding.open]),
            total_return_pct=total_return_pct, max_drawdown_pct=max_drawdown_pct,
            resets=resets)
