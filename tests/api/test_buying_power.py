"""주문가능 조회 (GET /api/v1/account/buying-power) through HTTP against the real app, a real
Redis and a real database, on SQLite and on MariaDB: the quantities agree with what the order
path accepts (an order of max_buy_quantity is placed and holds buy_cost, one share more is
refused with insufficient_funds), at a limit price and at market (the upper price limit), with a
commission minimum, while the market is closed (a reservation order), with cash and shares held
by live orders; the price is refused as an order's would be. The money invariants hold after
every test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, time
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings
from tests.api.test_orders import account, order, order_count, placed
from tests.api.test_sessions import trade_at
from tests.conftest import RedisServer
from tests.support.api import app_settings, assert_problem, database, new_user
from tests.support.databases import database_url_on_both_backends  # noqa: F401
from tests.support.invariants import assert_invariants
from tests.support.quotes import make_quote, put
from tests.support.weekday_calendar import WeekdayCalendar, kst

BUYING_POWER = "/api/v1/account/buying-power"
WITHDRAW = "/api/v1/account/withdraw"
INITIAL = 10_000_000
CODE = "A005930"
# make_quote's quote: last trade 71,200, base 70,500, so the day's band is 49,400 to 91,600
# (70,500 x 1.3 = 91,650, down to the 100-won tick of that level).
LAST, UPPER = 71_200, 91_600
FAR_FRIDAY = date(2100, 1, 1)


@contextmanager
def app_with(redis_server: RedisServer, base: ApiSettings,
             **overrides: Any) -> Iterator[tuple[TestClient, redis.Redis, dict[str, str]]]:
    """An app on the test's Redis and database with these settings changed, a client of its
    Redis, and a user's bearer header."""
    settings = app_settings(redis_server.url, base.database_url, **overrides)
    with TestClient(create_app(settings)) as client, redis_server.client() as store:
        yield client, store, new_user(client, settings, "alice@example.com")
        assert_invariants(database(client))


def ask(client: TestClient, headers: dict[str, str], **params: Any) -> httpx.Response:
    return client.get(BUYING_POWER, headers=headers, params={"code": CODE, **params})


def power(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = ask(client, headers, **params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def withdraw(client: TestClient, headers: dict[str, str], amount: int) -> None:
    response = client.post(WITHDRAW, headers=headers, json={"amount": amount})
    assert response.status_code == 200, response.text


def test_a_limit_buy_of_max_buy_quantity_is_accepted_and_one_more_share_is_refused(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    # At 71,000 a share (below the last trade: the order rests), q shares hold
    # 71,000q + floor(71,000q x 0.015%) = 71,000q + floor(10.65q):
    # 140 shares hold 9,940,000 + 1,491 = 9,941,491; 139 hold 9,869,000 + 1,480 = 9,870,480.
    # With 1 won less than 140 need, commission decides: 139.
    withdraw(client, alice, INITIAL - 9_941_490)

    answer = power(client, alice, price=71_000)

    assert answer == {"code": CODE, "name": "삼성전자", "price": 71_000,
                      "priced_at": "limit_price", "cash_available": 9_941_490,
                      "max_buy_quantity": 139, "buy_cost": 9_870_480,
                      "max_sell_quantity": 0}
    refused = assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=140,
                                   price=71_000), 422, "insufficient_funds")
    assert (refused["required"], refused["available_cash"]) == (9_941_491, 9_941_490)
    assert order_count(client) == 0
    accepted = placed(client, alice, side="BUY", type="LIMIT", quantity=139, price=71_000)
    assert (accepted["status"], accepted["held_cash"]) == ("OPEN", 9_870_480)
    # What is left, 9,941,490 - 9,870,480 = 71,010, is exactly what one share holds:
    # 71,000 + floor(10.65) = 71,010.
    assert power(client, alice, price=71_000)["max_buy_quantity"] == 1
    assert power(client, alice, price=71_000)["buy_cost"] == 71_010


def test_the_exact_cash_for_a_quantity_buys_it(client: TestClient, store: redis.Redis,
                                                alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    withdraw(client, alice, INITIAL - 9_941_491)  # exactly what 140 at 71,000 hold (above)

    answer = power(client, alice, price=71_000)

    assert (answer["max_buy_quantity"], answer["buy_cost"]) == (140, 9_941_491)
    assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=141, price=71_000),
                   422, "insufficient_funds")
    accepted = placed(client, alice, side="BUY", type="LIMIT", quantity=140, price=71_000)
    assert accepted["held_cash"] == 9_941_491
    assert account(client, alice)["available_cash"] == 0
    assert power(client, alice, price=71_000)["max_buy_quantity"] == 0
    assert power(client, alice, price=71_000)["buy_cost"] == 0


def test_at_market_it_is_priced_at_the_upper_limit_as_a_market_buy_is_reserved(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    # At the upper limit 91,600: q shares hold 91,600q + floor(13.74q). 109 hold
    # 9,984,400 + 1,497 = 9,985,897 <= 10,000,000; 110 would hold 10,076,000 + 1,511.
    answer = power(client, alice)

    assert (answer["price"], answer["priced_at"]) == (UPPER, "upper_limit")
    assert (answer["max_buy_quantity"], answer["buy_cost"]) == (109, 9_985_897)
    refused = assert_problem(order(client, alice, side="BUY", type="MARKET", quantity=110),
                             422, "insufficient_funds")
    assert refused["required"] == 10_077_511  # 10,076,000 + floor(1,511.4)
    bought = placed(client, alice, side="BUY", type="MARKET", quantity=109)
    # It fills at the last trade, 71,200: 7,760,800 + floor(1,164.12) = 7,761,964 paid.
    assert (bought["status"], bought["fills"][0]["price"]) == ("FILLED", LAST)
    assert account(client, alice)["cash"] == INITIAL - 7_761_964


def test_a_last_trade_above_the_upper_limit_prices_a_market_buy(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=95_000))  # above the band's 91,600
    # 95,000q + floor(14.25q): 105 hold 9,975,000 + 1,496 = 9,976,496; 106 hold 10,070,000+.
    answer = power(client, alice)

    assert (answer["price"], answer["priced_at"]) == (95_000, "last_trade")
    assert (answer["max_buy_quantity"], answer["buy_cost"]) == (105, 9_976_496)
    assert_problem(order(client, alice, side="BUY", type="MARKET", quantity=106), 422,
                   "insufficient_funds")
    assert placed(client, alice, side="BUY", type="MARKET", quantity=105)["status"] == "FILLED"


def test_a_commission_minimum_counts_once_per_order(redis_server: RedisServer,
                                                     api_settings: ApiSettings) -> None:
    with app_with(redis_server, api_settings, commission_min_krw=1_000) as (
            client, store, alice):
        put(store, make_quote(CODE))
        # 140 at 71,000 hold 9,941,491 + the 1,000 minimum = 9,942,491; leave 1 won less.
        withdraw(client, alice, INITIAL - 9_942_490)

        answer = power(client, alice, price=71_000)

        # 139 hold 9,870,480 + 1,000.
        assert (answer["max_buy_quantity"], answer["buy_cost"]) == (139, 9_871_480)
        assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=140,
                             price=71_000), 422, "insufficient_funds")
        assert placed(client, alice, side="BUY", type="LIMIT", quantity=139,
                      price=71_000)["held_cash"] == 9_871_480
        # 70,010 left is less than one share's 71,010 + 1,000.
        assert power(client, alice, price=71_000)["max_buy_quantity"] == 0


def test_shares_held_by_live_sells_and_cash_held_by_live_buys_are_not_available(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    placed(client, alice, side="BUY", type="MARKET", quantity=10)  # 712,000 + 106 paid
    placed(client, alice, side="SELL", type="LIMIT", quantity=3, price=80_000)  # rests
    # A resting buy of 5 at 60,000 holds 300,000 + 45.
    placed(client, alice, side="BUY", type="LIMIT", quantity=5, price=60_000)

    answer = power(client, alice, price=60_000)

    # 10,000,000 - 712,106 - 300,045 = 8,987,849 available. At 60,000: q shares hold
    # 60,000q + floor(9q); 149 hold 8,940,000 + 1,341 = 8,941,341; 150 would hold 9,001,350.
    assert answer["cash_available"] == 8_987_849
    assert (answer["max_buy_quantity"], answer["buy_cost"]) == (149, 8_941_341)
    assert answer["max_sell_quantity"] == 7  # 10 held, 3 held by the resting sell
    assert_problem(order(client, alice, side="SELL", type="LIMIT", quantity=8, price=80_000),
                   422, "insufficient_shares")
    placed(client, alice, side="SELL", type="LIMIT", quantity=7, price=80_000)
    assert power(client, alice, price=60_000)["max_sell_quantity"] == 0


def test_while_the_market_is_closed_it_answers_for_a_reservation_order(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    # Friday evening, long after the quote's trade: that trade is the last close, so the next
    # day's base is its price, 71,200, and its upper limit 71,200 x 1.3 = 92,560, down to the
    # 100-won tick: 92,500. A reservation buy at market reserves at that.
    trade_at(client, WeekdayCalendar(), kst(FAR_FRIDAY, time(20)))
    limit = power(client, alice, price=71_000)
    market = power(client, alice)

    assert (limit["max_buy_quantity"], limit["buy_cost"]) == (140, 9_941_491)
    # 92,500q + floor(13.875q): 108 hold 9,990,000 + 1,498 = 9,991,498; 109 hold 10,082,500+.
    assert (market["price"], market["priced_at"]) == (92_500, "upper_limit")
    assert (market["max_buy_quantity"], market["buy_cost"]) == (108, 9_991_498)
    assert_problem(order(client, alice, side="BUY", type="MARKET", quantity=109,
                         reserve=True), 422, "insufficient_funds")
    assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=141, price=71_000,
                         reserve=True), 422, "insufficient_funds")
    reserved = placed(client, alice, side="BUY", type="LIMIT", quantity=140, price=71_000,
                      reserve=True)
    assert (reserved["status"], reserved["held_cash"]) == ("RESERVED", 9_941_491)


def test_orders_are_capped_at_order_max_quantity(redis_server: RedisServer,
                                                 api_settings: ApiSettings) -> None:
    with app_with(redis_server, api_settings, order_max_quantity=100) as (client, store, alice):
        put(store, make_quote(CODE))
        # At 50,000: q shares hold 50,000q + floor(7.5q); 199 hold 9,951,492 and 200 would
        # hold 10,001,500, but one order may ask for 100 at most: 5,000,000 + 750.
        answer = power(client, alice, price=50_000)
        assert (answer["max_buy_quantity"], answer["buy_cost"]) == (100, 5_000_750)
        assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=101,
                             price=50_000), 422, "quantity_over_limit")


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"price": 71_050}, 422, "invalid_tick_size"),  # 100-won ticks from 50,000
    ({"price": 49_350}, 422, "price_out_of_band"),  # on the grid, below 49,400
    ({"price": 91_700}, 422, "price_out_of_band"),
    ({"price": 0}, 422, "validation_error"),
    ({"price": -100}, 422, "validation_error"),
    ({"price": "71000.5"}, 422, "validation_error"),
    ({"price": "seventy"}, 422, "validation_error"),
    ({"code": "A00066"}, 422, "invalid_code"),
    ({"code": "A999999"}, 422, "unknown_instrument"),
    ({"code": "A000660"}, 422, "no_quote"),  # known, but no quote written for it
    ({"code": "A0059300000000000"}, 422, "validation_error"),
])
def test_a_price_or_code_an_order_would_refuse_is_refused_alike(
        client: TestClient, store: redis.Redis, alice: dict[str, str], params: dict[str, Any],
        status: int, code: str) -> None:
    put(store, make_quote(CODE))
    assert_problem(ask(client, alice, **params), status, code)
    assert account(client, alice)["held_cash"] == 0 and order_count(client) == 0


def test_the_order_path_refuses_the_same_prices(client: TestClient, store: redis.Redis,
                                                alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    for price, code in ((71_050, "invalid_tick_size"), (91_700, "price_out_of_band")):
        assert_problem(ask(client, alice, price=price), 422, code)
        assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=1, price=price),
                       422, code)


def test_at_market_a_stale_quote_is_refused_as_a_market_buy_is(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, age_s=60))
    assert_problem(ask(client, alice), 422, "stale_quote")
    assert_problem(order(client, alice, side="BUY", type="MARKET", quantity=1), 422,
                   "stale_quote")
    # A limit price rests, so it needs no fresh quote.
    assert power(client, alice, price=71_000)["max_buy_quantity"] == 140


def test_it_needs_a_token_and_a_code(client: TestClient, alice: dict[str, str]) -> None:
    assert_problem(client.get(BUYING_POWER, params={"code": CODE}), 401, "not_authenticated")
    assert_problem(client.get(BUYING_POWER, headers=alice), 422, "validation_error")
