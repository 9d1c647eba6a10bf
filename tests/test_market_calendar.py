"""The market calendar (relayer.market_calendar): the KRX's 2026 trading days against its
published holidays, late opens, sessions at their boundary instants, which day an order
belongs to across weekends and holidays, `AlwaysOpen` keeping the behaviour of before, and the
settings that configure them. Sources of every date: docs/TRADING.md, "Trading days and
sessions"."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from pydantic import ValidationError

from relayer.krx_calendar import (
    DEFAULT_SPECIAL_SESSIONS,
    ExchangeDay,
    KrxCalendar,
    OutsideCalendar,
    SessionTimes,
    SpecialSession,
    parse_special_sessions,
    xkrx_sessions,
)
from relayer.market_calendar import (
    KST,
    AlwaysOpen,
    CalendarKind,
    MarketCalendar,
    Session,
    market_calendar,
    next_close,
    next_open,
)
from relayer.shared_settings import Environment, SharedSettings

# The KRX's closing days of 2026 that fall on weekdays (KRX 2026 휴장일 notice; the library's
# XKRX; docs/TRADING.md lists the source of each).
KRX_2026_CLOSED = {
    date(2026, 1, 1): "신정",
    date(2026, 2, 16): "설날 연휴",
    date(2026, 2, 17): "설날",
    date(2026, 2, 18): "설날 연휴",
    date(2026, 3, 2): "삼일절 대체공휴일",
    date(2026, 5, 1): "근로자의 날",
    date(2026, 5, 5): "어린이날",
    date(2026, 5, 25): "부처님오신날 대체공휴일",
    date(2026, 6, 3): "제9회 전국동시지방선거",
    date(2026, 7, 17): "제헌절 (a public holiday again from 2026)",
    date(2026, 8, 17): "광복절 대체공휴일",
    date(2026, 9, 24): "추석 연휴",
    date(2026, 9, 25): "추석",
    date(2026, 10, 5): "개천절 대체공휴일",
    date(2026, 10, 9): "한글날",
    date(2026, 12, 25): "성탄절",
    date(2026, 12, 31): "연말 휴장일",
}


@pytest.fixture(scope="module")
def krx() -> KrxCalendar:
    # One per module: building the window costs the library about two seconds.
    return KrxCalendar(around=date(2026, 11, 28))


def kst(*args: int) -> datetime:
    return datetime(*args, tzinfo=KST)  # type: ignore[misc]


def hours(day: object) -> tuple[str, str, str, str]:
    from relayer.market_calendar import TradingDay
    assert isinstance(day, TradingDay)
    return tuple(f"{moment:%H:%M}" for moment in (  # type: ignore[return-value]
        day.auction_start, day.open, day.closing_auction_start, day.close))


# --- the trading days ---------------------------------------------------------------------


def test_2026_trading_days_are_the_weekdays_the_krx_does_not_close(krx: KrxCalendar) -> None:
    days = krx.days(date(2026, 1, 1), date(2026, 12, 31))
    weekdays = {date(2026, 1, 1) + timedelta(days=n) for n in range(365)
                if (date(2026, 1, 1) + timedelta(days=n)).weekday() < 5}
    assert {day.date for day in days} == weekdays - set(KRX_2026_CLOSED)
    assert len(days) == 244
    assert [day.date for day in days] == sorted(day.date for day in days)
    # 현충일 (June 6) is a Saturday in 2026 and has no substitute: the Friday before trades.
    assert date(2026, 6, 5) in {day.date for day in days}


def test_the_library_lags_on_the_2026_election_and_constitution_day() -> None:
    """Why DEFAULT_SPECIAL_SESSIONS closes 2026-06-03 and 2026-07-17: exchange-calendars
    4.13.2 (the locked version) still trades them. When an upgrade knows them, this fails and
    the entries may go (they only restate the day)."""
    library = {day.date for day in xkrx_sessions(date(2026, 5, 1), date(2026, 7, 31))}
    assert {date(2026, 6, 3), date(2026, 7, 17)} <= library
    assert {date(2026, 5, 1), date(2026, 5, 5), date(2026, 5, 25)}.isdisjoint(library)
    csat = [day for day in xkrx_sessions(date(2026, 11, 19), date(2026, 11, 19))]
    assert csat == [ExchangeDay(date(2026, 11, 19))]  # no late open known to the library


def test_the_first_trading_day_of_2026_and_2027_opens_at_ten(krx: KrxCalendar) -> None:
    first_2026 = krx.days(date(2026, 1, 1), date(2026, 1, 5))[0]
    assert first_2026.date == date(2026, 1, 2)
    # Every session moves with the late open but the close (the KRX keeps 15:30 that day).
    assert hours(first_2026) == ("09:30", "10:00", "15:20", "15:30")
    first_2027 = krx.days(date(2027, 1, 1), date(2027, 1, 8))[0]
    assert (first_2027.date, hours(first_2027)) == (date(2027, 1, 4),
                                                    ("09:30", "10:00", "15:20", "15:30"))
    # The last trading day of 2026 is a normal day; the 31st is closed.
    last = krx.days(date(2026, 12, 28), date(2026, 12, 31))[-1]
    assert (last.date, hours(last)) == (date(2026, 12, 30), ("08:30", "09:00", "15:20", "15:30"))


@pytest.mark.parametrize("day", [date(2025, 11, 13), date(2026, 11, 19), date(2027, 11, 18)])
def test_the_csat_day_opens_at_ten_and_closes_at_half_past_four(
        krx: KrxCalendar, day: date) -> None:
    (csat,) = krx.days(day, day)
    assert hours(csat) == ("09:30", "10:00", "16:20", "16:30")
    assert krx.session_at(kst(day.year, day.month, day.day, 9, 0)) is Session.CLOSED
    assert krx.session_at(kst(day.year, day.month, day.day, 9, 45)) is Session.OPENING_AUCTION
    assert krx.session_at(kst(day.year, day.month, day.day, 15, 45)) is Session.CONTINUOUS
    assert krx.session_at(kst(day.year, day.month, day.day, 16, 25)) is Session.CLOSING_AUCTION
    assert krx.session_at(kst(day.year, day.month, day.day, 16, 30)) is Session.CLOSED


# --- sessions at their boundaries -----------------------------------------------------------


@pytest.mark.parametrize(("at", "session"), [
    ((8, 29, 59), Session.CLOSED),
    ((8, 30, 0), Session.OPENING_AUCTION),
    ((8, 59, 59), Session.OPENING_AUCTION),
    ((9, 0, 0), Session.CONTINUOUS),
    ((15, 19, 59), Session.CONTINUOUS),
    ((15, 20, 0), Session.CLOSING_AUCTION),
    ((15, 29, 59), Session.CLOSING_AUCTION),
    ((15, 30, 0), Session.CLOSED),
])
def test_sessions_at_their_boundary_instants(
        krx: KrxCalendar, at: tuple[int, int, int], session: Session) -> None:
    moment = kst(2026, 11, 27, *at)  # a Friday
    assert krx.session_at(moment) is session
    # The same instant in UTC is the same answer.
    assert krx.session_at(moment.astimezone(UTC)) is session


def test_weekends_holidays_and_nights_are_closed(krx: KrxCalendar) -> None:
    assert krx.session_at(kst(2026, 11, 29, 3, 0)) is Session.CLOSED  # a Sunday night
    assert krx.session_at(kst(2026, 11, 28, 11, 0)) is Session.CLOSED  # a Saturday noon
    assert krx.session_at(kst(2026, 12, 25, 11, 0)) is Session.CLOSED  # Christmas
    assert krx.session_at(kst(2026, 6, 3, 11, 0)) is Session.CLOSED  # the local election
    assert krx.session_at(kst(2026, 11, 27, 23, 0)) is Session.CLOSED


def test_session_times_from_settings_move_every_day(krx: KrxCalendar) -> None:
    """KRX keeps changing its hours: a new schedule is a setting, and late opens shift with
    it."""
    later = KrxCalendar(SessionTimes(time(8, 0), time(8, 30), time(15, 20), time(15, 30)),
                        around=date(2026, 11, 28))
    assert hours(later.day_of(kst(2026, 11, 27, 7, 0))) == ("08:00", "08:30", "15:20", "15:30")
    # The first trading day opens 1 h after the regular open: here 09:30, its auction at 09:00.
    first = later.days(date(2026, 1, 2), date(2026, 1, 2))[0]
    assert hours(first) == ("09:00", "09:30", "15:20", "15:30")


# --- which day an order belongs to ---------------------------------------------------------


def test_a_friday_evening_belongs_to_monday(krx: KrxCalendar) -> None:
    friday_evening = kst(2026, 11, 27, 18, 0)
    monday = krx.day_of(friday_evening)
    assert monday.date == date(2026, 11, 30)
    assert monday.auction_start == kst(2026, 11, 30, 8, 30)
    assert monday.close == kst(2026, 11, 30, 15, 30)
    for moment in (kst(2026, 11, 28, 12, 0), kst(2026, 11, 30, 8, 0), kst(2026, 11, 30, 15, 0)):
        assert krx.day_of(moment) == monday
    assert krx.day_of(kst(2026, 11, 30, 15, 30)).date == date(2026, 12, 1)
    # The close before Monday morning is Friday's; at Monday's close it is Monday's.
    assert krx.previous_close(kst(2026, 11, 30, 8, 0)) == kst(2026, 11, 27, 15, 30)
    assert krx.previous_close(kst(2026, 11, 30, 15, 29, 59)) == kst(2026, 11, 27, 15, 30)
    assert krx.previous_close(kst(2026, 11, 30, 15, 30)) == kst(2026, 11, 30, 15, 30)


def test_a_friday_before_a_monday_holiday_belongs_to_tuesday(krx: KrxCalendar) -> None:
    # 2026-10-05 (Monday) is 개천절's substitute holiday.
    assert krx.day_of(kst(2026, 10, 2, 16, 0)).date == date(2026, 10, 6)
    assert krx.previous_close(kst(2026, 10, 6, 9, 0)) == kst(2026, 10, 2, 15, 30)
    # Across Chuseok (Thursday and Friday) and the weekend: Wednesday to Monday.
    assert krx.day_of(kst(2026, 9, 23, 15, 30)).date == date(2026, 9, 28)
    assert krx.previous_close(kst(2026, 9, 28, 8, 0)) == kst(2026, 9, 23, 15, 30)
    # Across the year end: December 30 to January 4, which opens late.
    new_year = krx.day_of(kst(2026, 12, 30, 16, 0))
    assert (new_year.date, new_year.open) == (date(2027, 1, 4), kst(2027, 1, 4, 10, 0))
    # The CSAT day's close is 16:30: at 16:00 an order is still the day's.
    assert krx.day_of(kst(2026, 11, 19, 16, 0)).date == date(2026, 11, 19)
    assert krx.previous_close(kst(2026, 11, 20, 9, 0)) == kst(2026, 11, 19, 16, 30)


def test_next_open_and_next_close(krx: KrxCalendar) -> None:
    assert next_open(krx, kst(2026, 11, 27, 8, 45)) == kst(2026, 11, 27, 9, 0)
    assert next_open(krx, kst(2026, 11, 27, 9, 0)) == kst(2026, 11, 30, 9, 0)
    assert next_close(krx, kst(2026, 11, 27, 9, 0)) == kst(2026, 11, 27, 15, 30)
    assert next_close(krx, kst(2026, 11, 27, 15, 30)) == kst(2026, 11, 30, 15, 30)
    assert next_open(krx, kst(2026, 11, 18, 17, 0)) == kst(2026, 11, 19, 10, 0)


def test_moments_outside_the_window_extend_it(krx: KrxCalendar) -> None:
    # 2031-01-01 is a Wednesday holiday (신정); the window built reaches 2028 only.
    day = krx.day_of(kst(2030, 12, 31, 16, 0))
    assert day.date == date(2031, 1, 2)
    assert krx.days(date(2012, 1, 2), date(2012, 1, 2))[0].open == kst(2012, 1, 2, 10, 0)
    with pytest.raises(OutsideCalendar):
        krx.days(date(1999, 1, 1), date(1999, 1, 31))
    with pytest.raises(OutsideCalendar):
        krx.day_of(kst(2050, 1, 3, 9, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        krx.day_of(datetime(2026, 11, 27, 9, 0))


def test_special_sessions_add_change_and_close_days() -> None:
    def library(start: date, end: date) -> list[ExchangeDay]:
        return [ExchangeDay(date(2026, 11, 26)), ExchangeDay(date(2026, 11, 27))]

    calendar = KrxCalendar(special=[SpecialSession(date(2026, 11, 27)),
                                    SpecialSession(date(2026, 11, 28), time(10), time(12))],
                           around=date(2026, 11, 27), sessions_source=library)
    days = calendar.days(date(2026, 11, 1), date(2026, 11, 30))
    assert [(day.date, hours(day)) for day in days] == [
        (date(2026, 11, 26), ("08:30", "09:00", "15:20", "15:30")),
        (date(2026, 11, 28), ("09:30", "10:00", "11:50", "12:00"))]


# --- AlwaysOpen: what StocKing did before it had a calendar -----------------------------


@pytest.mark.parametrize(("moment", "close"), [
    (kst(2026, 11, 29, 3, 0), kst(2026, 11, 29, 15, 30)),  # Sunday night: Sunday trades
    (kst(2026, 11, 27, 15, 29, 59), kst(2026, 11, 27, 15, 30)),
    (kst(2026, 11, 27, 15, 30), kst(2026, 11, 28, 15, 30)),  # at the close: the next day's
    (kst(2026, 11, 27, 23, 59), kst(2026, 11, 28, 15, 30)),
    (kst(2026, 12, 25, 10, 0), kst(2026, 12, 25, 15, 30)),  # Christmas trades
    (datetime(2026, 11, 27, 6, 30, tzinfo=UTC), kst(2026, 11, 28, 15, 30)),  # 15:30 KST
])
def test_always_open_keeps_the_old_day(moment: datetime, close: datetime) -> None:
    """Every moment trades; a day ends at MARKET_CLOSE_KST every calendar day (what
    `session_close_after` and `trading_day_start` of api.market.rules did)."""
    calendar: MarketCalendar = AlwaysOpen(time(15, 30))
    assert calendar.session_at(moment) is Session.CONTINUOUS
    assert calendar.day_of(moment).close == close == next_close(calendar, moment)
    assert calendar.previous_close(moment) == close - timedelta(days=1)


def test_always_open_days_are_every_calendar_day() -> None:
    days = AlwaysOpen(time(15, 30)).days(date(2026, 11, 27), date(2026, 11, 29))
    assert [day.date for day in days] == [date(2026, 11, 27), date(2026, 11, 28),
                                         date(2026, 11, 29)]


# --- settings ------------------------------------------------------------------------------


def test_the_calendar_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MARKET_CALENDAR", "STOCKING_ENV", "MARKET_SESSIONS",
                 "MARKET_SPECIAL_SESSIONS", "MARKET_CLOSE_KST"):
        monkeypatch.delenv(name, raising=False)
    assert SharedSettings().market_calendar is CalendarKind.ALWAYS_OPEN
    monkeypatch.setenv("STOCKING_ENV", "production")
    assert SharedSettings().market_calendar is CalendarKind.KRX
    monkeypatch.setenv("MARKET_CALENDAR", "always_open")  # explicit: allowed in production
    assert SharedSettings().market_calendar is CalendarKind.ALWAYS_OPEN
    settings = SharedSettings(stocking_env=Environment.DEVELOPMENT, market_calendar="krx")
    assert isinstance(market_calendar(settings, around=date(2026, 11, 28)), KrxCalendar)
    monkeypatch.setenv("MARKET_CLOSE_KST", "15:00")
    always = market_calendar(SharedSettings())
    assert isinstance(always, AlwaysOpen) and always.close == time(15, 0)


def test_session_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKET_SESSIONS", "08:00, 08:30,15:20,15:30")
    monkeypatch.setenv("MARKET_SPECIAL_SESSIONS", "2027-11-18=10:00-16:30, 2026-06-03=closed")
    settings = SharedSettings()
    assert settings.market_sessions == SessionTimes(time(8), time(8, 30), time(15, 20),
                                                    time(15, 30))
    assert settings.market_special_sessions == (
        SpecialSession(date(2026, 6, 3)),
        SpecialSession(date(2027, 11, 18), time(10), time(16, 30)))
    monkeypatch.setenv("MARKET_SPECIAL_SESSIONS", "")
    assert SharedSettings().market_special_sessions == ()
    monkeypatch.delenv("MARKET_SPECIAL_SESSIONS")
    assert SharedSettings().market_special_sessions == DEFAULT_SPECIAL_SESSIONS
    assert parse_special_sessions(",".join(map(str, DEFAULT_SPECIAL_SESSIONS))) == (
        DEFAULT_SPECIAL_SESSIONS)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("MARKET_CALENDAR", "nyse", "market_calendar"),
    ("MARKET_SESSIONS", "08:30,09:00,15:30", "four KST times"),
    ("MARKET_SESSIONS", "09:00,08:30,15:20,15:30", "in order"),
    ("MARKET_SESSIONS", "08:30,09:00,15:20,25:00", "not a time of day"),
    ("MARKET_SESSIONS", "08:30,9,15:20,15:30", "not a time of day"),
    ("MARKET_SPECIAL_SESSIONS", "2026-13-01=10:00-16:30", "YYYY-MM-DD=HH:MM-HH:MM"),
    ("MARKET_SPECIAL_SESSIONS", "2026-11-19", "YYYY-MM-DD=HH:MM-HH:MM"),
    ("MARKET_SPECIAL_SESSIONS", "2026-11-19=10:00", "HH:MM-HH:MM"),
    ("MARKET_SPECIAL_SESSIONS", "2026-11-19=16:30-10:00", "open must come before"),
    ("MARKET_SPECIAL_SESSIONS", "2026-11-19=10:00-10:05", "no continuous trading"),
    ("MARKET_SPECIAL_SESSIONS", "2026-11-19=10:00-16:30,2026-11-19=closed", "more than once"),
    ("MARKET_CLOSE_KST", "noon", "market_close_kst"),
])
def test_bad_calendar_settings_are_refused_at_start(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        SharedSettings()
