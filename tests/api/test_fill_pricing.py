"""Fills priced as the exchange would (docs/TRADING.md), through the real app, a real Redis
(prints written by the relayer's own script, so quotes carry their stream entry id) and a real
database: one print's volume is given once across every order and process that fills from it;
each fill names its print and its rule; a re-priced order trades on arrival without a print
filling it twice; the band is the day's; GTC orders outside a new day's band are cancelled."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.fills.worker import FillsWorker
from api.market.rules import KST, day_start
from api.models import Fill, TradePrint
from api.orders.checks import day_base
from api.settings import ApiSettings
from relayer.bus import format_utc
from relayer.market_calendar import AlwaysOpen
from tests.api.test_orders import CODE, account, order, placed
from tests.support.api import assert_problem, database, new_user
from tests.support.concurrency import concurrently
from tests.support.quotes import NAMES, make_quote, publish_ticks, put

CLOSE = time(15, 30)
ALWAYS_OPEN = AlwaysOpen(CLOSE)



def run_until_idle(worker: FillsWorker) -> None:
    while not worker.step():
        pass


def print_of(store: redis.Redis, *, price: int, volume: int, seq: int, **extra: Any) -> str:
    """Publish one print as the relayer does; its stream entry id."""
    [entry_id] = publish_ticks(store, make_quote(CODE, price=price, volume=volume, seq=seq,
                                                 **extra))
    return entry_id


def filled_from(client: TestClient, print_id: str, side: str = "BUY") -> int:
    return int(database(client).call(lambda s: s.scalar(
        select(func.coalesce(func.sum(Fill.quantity), 0))
        .where(Fill.tick_id == print_id, Fill.side == side))))


def users(client: TestClient, settings: ApiSettings, count: int) -> list[dict[str, str]]:
    return [new_user(client, settings, f"trader{i}@example.com") for i in range(count)]


def with_clock(client: TestClient, now: datetime) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    app.state.resources.clock = lambda: now


# --------------------------------------------------------------------------------------------
# One print's volume


def test_a_quote_names_its_print_and_a_fill_in_the_request_records_it(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    entry_id = print_of(store, price=71_200, volume=10, seq=7)

    market = placed(client, alice, side="BUY", type="MARKET", quantity=2)
    ioc = placed(client, alice, side="BUY", type="LIMIT", quantity=3, price=71_500,
                 time_in_force="IOC")

    assert [(f["tick_id"], f["tick_seq"], f["price"], f["rule"]) for f in market["fills"]] == [
        (entry_id, 7, 71_200, "market_order_last_trade")]
    assert [(f["tick_id"], f["price"], f["rule"]) for f in ioc["fills"]] == [
        (entry_id, 71_200, "aggressor_last_trade")]


def test_ioc_orders_of_many_users_share_one_print(
        client: TestClient, store: redis.Redis, api_settings: ApiSettings) -> None:
    entry_id = print_of(store, price=70_000, volume=4, seq=1)
    traders = users(client, api_settings, 6)

    answers = concurrently(6, lambda i: order(
        client, traders[i], side="BUY", type="LIMIT", quantity=4, price=70_000,
        time_in_force="IOC"))

    assert [a.status_code for a in answers] == [201] * 6
    filled = sorted(a.json()["filled_quantity"] for a in answers)
    assert sum(filled) == 4  # not 4 each: the print had 4 shares
    assert {a.json()["status"] for a in answers} <= {"FILLED", "PARTIALLY_FILLED", "CANCELLED"}
    assert filled_from(client, entry_id) == 4
    row = database(client).call(lambda s: s.get(TradePrint, (entry_id, "BUY")))
    assert row is not None and (row.volume, row.consumed, row.price) == (4, 4, 70_000)


def test_each_side_has_the_print_s_volume(
        client: TestClient, store: redis.Redis, api_settings: ApiSettings,
        alice: dict[str, str]) -> None:
    # A virtual buyer takes the real seller's place, a virtual seller the real buyer's: the
    # book does not trade with itself, so each side may take the printed volume.
    put(store, make_quote(CODE, price=70_000, seq=1))
    placed(client, alice, side="BUY", type="MARKET", quantity=10)
    entry_id = print_of(store, price=70_000, volume=3, seq=2)
    bob = new_user(client, api_settings, "bob@example.com")

    sell = placed(client, alice, side="SELL", type="LIMIT", quantity=5, price=70_000,
                  time_in_force="IOC")
    buy = placed(client, bob, side="BUY", type="LIMIT", quantity=5, price=70_000,
                 time_in_force="IOC")

    assert (sell["filled_quantity"], buy["filled_quantity"]) == (3, 3)
    assert (filled_from(client, entry_id, "SELL"), filled_from(client, entry_id)) == (3, 3)


def test_fok_fills_only_from_what_the_print_has_left(
        client: TestClient, store: redis.Redis, api_settings: ApiSettings) -> None:
    print_of(store, price=70_000, volume=10, seq=1)
    first, second = users(client, api_settings, 2)
    assert placed(client, first, side="BUY", type="LIMIT", quantity=6, price=70_000,
                  time_in_force="IOC")["filled_quantity"] == 6

    fok = placed(client, second, side="BUY", type="LIMIT", quantity=5, price=70_000,
                 time_in_force="FOK")

    assert (fok["status"], fok["reason"], fok["fills"]) == ("CANCELLED", "fok_not_fillable", [])
    assert account(client, second)["held_cash"] == 0


def test_a_market_order_fills_in_full_and_leaves_the_print_to_limit_orders(
        client: TestClient, store: redis.Redis, api_settings: ApiSettings) -> None:
    entry_id = print_of(store, price=70_000, volume=4, seq=1)
    first, second = users(client, api_settings, 2)

    market = placed(client, first, side="BUY", type="MARKET", quantity=100)
    ioc = placed(client, second, side="BUY", type="LIMIT", quantity=10, price=70_000,
                 time_in_force="IOC")

    assert (market["status"], market["filled_quantity"]) == ("FILLED", 100)
    assert ioc["filled_quantity"] == 4
    assert filled_from(client, entry_id) == 104


def test_arrivals_and_the_fills_worker_share_one_print(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        api_settings: ApiSettings) -> None:
    put(store, make_quote(CODE, price=71_000, seq=1))
    traders = users(client, api_settings, 6)
    resting = [placed(client, who, side="BUY", type="LIMIT", quantity=3, price=70_000,
                      time_in_force="GTC") for who in traders[:3]]
    entry_id = print_of(store, price=70_000, volume=5, seq=2)

    def race(index: int) -> Any:
        if index == 0:
            run_until_idle(worker)
            return None
        return order(client, traders[2 + index], side="BUY", type="LIMIT", quantity=3,
                     price=70_000, time_in_force="IOC").json()

    answers = concurrently(4, race)

    given = (sum(a["filled_quantity"] for a in answers[1:])
             + sum(client.get(f"/api/v1/orders/{o['id']}", headers=who).json()
                   ["filled_quantity"] for o, who in zip(resting, traders, strict=False)))
    assert given == 5 == filled_from(client, entry_id)
    run_until_idle(worker)  # processing the print again gives nothing more
    assert filled_from(client, entry_id) == 5


def test_the_worker_and_an_arrival_fill_one_order_only_once_from_a_print(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        alice: dict[str, str]) -> None:
    """The worker fills a resting order from a print at its limit; re-priced against that same
    print (still the last trade), the order takes nothing more from it."""
    put(store, make_quote(CODE, price=71_000, seq=1))
    resting = placed(client, alice, side="BUY", type="LIMIT", quantity=10, price=70_000,
                     time_in_force="GTC")
    entry_id = print_of(store, price=69_900, volume=6, seq=2)
    run_until_idle(worker)

    answer = client.patch(f"/api/v1/orders/{resting['id']}", headers=alice,
                          json={"price": 70_100})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(f["tick_id"], f["quantity"], f["price"], f["rule"]) for f in body["fills"]] == [
        (entry_id, 6, 70_000, "resting_limit")]
    assert (body["filled_quantity"], body["status"]) == (6, "PARTIALLY_FILLED")
    run_until_idle(worker)
    assert filled_from(client, entry_id) == 6


# --------------------------------------------------------------------------------------------
# A re-priced order arrives again


def test_a_re_priced_order_that_the_last_trade_reaches_trades_at_once_at_its_price(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        alice: dict[str, str]) -> None:
    entry_id = print_of(store, price=71_200, volume=4, seq=1)
    resting = placed(client, alice, side="BUY", type="LIMIT", quantity=10, price=70_000,
                     time_in_force="GTC")
    assert resting["fills"] == []

    answer = client.patch(f"/api/v1/orders/{resting['id']}", headers=alice,
                          json={"price": 71_500})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(f["tick_id"], f["quantity"], f["price"], f["rule"]) for f in body["fills"]] == [
        (entry_id, 4, 71_200, "aggressor_last_trade")]
    # The rest holds its new limit's cash; the print is not given again by the worker.
    assert body["held_cash"] == 6 * 71_500 + 64
    run_until_idle(worker)
    again = client.get(f"/api/v1/orders/{resting['id']}", headers=alice).json()
    assert again["filled_quantity"] == 4 and filled_from(client, entry_id) == 4


def test_a_re_priced_order_does_not_trade_on_a_stale_quote(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    publish_ticks(store, make_quote(CODE, price=71_200, volume=4, seq=1, age_s=3_600))
    resting = placed(client, alice, side="BUY", type="LIMIT", quantity=10, price=70_000,
                     time_in_force="GTC")

    body = client.patch(f"/api/v1/orders/{resting['id']}", headers=alice,
                        json={"price": 71_500}).json()

    assert (body["filled_quantity"], body["fills"]) == (0, [])


# --------------------------------------------------------------------------------------------
# The band is the day's


def at_kst(day: datetime, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day.date(), time(hour, minute), tzinfo=KST).astimezone(UTC)


def test_the_trading_day_starts_at_the_latest_close() -> None:
    day = datetime(2026, 11, 20, tzinfo=KST)
    # (always_open: a day begins at the previous close; tests/api/test_sessions.py has KRX's)
    assert day_start(ALWAYS_OPEN, at_kst(day, 10)) == at_kst(day - timedelta(days=1), 15, 30)
    assert day_start(ALWAYS_OPEN, at_kst(day, 15, 30)) == at_kst(day, 15, 30)
    assert day_start(ALWAYS_OPEN, at_kst(day, 16)) == at_kst(day, 15, 30)


def test_the_day_s_base_is_the_previous_close_until_the_day_trades() -> None:
    day = datetime(2026, 11, 20, tzinfo=KST)
    yesterday = make_quote(CODE, price=80_000, base=70_500)
    yesterday.ts = format_utc(at_kst(day - timedelta(days=1), 15, 29))
    # Before the day's first trade: the last trade before the close is the day's base.
    assert day_base(yesterday, at_kst(day, 8), ALWAYS_OPEN) == 80_000
    # Yesterday, before its close, the quote's own base was the day's.
    assert day_base(yesterday, at_kst(day - timedelta(days=1), 15, 29), ALWAYS_OPEN) == 70_500
    # After today's close, today's last trade is tomorrow's base.
    today = make_quote(CODE, price=75_000, base=80_000)
    today.ts = format_utc(at_kst(day, 15, 0))
    assert day_base(today, at_kst(day, 14), ALWAYS_OPEN) == 80_000
    assert day_base(today, at_kst(day, 16), ALWAYS_OPEN) == 75_000


def test_orders_before_the_day_s_first_trade_meet_the_new_day_s_band(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    # Yesterday closed at 80,000 (base 70,500): today's band is 56,000-104,000, not
    # 49,400-91,600 around the quote's stale base.
    day = datetime.now(UTC).astimezone(KST)
    quote = make_quote(CODE, price=80_000, base=70_500, seq=1, age_s=3_600)  # rests orders
    quote.ts = format_utc(at_kst(day - timedelta(days=1), 15, 29))
    put(store, quote)
    with_clock(client, at_kst(day, 8))

    above_old = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=100_000,
                       time_in_force="GTC")
    assert above_old["status"] == "OPEN"
    problem = assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=1,
                                   price=55_000, time_in_force="GTC"), 422, "price_out_of_band")
    assert (problem["lower_limit"], problem["upper_limit"]) == (56_000, 104_000)
    problem = assert_problem(client.patch(f"/api/v1/orders/{above_old['id']}", headers=alice,
                                          json={"price": 104_500}), 422, "price_out_of_band")
    assert problem["upper_limit"] == 104_000


# --------------------------------------------------------------------------------------------
# GTC orders meet each new day's band


def test_gtc_orders_outside_the_new_day_s_band_are_cancelled_and_release_their_holds(
        client: TestClient, store: redis.Redis, worker: FillsWorker, api_settings: ApiSettings,
        alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000, seq=1))
    placed(client, alice, side="BUY", type="MARKET", quantity=10)
    put(store, make_quote(CODE, price=70_000, seq=1, age_s=3_600))  # the orders below rest
    low_buy = placed(client, alice, side="BUY", type="LIMIT", quantity=2, price=50_000,
                     time_in_force="GTC")
    low_sell = placed(client, alice, side="SELL", type="LIMIT", quantity=4, price=50_000,
                      time_in_force="GTC")
    inside = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=90_000,
                    time_in_force="GTC")
    day_order = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=50_000)
    bob = new_user(client, api_settings, "bob@example.com")
    cancelled_by_user = placed(client, bob, side="BUY", type="LIMIT", quantity=1,
                               price=90_000, time_in_force="GTC")
    assert client.delete(f"/api/v1/orders/{cancelled_by_user['id']}",
                         headers=bob).status_code == 200
    put(store, make_quote(CODE, price=75_000, seq=2))  # the day's last trade
    tomorrow = datetime.now(UTC) + timedelta(days=1)  # the new day's band: 52,500-97,500

    assert worker.recheck_gtc_bands(tomorrow) == 2
    assert worker.recheck_gtc_bands(tomorrow) == 0  # once a day
    worker.band_checked_day = None
    assert worker.recheck_gtc_bands(tomorrow) == 0  # and idempotent after a restart

    def status(o: dict[str, Any], who: dict[str, str]) -> tuple[str, str | None]:
        body = client.get(f"/api/v1/orders/{o['id']}", headers=who).json()
        return body["status"], body["reason"]

    assert status(low_buy, alice) == ("CANCELLED", "outside_price_limits")
    assert status(low_sell, alice) == ("CANCELLED", "outside_price_limits")
    assert status(inside, alice) == ("OPEN", None)
    assert status(day_order, alice) == ("OPEN", None)  # a DAY order expires at the close
    assert status(cancelled_by_user, bob) == ("CANCELLED", "user")
    summary = account(client, alice)
    assert summary["held_cash"] == 90_000 + 13 + 50_000 + 7  # inside and the DAY order
    positions = client.get("/api/v1/portfolio", headers=alice).json()["positions"]
    assert [p["held_quantity"] for p in positions] == [0]  # the sell's shares are free again


def test_the_new_day_check_racing_users_cancels_each_order_once(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000, seq=1, age_s=3_600))  # the orders below rest
    resting = [placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=50_000,
                      time_in_force="GTC")["id"] for _ in range(12)]
    put(store, make_quote(CODE, price=75_000, seq=2))  # the new day's band: 52,500-97,500
    tomorrow = datetime.now(UTC) + timedelta(days=1)

    def race(index: int) -> Any:
        if index == 0:
            return worker.recheck_gtc_bands(tomorrow)
        return client.delete(f"/api/v1/orders/{resting[index - 1]}", headers=alice).status_code

    by_worker, *by_user = concurrently(13, race)

    # Whoever came second found the order ended: 409 for a user, skipped by the worker.
    reasons = [client.get(f"/api/v1/orders/{order_id}", headers=alice).json()["reason"]
               for order_id in resting]
    assert reasons.count("outside_price_limits") == by_worker
    assert reasons.count("user") == by_user.count(200) == 12 - by_worker
    assert by_user.count(409) == by_worker
    assert account(client, alice)["held_cash"] == 0  # every hold released, once


# --------------------------------------------------------------------------------------------
# The volume counts do not grow without bound


def test_the_counts_of_prints_gone_from_the_stream_are_purged(
        client: TestClient, store: redis.Redis, worker: FillsWorker,
        alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=71_000, seq=1))
    assert worker.purge_trade_prints() == 0  # an empty stream says nothing: nothing purged
    placed(client, alice, side="BUY", type="LIMIT", quantity=3, price=70_000,
           time_in_force="GTC")
    old_print = print_of(store, price=70_000, volume=1, seq=2)
    run_until_idle(worker)
    new_print = print_of(store, price=70_000, volume=1, seq=3)
    run_until_idle(worker)
    # The first print (and its fill) from three hours ago, and the stream trimmed past it.
    three_hours_ago = datetime.now(UTC) - timedelta(hours=3)
    database(client).call(lambda s: (
        s.execute(TradePrint.__table__.update().where(TradePrint.print_id == old_print)
                  .values(created_at=three_hours_ago)),
        s.execute(Fill.__table__.update().where(Fill.tick_id == old_print)
                  .values(created_at=three_hours_ago))))
    store.xtrim(NAMES.tick_stream, maxlen=1)

    assert worker.purge_trade_prints() == 1
    left = database(client).call(lambda s: list(s.scalars(select(TradePrint.print_id))))
    assert left == [new_print]
    assert worker.purge_trade_prints() == 0  # a print still in the stream keeps its count
