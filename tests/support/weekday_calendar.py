"""A small market calendar for tests: Monday to Friday, 08:30 opening auction, 09:00 open, 15:20
closing auction, 15:30 close (KST), no holidays. The shape of a KRX week without the exchange's
holidays, so that a test's expectations can be read off the clock by eye."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from relayer.market_calendar import KST, Session, TradingDay

AUCTION_START, OPEN, CLOSING_AUCTION, CLOSE = time(8, 30), time(9), time(15, 20), time(15, 30)


def kst(day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=KST)


class WeekdayCalendar:
    """Every weekday trades, 08:30-15:30 KST; `MarketCalendar` as relayer.market_calendar
    defines it."""

    name = "weekdays"

    @staticmethod
    def trading_day(day: date) -> TradingDay:
        return TradingDay(day, kst(day, AUCTION_START), kst(day, OPEN), kst(day, CLOSING_AUCTION),
                          kst(day, CLOSE))

    def session_at(self, moment: datetime) -> Session:
        return self.day_of(moment).session_at(moment)

    def day_of(self, moment: datetime) -> TradingDay:
        day = moment.astimezone(KST).date()
        while day.weekday() >= 5 or moment >= kst(day, CLOSE):
            day += timedelta(days=1)
        return self.trading_day(day)

    def previous_close(self, moment: datetime) -> datetime:
        day = moment.astimezone(KST).date()
        while day.weekday() >= 5 or kst(day, CLOSE) > moment:
            day -= timedelta(days=1)
        return kst(day, CLOSE)

    def days(self, start: date, end: date) -> list[TradingDay]:
        return [self.trading_day(start + timedelta(days=n))
                for n in range((end - start).days + 1)
                if (start + timedelta(days=n)).weekday() < 5]
