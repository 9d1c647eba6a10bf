"""The market clock and calendar as the API tells them: one function per route
(api.market.routes). The answers are the process's calendar's (`Resources.calendar`,
relayer.market_calendar) at `Resources.clock()`; nothing here reads Redis or the database."""

from __future__ import annotations

from datetime import date, timedelta

from api.errors import Unprocessable
from api.market.schemas import CalendarOut, ClockOut, TradingDayOut
from api.resources import Resources
from relayer.krx_calendar import FIRST_DATE, LAST_DATE, OutsideCalendar
from relayer.market_calendar import KST, CalendarKind, Session, next_close, next_open

TIMEZONE = "Asia/Seoul"
# One year at a time (a leap year's 366 days): an answer of a bounded size, and a year is what
# a client's calendar view needs.
MAX_CALENDAR_DAYS = 366


def market_clock(resources: Resources) -> ClockOut:
    calendar = resources.calendar
    now = resources.clock().astimezone(KST)
    day = calendar.day_of(now)
    session = calendar.session_at(now)
    return ClockOut(now=now, timezone=TIMEZONE, calendar=CalendarKind(calendar.name),
                    is_open=session is not Session.CLOSED, session=session,
                    trading_day=day.date, next_open=next_open(calendar, now),
                    next_close=next_close(calendar, now))


def market_calendar_days(resources: Resources, start: date, end: date) -> CalendarOut:
    if end < start:
        raise Unprocessable(f"end ({end}) is before start ({start})", code="invalid_date_range")
    if end - start >= timedelta(days=MAX_CALENDAR_DAYS):
        raise Unprocessable(f"at most {MAX_CALENDAR_DAYS} days at a time (start to end, both "
                            "included)", code="date_range_too_long")
    if start < FIRST_DATE or end > LAST_DATE:
        # Every calendar, `always_open` too: the same answer whichever is in force.
        raise Unprocessable(f"the calendar covers {FIRST_DATE} to {LAST_DATE}",
                            code="date_out_of_calendar")
    try:
        days = resources.calendar.days(start, end)
    except OutsideCalendar as exc:
        raise Unprocessable(str(exc), code="date_out_of_calendar") from exc
    return CalendarOut(days=[TradingDayOut.of(day) for day in days])
