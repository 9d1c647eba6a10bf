"""The simulator by the calendar, without sockets: which auction prints fall due when
(relayer.sim.trading_hours), and the prints themselves: auction prices and the daily roll of the
base (relayer.sim.market). Time is whatever the test says it is."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest

from relayer.krx import FUNDS, STOCK, PriceRules
from relayer.market_calendar import AlwaysOpen, Session
from relayer.sim.__main__ import SimSettings, build_server
from relayer.sim.market import Instrument, Market
from relayer.sim.trading_hours import Auction, TradingHours
from tests.support.weekday_calendar import WeekdayCalendar, kst

MONDAY = date(2026, 12, 7)
TUESDAY, FRIDAY = MONDAY + timedelta(days=1), MONDAY + timedelta(days=4)
SUNDAY = MONDAY - timedelta(days=1)
CALENDAR = WeekdayCalendar()
CODE = "A000001"


def at(day: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return kst(day, time(hh, mm, ss))


def walk_clock(hours: TradingHours, start: datetime, end: datetime,
               step: timedelta) -> list[tuple[datetime, list[Auction], Session]]:
    seen = []
    moment = start
    while moment <= end:
        result = hours.advance(moment)
        seen.append((moment, result.auctions, result.session))
        moment += step
    return seen


def test_nothing_prints_from_sunday_night_to_the_open() -> None:
    hours = TradingHours(CALENDAR, at(SUNDAY, 3))
    seen = walk_clock(hours, at(SUNDAY, 3), at(MONDAY, 8, 59, 59), timedelta(seconds=37))
    assert all(auctions == [] for _, auctions, _ in seen)
    sessions = {moment: session for moment, _, session in seen}
    assert sessions[at(SUNDAY, 3)] is Session.CLOSED
    assert {s for m, s in sessions.items() if m < at(MONDAY, 8, 30)} == {Session.CLOSED}
    assert {s for m, s in sessions.items() if m >= at(MONDAY, 8, 30)} == {
        Session.OPENING_AUCTION}


def test_the_open_and_the_close_each_fall_due_once_at_their_moment() -> None:
    hours = TradingHours(CALENDAR, at(MONDAY, 8, 59, 59))
    opening = hours.advance(at(MONDAY, 9))
    assert opening.auctions == [Auction(Session.OPENING_AUCTION, at(MONDAY, 9), MONDAY)]
    assert opening.continuous and opening.day == MONDAY
    assert hours.advance(at(MONDAY, 9)).auctions == []  # the same moment again: given already
    assert hours.advance(at(MONDAY, 9, 0, 1)).auctions == []
    closing_call = hours.advance(at(MONDAY, 15, 20))
    assert (closing_call.auctions, closing_call.session) == ([], Session.CLOSING_AUCTION)
    closed = hours.advance(at(MONDAY, 15, 30, 0))
    assert closed.auctions == [Auction(Session.CLOSING_AUCTION, at(MONDAY, 15, 30), MONDAY)]
    assert closed.session is Session.CLOSED
    assert hours.advance(at(MONDAY, 23)).auctions == []


def test_a_clock_jump_over_a_weekend_gives_each_auction_on_the_way_in_order() -> None:
    hours = TradingHours(CALENDAR, at(FRIDAY - timedelta(days=1), 14))
    step = hours.advance(at(FRIDAY + timedelta(days=3), 10))  # Thursday 14:00 -> Monday 10:00
    next_monday = FRIDAY + timedelta(days=3)
    assert [(a.session, a.at) for a in step.auctions] == [
        (Session.CLOSING_AUCTION, at(FRIDAY - timedelta(days=1), 15, 30)),
        (Session.OPENING_AUCTION, at(FRIDAY, 9)),
        (Session.CLOSING_AUCTION, at(FRIDAY, 15, 30)),
        (Session.OPENING_AUCTION, at(next_monday, 9)),
    ]
    assert (step.session, step.day) == (Session.CONTINUOUS, next_monday)


def test_restart_forgets_what_was_missed() -> None:
    hours = TradingHours(CALENDAR, at(MONDAY, 8))
    hours.restart(at(MONDAY, 10))  # e.g. nothing was subscribed over the open
    assert hours.advance(at(MONDAY, 10, 0, 1)).auctions == []
    # A clock set back (a test's) gives nothing for the way back, and the open again later.
    assert hours.advance(at(MONDAY, 8, 59)).auctions == []
    assert [a.session for a in hours.advance(at(MONDAY, 9)).auctions] == [
        Session.OPENING_AUCTION]


def test_always_open_prints_at_every_hour_without_auctions_and_days_end_at_its_close() -> None:
    calendar = AlwaysOpen(time(15, 30))
    hours = TradingHours(calendar, at(SUNDAY, 0))
    seen = walk_clock(hours, at(SUNDAY, 0), at(TUESDAY, 0), timedelta(minutes=7))
    assert all(auctions == [] for _, auctions, _ in seen)
    assert {session for _, _, session in seen} == {Session.CONTINUOUS}
    assert hours.advance(at(TUESDAY, 15, 29, 59)).day == TUESDAY
    assert hours.advance(at(TUESDAY, 15, 30)).day == TUESDAY + timedelta(days=1)


# -- the prints -------------------------------------------------------------------------------


def check_print(tick: dict[str, object], base: int, rules: PriceRules) -> int:
    lower, upper = rules.price_limits(base)
    price = tick["close"]
    assert isinstance(price, int) and rules.is_on_grid(price) and lower <= price <= upper
    assert tick["base"] == base
    assert isinstance(tick["volume"], int) and tick["volume"] >= 1
    return price


@pytest.mark.parametrize("instrument", [Instrument(70_500, STOCK), Instrument(34_610, FUNDS),
                                        Instrument(1_995, STOCK)])
def test_a_week_of_days_rolls_the_base_to_each_close_and_auctions_print_on_the_grid(
        instrument: Instrument) -> None:
    market = Market(seed=17, instruments={CODE: instrument})
    base = instrument.base_price
    assert base is not None
    previous_close = None
    for n in range(5):
        day = MONDAY + timedelta(days=n)
        opening = market.auction_tick(CODE, Session.OPENING_AUCTION, at(day, 9), day)
        if previous_close is not None:
            base = previous_close  # the day's base is yesterday's last price
        assert opening["session"] == "OPENING_AUCTION"
        assert opening["dt"] == f"{day}T00:00:00Z"  # the open, 09:00 KST
        opened = check_print(opening, base, instrument.rules)
        # Near the previous close: a dozen ticks at most.
        assert abs(opened - base) <= 12 * instrument.rules.tick_size(max(opened, base))
        assert opening["cumulativeVolume"] == opening["volume"]  # the day's first trade
        for second in range(1, 2_000):
            tick = market.next_tick(CODE, at(day, 9) + timedelta(seconds=second), day)
            assert tick["session"] == "REGULAR"
            check_print(tick, base, instrument.rules)
        closing = market.auction_tick(CODE, Session.CLOSING_AUCTION, at(day, 15, 30), day)
        assert closing["session"] == "CLOSING_AUCTION"
        assert closing["dt"] == f"{day}T06:30:00Z"
        previous_close = check_print(closing, base, instrument.rules)
        state = market.state(CODE)
        assert (state.lower, state.upper) == instrument.rules.price_limits(base)
    # The sixth day opens around the fifth's close, with its limits.
    next_monday = MONDAY + timedelta(days=7)
    market.auction_tick(CODE, Session.OPENING_AUCTION, at(next_monday, 9), next_monday)
    assert previous_close is not None
    assert market.state(CODE).base == previous_close
    assert (market.state(CODE).lower, market.state(CODE).upper) == (
        instrument.rules.price_limits(previous_close))


def test_an_auction_has_one_price_whoever_asks() -> None:
    market = Market(seed=3, instruments={CODE: Instrument(50_000, STOCK)})
    first = market.auction_tick(CODE, Session.OPENING_AUCTION, at(MONDAY, 9), MONDAY)
    again = market.auction_tick(CODE, Session.OPENING_AUCTION, at(MONDAY, 9), MONDAY)
    assert again == first
    assert market.state(CODE).cum_volume == first["volume"]  # counted once
    with pytest.raises(ValueError, match="not a call auction"):
        market.auction_tick(CODE, Session.CONTINUOUS, at(MONDAY, 9), MONDAY)


def test_the_new_day_rolls_at_its_first_continuous_print_too() -> None:
    market = Market(seed=5, instruments={CODE: Instrument(10_000, STOCK)})
    market.next_tick(CODE, at(MONDAY, 10), MONDAY)
    last = market.next_tick(CODE, at(MONDAY, 15), MONDAY)["close"]
    tick = market.next_tick(CODE, at(TUESDAY, 10), TUESDAY)  # e.g. subscribed after the open
    assert tick["base"] == last
    assert tick["cumulativeVolume"] == tick["volume"]


def test_without_days_the_base_never_rolls() -> None:
    market = Market(seed=5, instruments={CODE: Instrument(10_000, STOCK)})
    for day in (MONDAY, TUESDAY):
        assert market.next_tick(CODE, at(day, 10))["base"] == 10_000


@pytest.mark.parametrize(("environment", "name"), [({}, "always_open"),
                                                   ({"MARKET_CALENDAR": "krx"}, "krx")])
def test_the_simulator_trades_by_the_calendar_its_settings_name(
        monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], name: str) -> None:
    monkeypatch.delenv("MARKET_CALENDAR", raising=False)
    monkeypatch.delenv("STOCKING_ENV", raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    sim = build_server(SimSettings(), {})
    assert sim.calendar is not None and sim.calendar.name == name
