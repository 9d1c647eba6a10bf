"""Orders follow the market's session (docs/TRADING.md, "Sessions and orders"), through the real
app, a real Redis (prints written by the relayer's own script) and a real database, with an
injected clock and a test calendar (weekdays, 08:30 opening auction, 09:00 open, 15:20 closing
auction, 15:30 close KST): orders while the market is closed are refused with the next open
unless reserved; reservation orders hold at once, are activated at their day's opening
auction (checked again against its band) and filled by its print; DAY orders expire at the
close of their own trading day; call auction prints fill every crossing order at one price.
The money invariants hold after every test (the fixtures check them).

Prints carry Redis's clock in their stream ids, and the worker compares them with the order's
day (a reservation rests from its opening auction, a DAY order takes no print after its close):
tests that print use `Shifted`, the same week moved so that Monday 09:00 is the test's start.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.fills.worker import FillsWorker
from api.market.rules import day_start
from api.settings import ApiSettings
from relayer.bus import format_utc
from relayer.market_calendar import (
    CalendarKind,
    MarketCalendar,
    Session,
    TradingDay,
    market_calendar,
)
from tests.api.test_orders import CODE, account, order, order_count, placed
from tests.support.api import assert_problem, new_user
from tests.support.concurrency import concurrently
from tests.support.quotes import make_quote, publish_ticks, put
from tests.support.weekday_calendar import WeekdayCalendar, kst

FRIDAY, SATURDAY, SUNDAY, MONDAY = (date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22),
                                    date(2026, 11, 23))


class Shifted:
    """A calendar moved in time by `offset`: the inner calendar's 09:00 is this one's
    09:00 + offset. Lets a test's Monday open be now, where Redis stamps the prints."""

    def __init__(self, inner: MarketCalendar, offset: timedelta) -> None:
        self.inner, self.offset = inner, offset
        self.name = inner.name

    def _out(self, day: TradingDay) -> TradingDay:
        return TradingDay(day.date, day.auction_start + self.offset, day.open + self.offset,
                          day.closing_auction_start + self.offset, day.close + self.offset)

    def session_at(self, moment: datetime) -> Session:
        return self.inner.session_at(moment - self.offset)

    def day_of(self, moment: datetime) -> TradingDay:
        return self._out(self.inner.day_of(moment - self.offset))

    def previous_close(self, moment: datetime) -> datetime:
        return self.inner.previous_close(moment - self.offset) + self.offset

    def days(self, start: date, end: date) -> list[TradingDay]:
        return [self._out(day) for day in self.inner.days(start, end)]

    def at(self, day: date, hour: int, minute: int = 0) -> datetime:
        return kst(day, time(hour, minute)) + self.offset


class Clock:
    """The injected 'now' of the API and the tests."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def trade_at(client: TestClient, calendar: MarketCalendar, now: datetime) -> Clock:
    app = client.app
    assert isinstance(app, FastAPI)
    clock = Clock(now)
    app.state.resources.calendar = calendar
    app.state.resources.clock = clock
    return clock


@pytest.fixture
def week() -> Shifted:
    """The test week, moved so that Monday's open is now (prints published by a test come
    right after it)."""
    return Shifted(WeekdayCalendar(), datetime.now(UTC) - kst(MONDAY, time(9)))



def with_calendar(worker: FillsWorker, calendar: MarketCalendar) -> FillsWorker:
    worker.calendar = calendar
    return worker


def run_until_idle(worker: FillsWorker) -> None:
    while not worker.step():
        pass


def closing_quote(price: int, traded_at: datetime, base: int = 70_500) -> Any:
    """The last trade of a day (a quote received long ago: nothing has traded since)."""
    quote = make_quote(CODE, price=price, base=base, seq=1,
                       age_s=(datetime.now(UTC) - traded_at).total_seconds())
    quote.ts = format_utc(traded_at)
    return quote


def auction_print(store: redis.Redis, price: int, volume: int, session: str,
                  seq: int = 2) -> str:
    quote = make_quote(CODE, price=price, volume=volume, seq=seq)
    quote.session = session
    [entry_id] = publish_ticks(store, quote)
    return entry_id


def order_of(client: TestClient, headers: dict[str, str], order_id: int) -> dict[str, Any]:
    answer: dict[str, Any] = client.get(f"/api/v1/orders/{order_id}", headers=headers).json()
    return answer


# --------------------------------------------------------------------------------------------
# A closed market


def test_a_market_order_at_night_is_refused_with_the_next_open(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=71_200, seq=1))  # fresh: only the session refuses it
    trade_at(client, WeekdayCalendar(), kst(SUNDAY, time(3)))

    for body in ({"type": "MARKET"}, {"type": "LIMIT", "price": 70_000},
                 {"type": "LIMIT", "price": 70_000, "time_in_force": "GTC"}):
        problem = assert_problem(order(client, alice, side="BUY", quantity=1, **body), 409,
                                 "market_closed")
        # Trading opens at Monday 09:00; orders are accepted from its 08:30 auction.
        assert problem["next_open"] == "2026-11-23T09:00:00+09:00"
        assert problem["orders_accepted_from"] == "2026-11-23T08:30:00+09:00"
    assert order_count(client) == 0 and account(client, alice)["held_cash"] == 0


def test_the_session_s_refusals_change_nothing(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=71_200, seq=1))
    clock = trade_at(client, WeekdayCalendar(), kst(MONDAY, time(10)))
    assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=1, price=70_000,
                         reserve=True), 409, "market_open")
    clock.now = kst(MONDAY, time(8, 45))  # the opening auction
    for tif in ("IOC", "FOK"):
        problem = assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=1,
                                       price=70_000, time_in_force=tif), 409,
                                 "auction_in_progress")
        assert problem["session"] == "OPENING_AUCTION"
    clock.now = kst(FRIDAY, time(20))
    assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=1, price=70_000,
                         time_in_force="IOC", reserve=True), 422, "reserve_not_allowed")
    assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=1, price=70_000,
                         reserve="yes"), 422, "validation_error")
    assert order_count(client) == 0 and account(client, alice)["held_cash"] == 0


# --------------------------------------------------------------------------------------------
# Reservation orders


def test_a_reservation_placed_friday_evening_is_activated_monday_and_filled_by_the_opening_auction(
        client: TestClient, store: redis.Redis, worker: FillsWorker, week: Shifted,
        alice: dict[str, str]) -> None:
    with_calendar(worker, week)
    put(store, closing_quote(70_000, week.at(FRIDAY, 15, 30)))
    trade_at(client, week, week.at(FRIDAY, 20))

    limit = placed(client, alice, side="BUY", type="LIMIT", quantity=4, price=71_000,
                   reserve=True)
    market = placed(client, alice, side="BUY", type="MARKET", quantity=2, reserve=True)

    assert (limit["status"], limit["session"], limit["fills"]) == ("RESERVED", "CLOSED", [])
    assert datetime.fromisoformat(limit["activates_at"]) == week.at(MONDAY, 8, 30)
    assert datetime.fromisoformat(limit["expires_at"]) == week.at(MONDAY, 15, 30)
    # Held at once: the limit's value, and the market buy at Monday's upper limit (the band
    # around Friday's close, 70,000: 49,000-91,000), each with its commission.
    assert limit["held_cash"] == 4 * 71_000 + 42
    assert market["held_cash"] == 2 * 91_000 + 27
    assert worker.activate_due(week.at(MONDAY, 8, 29)) == 0  # not yet
    assert worker.activate_due(week.at(MONDAY, 8, 30)) == 2
    assert worker.activate_due(week.at(MONDAY, 8, 31)) == 0  # once
    assert order_of(client, alice, limit["id"])["status"] == "OPEN"

    entry_id = auction_print(store, 70_500, 10, "OPENING_AUCTION")
    run_until_idle(worker)

    for placed_order, quantity in ((limit, 4), (market, 2)):
        body = order_of(client, alice, placed_order["id"])
        assert (body["status"], body["held_cash"]) == ("FILLED", 0)
        assert [(f["tick_id"], f["quantity"], f["price"], f["rule"]) for f in body["fills"]] == [
            (entry_id, quantity, 70_500, "auction_price")]
    assert account(client, alice)["held_cash"] == 0


def test_a_worker_that_activates_late_still_fills_from_the_opening_auction(
        client: TestClient, store: redis.Redis, worker: FillsWorker, week: Shifted,
        alice: dict[str, str]) -> None:
    """Down over the open: the auction's print is read before the order is activated, and the
    activated order looks back to its auction's start."""
    with_calendar(worker, week)
    put(store, closing_quote(70_000, week.at(FRIDAY, 15, 30)))
    trade_at(client, week, week.at(FRIDAY, 20))
    reserved = placed(client, alice, side="BUY", type="LIMIT", quantity=3, price=70_500,
                      reserve=True)
    entry_id = auction_print(store, 70_500, 10, "OPENING_AUCTION")
    run_until_idle(worker)
    assert order_of(client, alice, reserved["id"])["status"] == "RESERVED"

    assert worker.activate_due(week.at(MONDAY, 9, 5)) == 1
    run_until_idle(worker)

    body = order_of(client, alice, reserved["id"])
    assert [(f["tick_id"], f["price"], f["rule"]) for f in body["fills"]] == [
        (entry_id, 70_500, "auction_price")]


def test_a_reservation_outside_its_day_s_band_at_activation_is_cancelled(
        client: TestClient, store: redis.Redis, worker: FillsWorker, alice: dict[str, str]
        ) -> None:
    calendar = WeekdayCalendar()
    with_calendar(worker, calendar)
    put(store, closing_quote(70_000, kst(FRIDAY, time(15, 19))))  # the band: 49,000-91,000
    trade_at(client, calendar, kst(FRIDAY, time(15, 45)))
    high = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=90_000,
                  reserve=True)
    inside = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=60_000,
                    reserve=True)
    # The closing auction's print arrives late: Monday's base is 60,000 (42,000-78,000).
    put(store, closing_quote(60_000, kst(FRIDAY, time(15, 30))))

    assert worker.activate_due(kst(MONDAY, time(8, 30))) == 2

    assert (order_of(client, alice, high["id"])["status"],
            order_of(client, alice, high["id"])["reason"]) == ("CANCELLED",
                                                               "outside_price_limits")
    assert order_of(client, alice, inside["id"])["status"] == "OPEN"
    assert account(client, alice)["held_cash"] == 60_000 + 9  # the high one's hold released


def test_cancelling_a_reserved_order_releases_its_hold(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000, seq=1))
    clock = trade_at(client, WeekdayCalendar(), kst(MONDAY, time(10)))
    placed(client, alice, side="BUY", type="MARKET", quantity=5)
    clock.now = kst(MONDAY, time(19))
    buy = placed(client, alice, side="BUY", type="LIMIT", quantity=2, price=69_000,
                 time_in_force="GTC", reserve=True)
    sell = placed(client, alice, side="SELL", type="LIMIT", quantity=3, price=72_000,
                  reserve=True)
    assert account(client, alice)["held_cash"] == 2 * 69_000 + 20
    held = client.get("/api/v1/portfolio", headers=alice).json()["positions"]
    assert [p["held_quantity"] for p in held] == [3]
    # Not modifiable: a reservation is cancelled and placed again.
    assert_problem(client.patch(f"/api/v1/orders/{buy['id']}", headers=alice,
                                json={"price": 69_100}), 409, "order_not_modifiable")

    for reserved in (buy, sell):
        answer = client.delete(f"/api/v1/orders/{reserved['id']}", headers=alice)
        assert answer.status_code == 200, answer.text
        assert (answer.json()["status"], answer.json()["reason"]) == ("CANCELLED", "user")

    assert account(client, alice)["held_cash"] == 0
    held = client.get("/api/v1/portfolio", headers=alice).json()["positions"]
    assert [p["held_quantity"] for p in held] == [0]


def test_activation_racing_users_cancels_settles_each_order_once(
        client: TestClient, store: redis.Redis, worker: FillsWorker, alice: dict[str, str]
        ) -> None:
    calendar = WeekdayCalendar()
    with_calendar(worker, calendar)
    put(store, make_quote(CODE, price=70_000, seq=1, age_s=3_600))
    trade_at(client, calendar, kst(FRIDAY, time(20)))
    reserved = [placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=69_000,
                       reserve=True)["id"] for _ in range(12)]
    cancelled = reserved[::2]  # the user cancels half of them while the worker activates

    def race(index: int) -> Any:
        if index == 0:
            return worker.activate_due(kst(MONDAY, time(8, 30)))
        return client.delete(f"/api/v1/orders/{cancelled[index - 1]}",
                             headers=alice).status_code

    activated, *by_user = concurrently(1 + len(cancelled), race)

    # A cancel before the activation ends a reserved order, after it an open one: either way
    # once, and the activation skips what the user ended first.
    assert by_user == [200] * len(cancelled)
    assert len(reserved) - len(cancelled) <= activated <= len(reserved)
    assert [order_of(client, alice, i)["status"] for i in reserved] == ["CANCELLED", "OPEN"] * 6
    assert account(client, alice)["held_cash"] == 6 * (69_000 + 10)
    assert worker.activate_due(kst(MONDAY, time(8, 31))) == 0


# --------------------------------------------------------------------------------------------
# DAY orders and the trading day


def test_day_orders_placed_friday_evening_are_not_expired_on_saturday_but_at_monday_s_close(
        client: TestClient, store: redis.Redis, worker: FillsWorker, alice: dict[str, str]
        ) -> None:
    calendar = WeekdayCalendar()
    with_calendar(worker, calendar)
    put(store, make_quote(CODE, price=70_000, seq=1, age_s=3_600))
    clock = trade_at(client, calendar, kst(FRIDAY, time(10)))
    friday = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=69_000)
    clock.now = kst(FRIDAY, time(20))
    evening = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=69_000,
                     reserve=True)
    assert datetime.fromisoformat(friday["expires_at"]) == kst(FRIDAY, time(15, 30))
    assert datetime.fromisoformat(evening["expires_at"]) == kst(MONDAY, time(15, 30))

    # Friday's close: its closing auction's print may still come for a minute.
    assert worker.expire_due(kst(FRIDAY, time(15, 30))) == 0
    assert worker.expire_due(kst(FRIDAY, time(15, 31, 1))) == 1
    assert worker.expire_due(kst(SATURDAY, time(15, 31))) == 0
    worker.activate_due(kst(SATURDAY, time(15, 31)))
    assert order_of(client, alice, evening["id"])["status"] == "RESERVED"
    assert worker.activate_due(kst(MONDAY, time(8, 30))) == 1
    assert worker.expire_due(kst(MONDAY, time(15, 29))) == 0
    # A worker down over Monday's close expires it when it comes back on Tuesday.
    assert worker.expire_due(kst(MONDAY + timedelta(days=1), time(10))) == 1
    body = order_of(client, alice, evening["id"])
    assert (body["status"], body["reason"], body["held_cash"]) == (
        "EXPIRED", "session_close", 0)
    assert account(client, alice)["held_cash"] == 0


def test_the_day_s_base_follows_the_calendar() -> None:
    calendar = WeekdayCalendar()
    # Friday evening and the weekend belong to Monday, which began (for its base) at its
    # opening auction: Friday's closing print, stamped at the close, is before it.
    assert day_start(calendar, kst(FRIDAY, time(20))) == kst(MONDAY, time(8, 30))
    assert day_start(calendar, kst(SUNDAY, time(3))) == kst(MONDAY, time(8, 30))
    assert day_start(calendar, kst(MONDAY, time(10))) == kst(MONDAY, time(8, 30))


def test_the_krx_calendar_skips_holidays_for_reservations(
        client: TestClient, store: redis.Redis, api_settings: ApiSettings,
        alice: dict[str, str]) -> None:
    krx = market_calendar(api_settings.model_copy(update={"market_calendar": CalendarKind.KRX}),
                          around=date(2026, 12, 24))
    put(store, make_quote(CODE, price=70_000, seq=1, age_s=3_600))
    # Thursday 2026-12-24 evening: Friday is Christmas, so the order is Monday's.
    trade_at(client, krx, kst(date(2026, 12, 24), time(20)))
    reserved = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=69_000,
                      reserve=True)
    assert datetime.fromisoformat(reserved["activates_at"]) == kst(date(2026, 12, 28),
                                                                   time(8, 30))
    assert datetime.fromisoformat(reserved["expires_at"]) == kst(date(2026, 12, 28),
                                                                 time(15, 30))
    # Christmas day itself is closed.
    trade_at(client, krx, kst(date(2026, 12, 25), time(10)))
    assert_problem(order(client, alice, side="BUY", type="MARKET", quantity=1), 409,
                   "market_closed")


# --------------------------------------------------------------------------------------------
# Call auctions


def test_an_auction_print_fills_crossing_orders_at_its_single_price(
        client: TestClient, store: redis.Redis, worker: FillsWorker, week: Shifted,
        api_settings: ApiSettings, alice: dict[str, str]) -> None:
    with_calendar(worker, week)
    put(store, make_quote(CODE, price=70_000, seq=1))  # fresh and marketable: still rests
    trade_at(client, week, week.at(MONDAY, 8, 45))
    bob = new_user(client, api_settings, "bob@example.com")
    high = placed(client, alice, side="BUY", type="LIMIT", quantity=3, price=72_000)
    mid = placed(client, bob, side="BUY", type="LIMIT", quantity=4, price=71_000,
                 time_in_force="GTC")
    low = placed(client, alice, side="BUY", type="LIMIT", quantity=2, price=69_000)
    market = placed(client, bob, side="BUY", type="MARKET", quantity=6)
    assert [(o["status"], o["session"], o["fills"]) for o in (high, mid, low, market)] == [
        ("OPEN", "OPENING_AUCTION", [])] * 4

    entry_id = auction_print(store, 70_500, 5, "OPENING_AUCTION")
    run_until_idle(worker)

    def fills(o: dict[str, Any], who: dict[str, str]) -> list[tuple[int, int, str]]:
        return [(f["quantity"], f["price"], f["rule"])
                for f in order_of(client, who, o["id"])["fills"]]

    # One price for all; the print's 5 shares go to the limits in price priority (72,000
    # first), the waiting market order fills in full (it does not draw on the print).
    assert fills(high, alice) == [(3, 70_500, "auction_price")]
    assert fills(mid, bob) == [(2, 70_500, "auction_price")]
    assert fills(low, alice) == []
    assert fills(market, bob) == [(6, 70_500, "auction_price")]
    assert order_of(client, bob, market["id"])["held_cash"] == 0
    assert entry_id


def test_a_market_order_in_the_opening_auction_waits_for_its_price(
        client: TestClient, store: redis.Redis, worker: FillsWorker, week: Shifted,
        alice: dict[str, str]) -> None:
    with_calendar(worker, week)
    put(store, closing_quote(70_000, week.at(FRIDAY, 15, 30)))  # stale: not refused
    trade_at(client, week, week.at(MONDAY, 8, 50))
    waiting = placed(client, alice, side="BUY", type="MARKET", quantity=10)
    assert (waiting["status"], waiting["held_cash"]) == ("OPEN", 10 * 91_000 + 136)
    assert_problem(client.patch(f"/api/v1/orders/{waiting['id']}", headers=alice,
                                json={"quantity": 5}), 409, "order_not_modifiable")

    publish_ticks(store, make_quote(CODE, price=70_100, volume=3, seq=2))  # not an auction's
    run_until_idle(worker)
    assert order_of(client, alice, waiting["id"])["filled_quantity"] == 0
    auction_print(store, 70_200, 1, "OPENING_AUCTION", seq=3)
    run_until_idle(worker)

    body = order_of(client, alice, waiting["id"])
    assert (body["status"], body["avg_fill_price"], body["held_cash"]) == (
        "FILLED", "70200.00", 0)


def test_the_closing_auction_fills_day_orders_after_the_close_instant(
        client: TestClient, store: redis.Redis, worker: FillsWorker, alice: dict[str, str]
        ) -> None:
    """The closing print lands at the close or a moment after; the day's DAY orders are
    still live for it (the expiry waits for it), and it fills them at its price."""
    now = datetime.now(UTC)
    # A week moved so that its Monday close is a second ago: the print comes after it.
    week = Shifted(WeekdayCalendar(), now - timedelta(seconds=1) - kst(MONDAY, time(15, 30)))
    with_calendar(worker, week)
    put(store, make_quote(CODE, price=70_000, seq=1))
    trade_at(client, week, week.at(MONDAY, 15, 25))
    day_order = placed(client, alice, side="BUY", type="LIMIT", quantity=2, price=70_000)
    assert worker.expire_due(week.at(MONDAY, 15, 30)) == 0
    # Nor is the new day's band checked before the closing price, its base, may print.
    assert worker.recheck_gtc_bands(week.at(MONDAY, 15, 30)) == 0
    assert worker.band_checked_day is None

    auction_print(store, 69_800, 5, "CLOSING_AUCTION")
    run_until_idle(worker)

    body = order_of(client, alice, day_order["id"])
    assert [(f["quantity"], f["price"], f["rule"]) for f in body["fills"]] == [
        (2, 69_800, "auction_price")]
    assert order_count(client) == 1


def test_a_reservation_meets_the_band_of_the_day_it_will_trade(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    # Friday closed at 80,000 (its own base 70,500): Monday's band is 56,000-104,000.
    put(store, closing_quote(80_000, kst(FRIDAY, time(15, 30))))
    trade_at(client, WeekdayCalendar(), kst(SATURDAY, time(11)))

    problem = assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=1,
                                   price=55_000, reserve=True), 422, "price_out_of_band")
    assert (problem["lower_limit"], problem["upper_limit"]) == (56_000, 104_000)
    above_friday_s = placed(client, alice, side="BUY", type="LIMIT", quantity=1,
                            price=100_000, reserve=True)
    assert above_friday_s["status"] == "RESERVED"
    assert order_count(client) == 1


def test_orders_in_the_continuous_session_say_so_and_modified_auction_orders_do_not_trade(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000, seq=1))
    clock = trade_at(client, WeekdayCalendar(), kst(MONDAY, time(8, 40)))
    resting = placed(client, alice, side="BUY", type="LIMIT", quantity=2, price=69_000)
    # Re-priced through the last trade in the auction: it rests for the auction's price.
    body = client.patch(f"/api/v1/orders/{resting['id']}", headers=alice,
                        json={"price": 71_000}).json()
    assert (body["status"], body["fills"], body["session"]) == ("OPEN", [],
                                                                "OPENING_AUCTION")
    clock.now = kst(MONDAY, time(10))
    market = placed(client, alice, side="BUY", type="MARKET", quantity=1)
    assert (market["status"], market["session"], market["expires_at"]) == (
        "FILLED", "CONTINUOUS", None)
