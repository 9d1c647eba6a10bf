"""When the market trades: trading days, their hours and the session at any moment, in
Asia/Seoul. The one answer every process uses (the API's order checks and clock, the fills
worker's expiry, the simulator's prints, the relayer's staleness), so that they never disagree
about whether the market is open.

Two calendars (`MARKET_CALENDAR`):
- `krx`: the exchange's trading days and hours (`relayer.krx_calendar.KrxCalendar`): holidays,
  the year-end closure and late opens from `exchange-calendars` (XKRX), special sessions it lags
  behind on from settings, and the sessions of a day from settings.
- `always_open`: every moment is in the continuous session, for development at night; a
  "trading day" is then the span between two closes at `MARKET_CLOSE_KST`, every calendar day
  (what StocKing did before it had a calendar).

Everything is computed from `moment`s the caller passes (an injected clock in tests), never from
the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from relayer.shared_settings import SharedSettings

# Korea has no daylight saving time: KST is always UTC+9.
KST = timezone(timedelta(hours=9), "KST")


class Session(StrEnum):
    """What the market is doing at a moment."""

    CLOSED = "CLOSED"
    OPENING_AUCTION = "OPENING_AUCTION"  # 장전 동시호가: orders collected, one price at the open
    CONTINUOUS = "CONTINUOUS"  # 정규장 접속매매
    CLOSING_AUCTION = "CLOSING_AUCTION"  # 장마감 동시호가: one price at the close


@dataclass(frozen=True, slots=True)
class TradingDay:
    """One trading day: its date (KST) and when it opens (continuous trading begins, after the
    opening auction) and closes (the closing auction's price), timezone-aware."""

    date: date
    auction_start: datetime  # the opening auction begins: orders for the day are collected
    open: datetime
    closing_auction_start: datetime
    close: datetime

    def session_at(self, moment: datetime) -> Session:
        if self.auction_start <= moment < self.open:
            return Session.OPENING_AUCTION
        if self.open <= moment < self.closing_auction_start:
            return Session.CONTINUOUS
        if self.closing_auction_start <= moment < self.close:
            return Session.CLOSING_AUCTION
        return Session.CLOSED


class MarketCalendar(Protocol):
    """What the rest of the platform asks of a calendar. `moment`s are timezone-aware."""

    @property
    def name(self) -> str:
        """`krx` or `always_open`."""
        ...

    def session_at(self, moment: datetime) -> Session:
        ...

    def day_of(self, moment: datetime) -> TradingDay:
        """The trading day an order placed at `moment` belongs to: the day whose hours
        (opening auction to close) contain it, else the next one. A DAY order expires at its
        `close`; a reservation order is activated at its `auction_start`."""
        ...

    def previous_close(self, moment: datetime) -> datetime:
        """The latest close at or before `moment`: the day's base price is the last trade
        before it (api.market.rules.day_base)."""
        ...

    def days(self, start: date, end: date) -> list[TradingDay]:
        """The trading days from `start` to `end` (KST dates, both included)."""
        ...


class AlwaysOpen:
    """Every moment is continuous trading; days end at `close` (KST) every calendar day."""

    name = "always_open"

    def __init__(self, close: time = time(15, 30)) -> None:
        self.close = close

    def _day_ending_on(self, day: date) -> TradingDay:
        close = datetime.combine(day, self.close, tzinfo=KST)
        opened = close - timedelta(days=1)
        # Continuous from the previous close to this one: no auctions, no closed hours.
        return TradingDay(day, opened, opened, close, close)

    def session_at(self, moment: datetime) -> Session:
        return Session.CONTINUOUS

    def day_of(self, moment: datetime) -> TradingDay:
        local = moment.astimezone(KST)
        today = self._day_ending_on(local.date())
        return today if local < today.close else self._day_ending_on(
            local.date() + timedelta(days=1))

    def previous_close(self, moment: datetime) -> datetime:
        return self.day_of(moment).auction_start

    def days(self, start: date, end: date) -> list[TradingDay]:
        return [self._day_ending_on(start + timedelta(days=n))
                for n in range((end - start).days + 1)]


# --- Answers every calendar gives the same way ------------------------------------------------

def next_open(calendar: MarketCalendar, moment: datetime) -> datetime:
    """When continuous trading next begins after `moment`: today's open before it, else the
    next trading day's (with `always_open`, the next day boundary)."""
    day = calendar.day_of(moment)
    return day.open if moment < day.open else calendar.day_of(day.close).open


def next_close(calendar: MarketCalendar, moment: datetime) -> datetime:
    """The close of the trading day `moment` belongs to: the next closing price."""
    return calendar.day_of(moment).close


class CalendarKind(StrEnum):
    """`MARKET_CALENDAR`."""

    KRX = "krx"
    ALWAYS_OPEN = "always_open"


def market_calendar(settings: SharedSettings, *, around: date | None = None) -> MarketCalendar:
    """The calendar the settings name (`MARKET_CALENDAR`); build it once per process. A `krx`
    one costs the library's import and its window (~2 s, docs/TRADING.md) and fails here, at
    start, if the special sessions do not fit the session times."""
    if settings.market_calendar is CalendarKind.KRX:
        # Here, not at the top: relayer.krx_calendar builds on this module.
        from relayer.krx_calendar import KrxCalendar

        return KrxCalendar(settings.market_sessions, settings.market_special_sessions,
                           around=around)
    return AlwaysOpen(settings.market_close_kst)
