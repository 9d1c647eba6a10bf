"""Response bodies of the market clock and calendar (api.market.routes). Every time is
ISO-8601 in Korea time, with its `+09:00` offset."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

from relayer.market_calendar import CalendarKind, Session, TradingDay


class ClockOut(BaseModel):
    now: datetime = Field(description="the server's time, KST")
    timezone: str = Field(description="always `Asia/Seoul` (no daylight saving time)")
    calendar: CalendarKind = Field(description="MARKET_CALENDAR in force: `krx`, or "
                                               "`always_open` (development: trading at all hours)")
    is_open: bool = Field(description="whether orders trade now: continuous trading or an "
                                      "auction")
    session: Session
    trading_day: date = Field(description="the trading day an order placed now belongs to "
                                          "(today's until its close, then the next one's)")
    next_open: datetime = Field(description="when continuous trading next begins")
    next_close: datetime = Field(description="the close of `trading_day` (its closing price)")


class TradingDayOut(BaseModel):
    date: date
    open: datetime = Field(description="continuous trading begins (the opening price)")
    close: datetime = Field(description="the closing price")

    @classmethod
    def of(cls, day: TradingDay) -> TradingDayOut:
        return cls(date=day.date, open=day.open, close=day.close)


class CalendarOut(BaseModel):
    days: list[TradingDayOut] = Field(description="the trading days of the range, in order; "
                                                  "a date missing is a day the market is closed")
