"""Orders through HTTP against the real app, a real Redis (quotes written as the relayer writes
them) and a real database (MariaDB when reachable): market and IOC/FOK orders executed in the
request, resting limit orders with their holds, cancel and modify, refusals that change
nothing, listing, idempotency, the portfolio, and concurrent orders that never overspend.
After every test the money invariants hold (tests/support/invariants.py)."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.models import Order
from api.settings import ApiSettings
from tests.support.api import assert_problem, database, new_user
from tests.support.concurrency import concurrently
from tests.support.quotes import make_quote, put

ORDERS = "/api/v1/orders"
ACCOUNT = "/api/v1/account"
PORTFOLIO = "/api/v1/portfolio"
INITIAL = 10_000_000
CODE = "A005930"
# make_quote's reference price is 70,500: today's band is 49,350 (ticks of 50 below 50,000)
# to 91,600 (ticks of 100).
LOWER, UPPER = 49_400, 91_600  # around the default base, 70,500


def order(client: TestClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return client.post(ORDERS, headers=headers, json={"code": CODE, **body})


def placed(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = order(client, headers, **body)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def account(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.get(ACCOUNT, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def ledger(client: TestClient, headers: dict[str, str]) -> list[tuple[str, int]]:
    rows = client.get("/api/v1/transactions", headers=headers, params={"limit": 200}).json()
    return [(row["type"], row["amount"]) for row in reversed(rows["items"])]


def order_count(client: TestClient) -> int:
    return database(client).call(lambda s: s.scalar(select(func.count()).select_from(Order)))


# --------------------------------------------------------------------------------------------
# Market orders


def test_a_market_buy_fills_at_the_last_trade_and_pays_its_commission(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=71_200, seq=77))

    body = placed(client, alice, side="BUY", type="MARKET", quantity=10)

    assert (body["status"], body["filled_quantity"], body["remaining_quantity"]) == (
        "FILLED", 10, 0)
    assert body["avg_fill_price"] == "71200.00" and body["held_cash"] == 0
    [fill] = body["fills"]
    # 712,000 * 0.015% = 106.8 -> 106 (rounded down to the won).
    assert (fill["quantity"], fill["price"], fill["value"], fill["commission"], fill["tax"]) == (
        10, 71_200, 712_000, 106, 0)
    assert (fill["tick_id"], fill["tick_seq"]) == ("quote:77", 77)
    assert ledger(client, alice)[1:] == [("BUY", -712_000), ("FEE", -106)]
    summary = account(client, alice)
    assert summary["cash"] == INITIAL - 712_106 and summary["held_cash"] == 0
    assert summary["market_value"] == 712_000 and summary["unrealized_pnl"] == -106
    assert summary["equity"] == INITIAL - 106


def test_a_market_sell_pays_commission_and_tax_and_realizes_pnl(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000))
    placed(client, alice, side="BUY", type="MARKET", quantity=10)  # 700,000 + 105 commission
    put(store, make_quote(CODE, price=72_000))

    body = placed(client, alice, side="SELL", type="MARKET", quantity=4)

    [fill] = body["fills"]
    # 288,000: commission 43.2 -> 43, tax 0.20% = 576.
    assert (fill["value"], fill["commission"], fill["tax"]) == (288_000, 43, 576)
    assert ledger(client, alice)[-3:] == [("SELL", 288_000), ("FEE", -43), ("TAX", -576)]
    [position] = client.get(PORTFOLIO, headers=alice).json()["positions"]
    # Book cost 700,105 for 10; 4 sold carry 280,042 of it.
    assert (position["quantity"], position["cost_basis"]) == (6, 700_105 - 280_042)
    assert position["realized_pnl"] == 288_000 - 43 - 576 - 280_042
    assert position["avg_price"] == "70010.50"
    summary = account(client, alice)
    assert summary["equity"] - INITIAL == summary["realized_pnl"] + summary["unrealized_pnl"]


def test_market_orders_need_a_fresh_quote(client: TestClient, store: redis.Redis,
                                          alice: dict[str, str]) -> None:
    assert_problem(order(client, alice, side="BUY", type="MARKET", quantity=1), 422, "no_quote")
    put(store, make_quote(CODE, age_s=60))
    body = assert_problem(order(client, alice, side="BUY", type="MARKET", quantity=1), 422,
                          "stale_quote")
    assert body["quote_age_s"] >= 59
    assert order_count(client) == 0 and account(client, alice)["cash"] == INITIAL


def test_a_market_buy_reserves_at_the_upper_limit(client: TestClient, store: redis.Redis,
                                                   alice: dict[str, str]) -> None:
    """The hold is checked at the upper limit price: a buy whose value at the last price is
    affordable but at the upper limit is not, is refused."""
    put(store, make_quote(CODE, price=70_000))
    affordable_at_last = INITIAL // 70_000  # 142 shares
    body = assert_problem(order(client, alice, side="BUY", type="MARKET",
                                quantity=affordable_at_last), 422, "insufficient_funds")
    reserved = affordable_at_last * UPPER
    assert body["required"] == reserved + reserved * 15 // 100_000
    assert placed(client, alice, side="BUY", type="MARKET", quantity=100)["status"] == "FILLED"


# --------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"side": "BUY", "type": "LIMIT", "quantity": 1}, 422, "price_required"),
    ({"side": "BUY", "type": "MARKET", "quantity": 1, "price": 70_000}, 422,
     "price_not_allowed"),
    ({"side": "BUY", "type": "LIMIT", "quantity": 1, "price": 70_050}, 422, "invalid_tick_size"),
    ({"side": "BUY", "type": "LIMIT", "quantity": 1, "price": UPPER + 100}, 422,
     "price_out_of_band"),
    ({"side": "BUY", "type": "LIMIT", "quantity": 1, "price": LOWER - 50}, 422,
     "price_out_of_band"),
    ({"side": "BUY", "type": "LIMIT", "quantity": 1_000_001, "price": 70_000}, 422,
     "quantity_over_limit"),
    ({"side": "BUY", "type": "LIMIT", "quantity": 200, "price": 70_000}, 422,
     "insufficient_funds"),
    ({"side": "SELL", "type": "LIMIT", "quantity": 1, "price": 70_000}, 422,
     "insufficient_shares"),
    ({"side": "BUY", "type": "LIMIT", "quantity": 0, "price": 70_000}, 422, "validation_error"),
    ({"side": "BUY", "type": "LIMIT", "quantity": 1.5, "price": 70_000}, 422,
     "validation_error"),
    ({"side": "BUY", "type": "LIMIT", "quantity": "1", "price": 70_000}, 422,
     "validation_error"),
    ({"side": "HOLD", "type": "LIMIT", "quantity": 1, "price": 70_000}, 422, "validation_error"),
    ({"side": "BUY", "type": "STOP", "quantity": 1, "price": 70_000}, 422, "validation_error"),
    ({"side": "BUY", "type": "LIMIT", "quantity": 1, "price": 70_000,
      "time_in_force": "GTD"}, 422, "validation_error"),
    ({"side": "BUY", "type": "LIMIT", "quantity": 1, "price": 70_000, "code": "A00593"}, 422,
     "invalid_code"),
    ({"side": "BUY", "type": "LIMIT", "quantity": 1, "price": 70_000, "code": "A000660"}, 422,
     "no_quote"),
])
def test_refused_orders_change_nothing(client: TestClient, store: redis.Redis,
                                       alice: dict[str, str], body: dict[str, Any],
                                       status: int, code: str) -> None:
    put(store, make_quote(CODE))
    problem = assert_problem(order(client, alice, **body), status, code)

    assert problem["detail"]
    assert order_count(client) == 0
    assert account(client, alice)["cash"] == INITIAL
    assert ledger(client, alice) == [("DEPOSIT", INITIAL)]


def test_tick_sizes_follow_the_krx_grid(client: TestClient, store: redis.Redis,
                                        alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=4_000, base=4_000))
    assert placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=3_995)
    problem = assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=1,
                                   price=3_996), 422, "invalid_tick_size")
    assert problem["tick_size"] == 5
    problem = assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=1,
                                   price=5_210), 422, "price_out_of_band")
    assert (problem["lower_limit"], problem["upper_limit"]) == (2_800, 5_200)


# --------------------------------------------------------------------------------------------
# Resting limit orders, holds, cancel and modify


def test_a_resting_buy_holds_cash_and_a_cancel_releases_it(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    body = placed(client, alice, side="BUY", type="LIMIT", quantity=10, price=70_000,
                  time_in_force="GTC")

    assert (body["status"], body["filled_quantity"], body["expires_at"]) == ("OPEN", 0, None)
    assert body["held_cash"] == 700_000 + 105
    summary = account(client, alice)
    assert (summary["cash"], summary["held_cash"], summary["available_cash"]) == (
        INITIAL, 700_105, INITIAL - 700_105)
    # Held cash can be neither spent nor withdrawn.
    assert_problem(client.post("/api/v1/account/withdraw", headers=alice,
                               json={"amount": INITIAL - 700_000}), 422, "insufficient_funds")

    cancelled = client.delete(f"{ORDERS}/{body['id']}", headers=alice)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["reason"]) == ("CANCELLED", "user")
    assert account(client, alice)["held_cash"] == 0
    assert_problem(client.delete(f"{ORDERS}/{body['id']}", headers=alice), 409,
                   "order_not_live")
    assert ledger(client, alice) == [("DEPOSIT", INITIAL)]


def test_a_day_order_expires_at_the_next_session_close(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    body = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=70_000)
    assert body["time_in_force"] == "DAY"
    assert body["expires_at"].endswith("06:30:00Z")  # 15:30 KST


def test_a_resting_sell_holds_its_shares(client: TestClient, store: redis.Redis,
                                         alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000))
    placed(client, alice, side="BUY", type="MARKET", quantity=10)
    placed(client, alice, side="SELL", type="LIMIT", quantity=7, price=75_000)

    problem = assert_problem(order(client, alice, side="SELL", type="LIMIT", quantity=4,
                                   price=75_000), 422, "insufficient_shares")
    assert problem["available_quantity"] == 3
    [position] = client.get(PORTFOLIO, headers=alice).json()["positions"]
    assert (position["quantity"], position["held_quantity"], position["available_quantity"]) \
        == (10, 7, 3)


def test_ioc_fills_up_to_the_printed_volume_and_cancels_the_rest(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000, volume=3))
    body = placed(client, alice, side="BUY", type="LIMIT", quantity=5, price=70_100,
                  time_in_force="IOC")

    assert (body["status"], body["reason"], body["filled_quantity"]) == (
        "CANCELLED", "ioc_remainder", 3)
    assert body["fills"][0]["price"] == 70_000  # the market's, not its limit (docs/TRADING.md)
    assert account(client, alice)["held_cash"] == 0


def test_an_ioc_at_the_price_limits_trades_at_the_market_price_both_ways(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    # The day's band around a base of 70,000 is 49,000-91,000 (docs/TRADING.md). An order at
    # the limit is the most a buyer will pay, or the least a seller will take; it trades at the
    # market's price, as on the exchange, not 30% away from it.
    put(store, make_quote(CODE, price=70_000, base=70_000, volume=10))
    bought = placed(client, alice, side="BUY", type="LIMIT", quantity=2, price=91_000,
                    time_in_force="IOC")
    sold = placed(client, alice, side="SELL", type="LIMIT", quantity=2, price=49_000,
                  time_in_force="IOC")

    assert [(f["quantity"], f["price"]) for f in bought["fills"]] == [(2, 70_000)]
    assert [(f["quantity"], f["price"]) for f in sold["fills"]] == [(2, 70_000)]
    assert (bought["status"], sold["status"]) == ("FILLED", "FILLED")
    assert account(client, alice)["held_cash"] == 0
    assert ledger(client, alice)[1:] == [("BUY", -140_000), ("FEE", -21),
                                         ("SELL", 140_000), ("FEE", -21), ("TAX", -280)]
    summary = account(client, alice)
    assert (summary["fees_paid"], summary["taxes_paid"]) == (42, 280)
    assert summary["return_rate"] is None  # nothing held


def test_fok_fills_everything_or_nothing(client: TestClient, store: redis.Redis,
                                         alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000, volume=3))
    body = placed(client, alice, side="BUY", type="LIMIT", quantity=5, price=70_000,
                  time_in_force="FOK")
    assert (body["status"], body["reason"], body["filled_quantity"]) == (
        "CANCELLED", "fok_not_fillable", 0)
    body = placed(client, alice, side="BUY", type="LIMIT", quantity=3, price=70_000,
                  time_in_force="FOK")
    assert (body["status"], body["filled_quantity"]) == ("FILLED", 3)
    # Not marketable: a buy limit under the last trade does not fill.
    body = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=69_900,
                  time_in_force="IOC")
    assert (body["status"], body["filled_quantity"]) == ("CANCELLED", 0)
    assert ledger(client, alice)[1:] == [("BUY", -210_000), ("FEE", -31)]


def test_modify_moves_the_hold_and_refuses_what_is_not_allowed(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    body = placed(client, alice, side="BUY", type="LIMIT", quantity=10, price=70_000,
                  time_in_force="GTC")
    url = f"{ORDERS}/{body['id']}"

    changed = client.patch(url, headers=alice, json={"price": 69_000, "quantity": 20})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["price"], changed.json()["quantity"]) == (69_000, 20)
    assert account(client, alice)["held_cash"] == 1_380_000 + 207
    assert_problem(client.patch(url, headers=alice, json={"price": 69_050}), 422,
                   "invalid_tick_size")
    assert_problem(client.patch(url, headers=alice, json={"quantity": 200}), 422,
                   "insufficient_funds")
    assert_problem(client.patch(url, headers=alice, json={}), 422, "validation_error")
    assert account(client, alice)["held_cash"] == 1_380_207

    client.delete(url, headers=alice)
    assert_problem(client.patch(url, headers=alice, json={"price": 69_000}), 409,
                   "order_not_live")
    market = placed(client, alice, side="BUY", type="MARKET", quantity=1)
    assert_problem(client.patch(f"{ORDERS}/{market['id']}", headers=alice,
                                json={"quantity": 2}), 409, "order_not_live")


# --------------------------------------------------------------------------------------------
# Reading orders


def test_orders_list_by_status_with_a_cursor(client: TestClient, store: redis.Redis,
                                             alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    ids = [placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=70_000)["id"]
           for _ in range(5)]
    client.delete(f"{ORDERS}/{ids[0]}", headers=alice)

    first = client.get(ORDERS, headers=alice, params={"limit": 2}).json()
    assert [o["id"] for o in first["items"]] == ids[:2:-1][:2]
    rest = client.get(ORDERS, headers=alice, params={"limit": 10,
                                                     "cursor": first["next_cursor"]}).json()
    assert [o["id"] for o in first["items"] + rest["items"]] == ids[::-1]
    assert rest["next_cursor"] is None
    open_ids = [o["id"] for o in client.get(ORDERS, headers=alice,
                                            params={"status": "OPEN"}).json()["items"]]
    assert open_ids == ids[:0:-1]
    cancelled = client.get(ORDERS, headers=alice, params={"status": "CANCELLED"}).json()
    assert [o["id"] for o in cancelled["items"]] == [ids[0]]
    assert_problem(client.get(ORDERS, headers=alice, params={"cursor": "bogus"}), 422,
                   "invalid_cursor")


def test_another_users_order_is_not_found(client: TestClient, store: redis.Redis,
                                          api_settings: ApiSettings,
                                          alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    bob = new_user(client, api_settings, "bob@example.com")
    mine = placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=70_000)
    url = f"{ORDERS}/{mine['id']}"

    assert_problem(client.get(url, headers=bob), 404, "order_not_found")
    assert_problem(client.delete(url, headers=bob), 404, "order_not_found")
    assert_problem(client.patch(url, headers=bob, json={"price": 69_000}), 404,
                   "order_not_found")
    assert client.get(ORDERS, headers=bob).json()["items"] == []
    assert client.get(url, headers=alice).json()["status"] == "OPEN"
    assert client.get(ORDERS).status_code == 401


def test_a_client_order_id_is_unique_per_user(client: TestClient, store: redis.Redis,
                                              api_settings: ApiSettings,
                                              alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    bob = new_user(client, api_settings, "bob@example.com")
    placed(client, alice, side="BUY", type="LIMIT", quantity=1, price=70_000,
           client_order_id="mine-1")
    assert_problem(order(client, alice, side="BUY", type="LIMIT", quantity=1, price=70_000,
                         client_order_id="mine-1"), 409, "duplicate_client_order_id")
    placed(client, bob, side="BUY", type="LIMIT", quantity=1, price=70_000,
           client_order_id="mine-1")


# --------------------------------------------------------------------------------------------
# Idempotency-Key


def test_one_idempotency_key_places_one_order(client: TestClient, store: redis.Redis,
                                              alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    headers = {**alice, "Idempotency-Key": "buy-once"}
    first = client.post(ORDERS, headers=headers, json={"code": CODE, "side": "BUY",
                                                       "type": "MARKET", "quantity": 2})
    # The market moves and the quote goes stale: the repeat still answers the first answer.
    put(store, make_quote(CODE, price=80_000, age_s=120))
    again = client.post(ORDERS, headers=headers, json={"code": CODE, "side": "BUY",
                                                       "type": "MARKET", "quantity": 2})
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert_problem(client.post(ORDERS, headers=headers, json={
        "code": CODE, "side": "BUY", "type": "MARKET", "quantity": 3}), 422,
        "idempotency_key_reused")
    assert order_count(client) == 1


def test_twenty_concurrent_requests_with_one_key_make_one_order(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE))
    headers = {**alice, "Idempotency-Key": "burst"}
    body = {"code": CODE, "side": "BUY", "type": "LIMIT", "quantity": 1, "price": 70_000}
    responses = concurrently(20, lambda _: client.post(ORDERS, headers=headers, json=body))

    assert [r.status_code for r in responses] == [201] * 20
    assert len({r.json()["id"] for r in responses}) == 1
    assert order_count(client) == 1


# --------------------------------------------------------------------------------------------
# The portfolio


def test_the_portfolio_values_positions_at_live_quotes(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000))
    put(store, make_quote("A000660", price=150_000, base=150_000))
    placed(client, alice, side="BUY", type="MARKET", quantity=10)
    placed(client, alice, code="A000660", side="BUY", type="MARKET", quantity=2)
    put(store, make_quote(CODE, price=71_000))
    put(store, make_quote("A000660", price=151_000, base=150_000, age_s=600))

    portfolio = client.get(PORTFOLIO, headers=alice).json()

    by_code = {p["code"]: p for p in portfolio["positions"]}
    assert by_code[CODE]["market_value"] == 710_000
    assert by_code[CODE]["unrealized_pnl"] == 710_000 - 700_105
    assert by_code[CODE]["stale"] is False
    assert by_code["A000660"]["stale"] is True and by_code["A000660"]["last_price"] == 151_000
    assert portfolio["account"]["stale_quotes"] == ["A000660"]
    assert portfolio["account"]["equity"] == portfolio["account"]["cash"] + 710_000 + 302_000
    assert Decimal(by_code["A000660"]["avg_price"]) == Decimal("150022.50")
    # 수익률: unrealized P&L over book cost, per position and for all of them together.
    assert by_code[CODE]["return_rate"] == "1.41"  # 9,895 / 700,105
    assert by_code["A000660"]["return_rate"] == "0.65"  # 1,955 / 300,045
    assert portfolio["account"]["return_rate"] == "1.18"  # 11,850 / 1,000,150
    assert (portfolio["account"]["fees_paid"], portfolio["account"]["taxes_paid"]) == (150, 0)
    # A quote that vanished: valued at book cost, flagged.
    store.delete("stocking:quote:A000660")
    gone = {p["code"]: p for p in client.get(PORTFOLIO, headers=alice).json()["positions"]}
    assert gone["A000660"]["last_price"] is None and gone["A000660"]["unrealized_pnl"] == 0


# --------------------------------------------------------------------------------------------
# Concurrency (MariaDB: real row locks; SQLite serialises writers anyway)




def test_fifty_concurrent_buys_accept_exactly_what_the_cash_affords(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_100))  # the buys below are under it: they rest
    # Each resting buy holds 14 * 70,000 + 147 = 980,147: the cash covers exactly 10.
    responses = concurrently(50, lambda _: order(client, alice, side="BUY", type="LIMIT",
                                                 quantity=14, price=70_000))

    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 10 + [422] * 40, [r.text for r in responses if r.status_code >= 500]
    assert all(r.json()["code"] == "insufficient_funds" for r in responses
               if r.status_code == 422)
    summary = account(client, alice)
    assert (summary["cash"], summary["held_cash"]) == (INITIAL, 10 * 980_147)


def test_fifty_concurrent_market_buys_never_overspend(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000))
    # Each reserves 10 * 91,600 + 137 = 916,137 (the upper limit) and then costs 700,105: after
    # k fills 10,000,000 - 700,105 k must still cover the reservation, so k <= 13.
    responses = concurrently(50, lambda _: order(client, alice, side="BUY", type="MARKET",
                                                 quantity=10))

    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 13 + [422] * 37, [r.text for r in responses if r.status_code >= 500]
    summary = account(client, alice)
    assert (summary["cash"], summary["held_cash"]) == (INITIAL - 13 * 700_105, 0)
    assert summary["equity"] == INITIAL - 13 * 105


def test_fifty_concurrent_sells_of_a_ten_share_position(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000))
    placed(client, alice, side="BUY", type="MARKET", quantity=10)

    responses = concurrently(50, lambda i: order(
        client, alice, side="SELL", type="MARKET" if i % 2 else "LIMIT", quantity=1,
        **({} if i % 2 else {"price": 80_000})))

    accepted = [r for r in responses if r.status_code == 201]
    assert len(accepted) == 10, [r.text for r in responses if r.status_code >= 500]
    assert all(r.json()["code"] == "insufficient_shares" for r in responses
               if r.status_code != 201)
    [position] = client.get(PORTFOLIO, headers=alice).json()["positions"] or [None]
    market_sold = sum(1 for r in accepted if r.json()["type"] == "MARKET")
    if position is None:
        assert market_sold == 10
    else:
        assert position["quantity"] == 10 - market_sold
        assert position["held_quantity"] == 10 - market_sold


def test_a_buy_sell_mix_on_one_account_never_surfaces_a_deadlock(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=70_000))
    put(store, make_quote("A000660", price=150_000, base=150_000))
    placed(client, alice, side="BUY", type="MARKET", quantity=20)
    placed(client, alice, code="A000660", side="BUY", type="MARKET", quantity=20)

    def mixed(i: int) -> httpx.Response:
        code = CODE if i % 2 else "A000660"
        if i % 3 == 0:
            return order(client, alice, code=code, side="SELL", type="MARKET", quantity=1)
        if i % 3 == 1:
            return order(client, alice, code=code, side="BUY", type="MARKET", quantity=1)
        return client.post("/api/v1/account/deposit", headers=alice, json={"amount": 1_000})

    responses = concurrently(40, mixed)

    assert all(r.status_code in (200, 201) for r in responses), [
        r.text for r in responses if r.status_code not in (200, 201)]


def test_many_users_first_orders_in_one_instrument_do_not_deadlock(
        client: TestClient, store: redis.Redis, api_settings: ApiSettings,
        caplog: pytest.LogCaptureFixture) -> None:
    """Each first buy opens a position row; under REPEATABLE READ the gap locks of neighbouring
    users' rows deadlocked (found by scripts/bench_orders.py). Not even a retried deadlock may
    happen now."""
    put(store, make_quote(CODE, price=70_000))
    users = [new_user(client, api_settings, f"first{i}@example.com") for i in range(20)]

    with caplog.at_level(logging.WARNING, logger="api.db"):
        responses = concurrently(20, lambda i: order(client, users[i], side="BUY",
                                                     type="MARKET", quantity=1))

    assert [r.status_code for r in responses] == [201] * 20, [
        r.text for r in responses if r.status_code != 201]
    assert [r.message for r in caplog.records if r.name == "api.db"] == []
