"""The KRX's calendar (`MARKET_CALENDAR=krx`): trading days and their hours from
`exchange-calendars` (XKRX), corrected by the special sessions of the settings, and the
sessions of each day from the settings, precomputed into plain lists so that no pandas call
happens per request (relayer.market_calendar defines what a calendar answers).
"""

from __future__ import annotations

import logging
import threading
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from relayer.market_calendar import KST, Session, TradingDay

logger = logging.getLogger(__name__)

# The days a `KrxCalendar` can answer for. Before 2000 the KRX kept other hours and sessions
# (a Saturday session until 1998); exchange-calendars and its lunar tables stop at 2050.
FIRST_DATE = date(2000, 1, 1)
LAST_DATE = date(2049, 12, 31)
# The longest run of closed days the KRX has had is under two weeks (a long Chuseok plus
# weekends); looking this far for the next or previous trading day cannot miss one.
_SEARCH_MARGIN = timedelta(days=40)
# Built at once: a year back (yesterday's close, last week's orders) to two ahead (the
# calendar endpoint, reservation orders); anything outside is added when first asked for.
_WINDOW_BACK = timedelta(days=366)
_WINDOW_AHEAD = timedelta(days=2 * 366)


class OutsideCalendar(ValueError):
    """A date the calendar does not cover (before FIRST_DATE or after LAST_DATE)."""


def _parse_hhmm(text: str, what: str) -> time:
    try:
        hours, minutes = text.strip().split(":")
        if len(minutes) != 2:
            raise ValueError
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"{what}: {text.strip()!r} is not a time of day HH:MM") from None


def _minutes(moment: time) -> int:
    return moment.hour * 60 + moment.minute


@dataclass(frozen=True, slots=True)
class SessionTimes:
    """The boundaries of a normal trading day, KST wall-clock times (`MARKET_SESSIONS`):
    the opening auction begins, continuous trading begins (the opening price), the closing
    auction begins, the close (the closing price)."""

    auction_start: time = time(8, 30)
    open: time = time(9, 0)
    closing_auction_start: time = time(15, 20)
    close: time = time(15, 30)

    def __post_init__(self) -> None:
        if not (self.auction_start <= self.open < self.closing_auction_start <= self.close):
            raise ValueError(
                "the sessions must be in order: opening auction start <= open < closing "
                f"auction start <= close (given {self})")

    def __str__(self) -> str:
        return ",".join(t.strftime("%H:%M") for t in (
            self.auction_start, self.open, self.closing_auction_start, self.close))

    @classmethod
    def parse(cls, text: str) -> SessionTimes:
        """`08:30,09:00,15:20,15:30`: the four boundaries, in order."""
        parts = text.split(",")
        if len(parts) != 4:
            raise ValueError(
                "MARKET_SESSIONS is four KST times HH:MM separated by commas: the opening "
                "auction start, the open, the closing auction start and the close "
                f"(e.g. {cls()}); given {text!r}")
        return cls(*(_parse_hhmm(part, "MARKET_SESSIONS") for part in parts))

    @property
    def opening_auction(self) -> timedelta:
        return timedelta(minutes=_minutes(self.open) - _minutes(self.auction_start))

    @property
    def closing_auction(self) -> timedelta:
        return timedelta(minutes=_minutes(self.close) - _minutes(self.closing_auction_start))

    def day(self, day: date, open_: time, close: time) -> TradingDay:
        """A trading day that opens and closes at these times: the auctions keep their normal
        lengths before the open and before the close (what the KRX does on a late-opening day:
        every session moves with the open, docs/TRADING.md)."""
        opens = datetime.combine(day, open_, tzinfo=KST)
        closes = datetime.combine(day, close, tzinfo=KST)
        if not opens < closes - self.closing_auction:
            raise ValueError(f"{day}: {open_:%H:%M}-{close:%H:%M} leaves no continuous "
                             "trading before the closing auction")
        return TradingDay(day, opens - self.opening_auction, opens,
                          closes - self.closing_auction, closes)


@dataclass(frozen=True, slots=True)
class SpecialSession:
    """A day the library does not know the KRX's hours of (`MARKET_SPECIAL_SESSIONS`): it
    opens and closes at these times (the CSAT day: 10:00-16:30), or, with neither, is closed
    (an election day declared a holiday after the library's release)."""

    day: date  # not `date`: pydantic (the settings) would read the annotation as this field
    open: time | None = None
    close: time | None = None

    def __post_init__(self) -> None:
        if (self.open is None) != (self.close is None):
            raise ValueError(f"{self.day}: a special session has both an open and a close, "
                             "or neither (closed)")
        if self.open is not None and self.close is not None and not self.open < self.close:
            raise ValueError(f"{self.day}: the open must come before the close")

    @property
    def closed(self) -> bool:
        return self.open is None

    def __str__(self) -> str:
        if self.open is None or self.close is None:
            return f"{self.day.isoformat()}=closed"
        return f"{self.day.isoformat()}={self.open:%H:%M}-{self.close:%H:%M}"

    @classmethod
    def parse(cls, text: str) -> SpecialSession:
        """`2026-11-19=10:00-16:30` or `2026-06-03=closed`."""
        day_text, sep, hours = text.strip().partition("=")
        try:
            day = date.fromisoformat(day_text.strip())
        except ValueError:
            day = None
        if not sep or day is None:
            raise ValueError(f"MARKET_SPECIAL_SESSIONS: {text.strip()!r} is not "
                             "YYYY-MM-DD=HH:MM-HH:MM or YYYY-MM-DD=closed")
        if hours.strip().lower() == "closed":
            return cls(day)
        open_text, dash, close_text = hours.partition("-")
        if not dash:
            raise ValueError(f"MARKET_SPECIAL_SESSIONS: {text.strip()!r}: the hours are "
                             "HH:MM-HH:MM (open-close) or `closed`")
        return cls(day, _parse_hhmm(open_text, "MARKET_SPECIAL_SESSIONS"),
                   _parse_hhmm(close_text, "MARKET_SPECIAL_SESSIONS"))


def parse_special_sessions(text: str) -> tuple[SpecialSession, ...]:
    """A comma-separated list of `SpecialSession.parse` entries, at most one per date."""
    sessions = tuple(SpecialSession.parse(part) for part in text.split(",") if part.strip())
    dates = [session.day for session in sessions]
    repeated = sorted({day for day in dates if dates.count(day) > 1})
    if repeated:
        raise ValueError("MARKET_SPECIAL_SESSIONS names a date more than once: "
                         + ", ".join(day.isoformat() for day in repeated))
    return tuple(sorted(sessions, key=lambda session: session.day))


# The days exchange-calendars 4.13.2 gets wrong (checked 2026-11-28 against the KRX's notices;
# sources in docs/TRADING.md, "Trading days and sessions"). Remove an entry once the library
# has it, or keep it: an entry only restates the day.
DEFAULT_SPECIAL_SESSIONS: tuple[SpecialSession, ...] = (
    SpecialSession(date(2025, 11, 13), time(10, 0), time(16, 30)),  # CSAT (2026학년도 수능)
    SpecialSession(date(2026, 6, 3)),  # 제9회 전국동시지방선거: a public holiday, KRX closed
    SpecialSession(date(2026, 7, 17)),  # 제헌절, a public holiday again from 2026
    SpecialSession(date(2026, 11, 19), time(10, 0), time(16, 30)),  # CSAT (2027학년도 수능)
    SpecialSession(date(2027, 11, 18), time(10, 0), time(16, 30)),  # CSAT (2028학년도 수능)
)

@dataclass(frozen=True, slots=True)
class ExchangeDay:
    """One session as the library gives it: how much later than its regular hours of that
    date it opens and closes (a late open: `open_shift` of an hour)."""

    date: date
    open_shift: timedelta = timedelta(0)
    close_shift: timedelta = timedelta(0)


# The sessions from `start` to `end` (both included): the seam to the library.
ExchangeSessions = Callable[[date, date], list[ExchangeDay]]


def _regular(times: Sequence[tuple[Any, time]], day: date) -> time:
    """The library's regular time in force on `day`, from its (start date or None, time)
    table."""
    current = times[0][1]
    for start, value in times:
        if start is None or start.date() <= day:
            current = value
    return current


def xkrx_sessions(start: date, end: date) -> list[ExchangeDay]:
    """The KRX's sessions from exchange-calendars (XKRX): its holidays, the year-end closure
    and its late opens. The only code that runs pandas, once per window, never per request."""
    import exchange_calendars  # ~0.3 s of pandas and numpy: paid only with a `krx` calendar

    with warnings.catch_warnings():
        # exchange-calendars 4.13 reads `Series.values` of tz-aware series, which pandas 3.1
        # deprecates (Pandas4Warning, once per calendar): the library's to fix, not ours.
        warnings.simplefilter("ignore", DeprecationWarning)
        # The library wants start < end; one day more, and the days after `end` dropped below.
        calendar = exchange_calendars.get_calendar(
            "XKRX", start=start.isoformat(), end=(end + timedelta(days=1)).isoformat())
        schedule = calendar.schedule
    days: list[ExchangeDay] = []
    for label, opens, closes in zip(schedule.index, schedule["open"], schedule["close"],
                                    strict=True):
        day = label.date()
        if day > end:
            continue
        opened = opens.tz_convert(KST).to_pydatetime()
        closed = closes.tz_convert(KST).to_pydatetime()
        # Shifts against the library's own regular hours (09:00-15:30 today), so that ours
        # (MARKET_SESSIONS) can differ from its without every day looking special.
        days.append(ExchangeDay(
            day,
            opened - datetime.combine(day, _regular(calendar.open_times, day), tzinfo=KST),
            closed - datetime.combine(day, _regular(calendar.close_times, day), tzinfo=KST)))
    return days


@dataclass(frozen=True, slots=True)
class _Table:
    """The precomputed days from `first` to `last` (calendar dates covered), with their
    closes and dates in parallel lists for bisection."""

    first: date
    last: date
    days: list[TradingDay]
    closes: list[datetime]
    dates: list[date]

    def covers(self, start: date, end: date) -> bool:
        return self.first <= start and end <= self.last


class KrxCalendar:
    """The KRX: trading days from the library (`sessions_source`, XKRX by default), corrected
    by `special` sessions, with the session boundaries of `sessions`, shifted with the day's
    late open or close.

    Precomputed into sorted lists of plain `TradingDay`s, so a question costs a bisection; a
    moment outside the window built extends it (under a lock: API routes run in threads).
    Past days get today's session boundaries: the KRX's hours of their time are not modelled.
    """

    name = "krx"

    def __init__(self, sessions: SessionTimes = SessionTimes(),
                 special: Sequence[SpecialSession] = DEFAULT_SPECIAL_SESSIONS, *,
                 around: date | None = None,
                 sessions_source: ExchangeSessions = xkrx_sessions) -> None:
        self.sessions = sessions
        self.special = {session.day: session for session in special}
        self._source = sessions_source
        self._lock = threading.Lock()
        center = around or datetime.now(KST).date()
        self._table = _Table(center, center, [], [], [])  # replaced at once
        self._build(max(FIRST_DATE, center - _WINDOW_BACK), min(LAST_DATE, center + _WINDOW_AHEAD))
        # Refused at start, not at the first request on that day: a special session whose
        # hours leave no continuous trading (checked for every one, in the window or not).
        for session in self.special.values():
            if session.open is not None and session.close is not None:
                sessions.day(session.day, session.open, session.close)

    # -- building -----------------------------------------------------------------------------

    def _compute(self, start: date, end: date) -> list[TradingDay]:
        normal_open = datetime.combine(start, self.sessions.open)
        normal_close = datetime.combine(start, self.sessions.close)
        days: dict[date, TradingDay] = {}
        for exchange_day in self._source(start, end):
            opens = (normal_open + exchange_day.open_shift).time()
            closes = (normal_close + exchange_day.close_shift).time()
            days[exchange_day.date] = self.sessions.day(exchange_day.date, opens, closes)
        for day, session in self.special.items():
            if not start <= day <= end:
                continue
            if session.open is None or session.close is None:
                days.pop(day, None)
            else:
                days[day] = self.sessions.day(day, session.open, session.close)
        return [days[day] for day in sorted(days)]

    def _build(self, start: date, end: date) -> None:
        days = self._compute(start, end)
        # One assignment: a reader in another thread sees the old table or the new one.
        self._table = _Table(start, end, days, [day.close for day in days],
                             [day.date for day in days])

    def _cover(self, start: date, end: date) -> _Table:
        """The precomputed days, made to cover `start` to `end` (clamped to the calendar's
        span) first if they do not."""
        start, end = max(start, FIRST_DATE), min(end, LAST_DATE)
        table = self._table
        if table.covers(start, end):
            return table
        with self._lock:
            table = self._table
            if table.covers(start, end):
                return table
            # Whole years at a time, so that a client walking the calendar does not rebuild it
            # every day; the readers' lists are replaced, never changed in place.
            start = min(table.first, date(start.year, 1, 1))
            end = max(table.last, min(LAST_DATE, date(end.year, 12, 31)))
            logger.info("market calendar: extending the KRX days to %s - %s", start, end)
            self._build(start, end)
            return self._table

    def _cover_moment(self, moment: datetime) -> _Table:
        if moment.tzinfo is None:
            raise ValueError("a market calendar needs timezone-aware moments")
        local = moment.astimezone(KST).date()
        if not FIRST_DATE <= local <= LAST_DATE:
            raise OutsideCalendar(f"{local} is outside the KRX calendar ({FIRST_DATE} to "
                                  f"{LAST_DATE})")
        return self._cover(local - _SEARCH_MARGIN, local + _SEARCH_MARGIN)

    # -- MarketCalendar -----------------------------------------------------------------------

    def day_of(self, moment: datetime) -> TradingDay:
        table = self._cover_moment(moment)
        index = bisect_right(table.closes, moment)  # the first day that closes after `moment`
        if index == len(table.days):
            raise OutsideCalendar(f"no KRX trading day after {moment} before {LAST_DATE}")
        return table.days[index]

    def session_at(self, moment: datetime) -> Session:
        return self.day_of(moment).session_at(moment)

    def previous_close(self, moment: datetime) -> datetime:
        table = self._cover_moment(moment)
        index = bisect_right(table.closes, moment) - 1  # the last close at or before it
        if index < 0:
            raise OutsideCalendar(f"no KRX close before {moment} after {FIRST_DATE}")
        return table.closes[index]

    def days(self, start: date, end: date) -> list[TradingDay]:
        if start < FIRST_DATE or end > LAST_DATE:
            raise OutsideCalendar(f"the KRX calendar covers {FIRST_DATE} to {LAST_DATE}")
        table = self._cover(start, end)
        return table.days[bisect_left(table.dates, start):bisect_right(table.dates, end)]
