"""When the simulator prints, by the market calendar: one connection's view of the sessions.

Pure: no I/O and no clock. The connection's tick loop (relayer.sim.session) reads its clock and
hands each moment to `TradingHours.advance`, which answers what the market is doing now and which
call-auction prints fell due since the moment before:

- CLOSED, and the auctions' collection periods (08:30-09:00, 15:20-15:30 on a KRX day): nothing
  prints;
- at the open, each subscribed instrument's opening auction price, then continuous prints;
- at the close, its closing auction price.

A day without an auction (`AlwaysOpen`'s days: the open is the day's start and the close its
end) has no auction print. The calendar is asked once per trading day, not on every tick: the
loop wakes up to a thousand times a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from relayer.market_calendar import MarketCalendar, Session, TradingDay

_INSTANT = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Auction:
    """A call auction's print: which (`OPENING_AUCTION` or `CLOSING_AUCTION`), when (the open or
    the close), and of which trading day."""

    session: Session
    at: datetime
    day: date


@dataclass(frozen=True, slots=True)
class Step:
    """What is due at a moment: the auctions that printed since the last step (in time order),
    the session now, and the trading day continuous prints belong to."""

    auctions: list[Auction]
    session: Session
    day: date

    @property
    def continuous(self) -> bool:
        return self.session is Session.CONTINUOUS


def auctions_of(day: TradingDay) -> list[Auction]:
    """The auction prints of a trading day: none for an auction of no length."""
    auctions = []
    if day.auction_start < day.open:
        auctions.append(Auction(Session.OPENING_AUCTION, day.open, day.date))
    if day.closing_auction_start < day.close:
        auctions.append(Auction(Session.CLOSING_AUCTION, day.close, day.date))
    return auctions


class TradingHours:
    """Follows one connection's clock through the calendar's trading days.

    `advance(now)` returns the auctions whose moment lies in (the previous moment, `now`]:
    an auction at the very moment of the previous step was already given. A clock that goes
    back (a test resetting it) gives nothing for the way back; `restart(now)` forgets the past,
    for a connection that stopped printing for a while (nothing subscribed, a stall): prints it
    did not make then are not owed.
    """

    def __init__(self, calendar: MarketCalendar, start: datetime) -> None:
        self._calendar = calendar
        self.restart(start)

    def restart(self, now: datetime) -> None:
        self._since = now
        self._day = self._calendar.day_of(now)  # the day containing `now`, or the next one

    def advance(self, now: datetime) -> Step:
        if now < self._since:
            self.restart(now)
        due: list[Auction] = []
        while True:
            day = self._day
            due.extend(a for a in auctions_of(day) if self._since < a.at <= now)
            if now < day.close:
                break
            following = self._calendar.day_of(day.close)
            if following.close <= day.close:
                # A calendar that counts the closing moment into its day: the next is after it.
                following = self._calendar.day_of(day.close + _INSTANT)
            self._day = following
        self._since = now
        return Step(due, self._day.session_at(now), self._day.date)
