"""POST /api/v1/portfolios/{id}/reset through HTTP against the real app, a real Redis and a real
database (SQLite, and MariaDB when reachable): a reset cancels the live orders, closes every
position at no cost (at its last price, or at its book cost without a quote), sets the cash back
to the initial cash, and leaves a mark; the history before it stays readable, and the
performance history counts the reset as a flow, not as a loss or a gain. Refusals change
nothing. Every figure is worked out by hand in the comments; the money invariants are checked
after every test (tests/api/conftest.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.models import PortfolioReset
from api.performance.snapshots import SnapshotJob
from api.settings import ApiSettings
from tests.api.test_performance import after_close, at, history, points
from tests.api.test_portfolios import created, get_json, header
from tests.support.api import assert_problem, database, new_user
from tests.support.concurrency import concurrently
from tests.support.databases import database_url_on_both_backends  # noqa: F401
from tests.support.quotes import NAMES, make_quote, put
from tests.support.weekday_calendar import WeekdayCalendar

PORTFOLIOS = "/api/v1/portfolios"
INITIAL = 10_000_000
SAMSUNG, HYNIX = "A005930", "A000660"
CALENDAR = WeekdayCalendar()


def order(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/orders", headers=headers, json=body)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def reset(client: TestClient, user: dict[str, str], portfolio_id: int) -> dict[str, Any]:
    response = client.post(f"{PORTFOLIOS}/{portfolio_id}/reset", headers=user)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def reset_at(client: TestClient, user: dict[str, str], when: datetime) -> dict[str, Any]:
    """A reset of the user's default portfolio with the app's clock at `when` (its mark's time:
    the snapshot job's clock is as injected)."""
    app = client.app
    assert isinstance(app, FastAPI)
    saved = app.state.resources.clock
    app.state.resources.clock = lambda: when
    try:
        return reset(client, user, default_id(client, user))
    finally:
        app.state.resources.clock = saved


def default_id(client: TestClient, user: dict[str, str]) -> int:
    items = get_json(client, PORTFOLIOS, user)["items"]
    assert items[0]["is_default"]
    return int(items[0]["id"])


def resets_in_sql(client: TestClient) -> int:
    count: int = database(client).call(
        lambda s: s.scalar(select(func.count()).select_from(PortfolioReset)))
    return count


@pytest.fixture
def bob(client: TestClient, api_settings: ApiSettings) -> dict[str, str]:
    return new_user(client, api_settings, "bob@example.com")


def test_a_reset_cancels_closes_at_no_cost_and_starts_over_at_the_initial_cash(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(SAMSUNG, price=71_200))
    put(store, make_quote(HYNIX, price=50_000, base=50_000))
    b = {**alice, **header(created(client, alice, "B")["id"])}
    # 10 x 71,200 = 712,000 + commission floor(106.8) = 712,106;
    # 4 x 50,000 = 200,000 + commission floor(30) = 200,030 (book cost 200,030).
    order(client, b, code=SAMSUNG, side="BUY", type="MARKET", quantity=10)
    order(client, b, code=HYNIX, side="BUY", type="MARKET", quantity=4)
    resting_buy = order(client, b, code=SAMSUNG, side="BUY", type="LIMIT", price=60_000,
                        quantity=1)
    resting_sell = order(client, b, code=SAMSUNG, side="SELL", type="LIMIT", price=80_000,
                         quantity=1)
    assert client.post("/api/v1/account/deposit", headers=b,
                       json={"amount": 5_000}).status_code == 200
    # Cash 10,000,000 - 712,106 - 200,030 + 5,000 = 9,092,864.
    put(store, make_quote(SAMSUNG, price=72_000))
    store.delete(NAMES.quote(HYNIX))  # no quote: closed at its book cost a share
    before_default = get_json(client, "/api/v1/account", alice)

    mark = reset(client, alice, b["X-Portfolio-Id"])

    # Closing: 10 x 72,000 = 720,000; 4 x floor(200,030 / 4) = 4 x 50,007 = 200,028.
    # Equity just before: 9,092,864 + 920,028 = 10,012,892; the cash then is the same, and the
    # RESET row takes 12,892 to bring it to 10,000,000.
    assert {k: mark[k] for k in ("portfolio_id", "cash_before", "market_value_before",
                                 "equity_before", "cash_after", "orders_cancelled",
                                 "positions_closed")} == {
        "portfolio_id": int(b["X-Portfolio-Id"]), "cash_before": 9_092_864,
        "market_value_before": 920_028, "equity_before": 10_012_892, "cash_after": INITIAL,
        "orders_cancelled": 2, "positions_closed": 2}
    account = get_json(client, "/api/v1/account", b)
    assert (account["cash"], account["held_cash"], account["market_value"],
            account["equity"]) == (INITIAL, 0, 0, INITIAL)
    # The closing sales' realized P&L: 720,000 - 712,106 = 7,894 and 200,028 - 200,030 = -2.
    assert account["realized_pnl"] == 7_892
    assert get_json(client, "/api/v1/portfolio", b)["positions"] == []
    # The resting orders are cancelled; the closing orders filled at no cost.
    orders = {o["id"]: o for o in get_json(client, "/api/v1/orders", b)["items"]}
    for placed in (resting_buy, resting_sell):
        assert (orders[placed["id"]]["status"], orders[placed["id"]]["reason"]) == (
            "CANCELLED", "portfolio_reset")
    closing = [o for o in orders.values() if o["reason"] == "reset_close"]
    assert sorted((o["code"], o["side"], o["status"], o["filled_quantity"]) for o in closing) == [
        (HYNIX, "SELL", "FILLED", 4), (SAMSUNG, "SELL", "FILLED", 10)]
    fills = get_json(client, "/api/v1/fills", b)["items"][:2]
    assert sorted((f["code"], f["price"], f["commission"], f["tax"], f["rule"],
                   f["realized_pnl"]) for f in fills) == [
        (HYNIX, 50_007, 0, 0, "portfolio_reset", -2),
        (SAMSUNG, 72_000, 0, 0, "portfolio_reset", 7_894)]
    # The ledger, newest first: the reset, then the two sales (no fee, no tax rows).
    rows = get_json(client, "/api/v1/transactions", b)["items"]
    assert [(r["type"], r["amount"]) for r in rows[:3]] == [
        ("RESET", -12_892), ("SELL", 720_000), ("SELL", 200_028)]
    assert rows[0]["balance_after"] == INITIAL
    # The history stays: the earlier buys and deposit are still listed.
    assert [r["type"] for r in rows[3:]] == ["DEPOSIT", "FEE", "BUY", "FEE", "BUY", "DEPOSIT"]
    # The default portfolio is untouched, and the mark is listed.
    assert get_json(client, "/api/v1/account", alice) == before_default
    listed = get_json(client, f"{PORTFOLIOS}/{b['X-Portfolio-Id']}/resets", alice)["items"]
    assert [m["id"] for m in listed] == [mark["id"]]


def test_the_default_portfolio_resets_and_a_second_reset_only_adds_a_mark(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(SAMSUNG, price=71_200))
    order(client, alice, code=SAMSUNG, side="BUY", type="MARKET", quantity=10)
    put(store, make_quote(SAMSUNG, price=70_000))
    mine = default_id(client, alice)

    first = reset(client, alice, mine)
    # 10,000,000 - 712,106 = 9,287,894 cash + 700,000 = 9,987,894: the RESET row adds 12,106.
    assert (first["equity_before"], first["positions_closed"]) == (9_987_894, 1)
    assert get_json(client, "/api/v1/account", alice)["cash"] == INITIAL
    second = reset(client, alice, mine)
    assert {k: second[k] for k in ("cash_before", "market_value_before", "equity_before",
                                   "orders_cancelled", "positions_closed")} == {
        "cash_before": INITIAL, "market_value_before": 0, "equity_before": INITIAL,
        "orders_cancelled": 0, "positions_closed": 0}
    # Nothing moved the second time: one RESET row in all.
    rows = get_json(client, "/api/v1/transactions", alice)["items"]
    assert [(r["type"], r["amount"]) for r in rows if r["type"] == "RESET"] == [
        ("RESET", 12_106)]
    assert [m["id"] for m in get_json(client, f"{PORTFOLIOS}/{mine}/resets", alice)[
        "items"]] == [second["id"], first["id"]]
    # The stats of the period show both marks, count the closing sale as a trade (700,000 -
    # 712,106 = -12,106, at no cost), and not its order as one the user placed.
    stats = get_json(client, "/api/v1/stats?period=1W", alice)
    assert [m["equity_before"] for m in stats["resets"]] == [9_987_894, INITIAL]
    assert (stats["trades"]["count"], stats["trades"]["losses"],
            stats["realized_pnl"]["total"]) == (1, 1, -12_106)
    assert (stats["activity"]["orders_placed"], stats["activity"]["fills"],
            stats["costs"]["fees_paid"], stats["costs"]["taxes_paid"]) == (1, 2, 106, 0)


def test_refused_resets_change_nothing(client: TestClient, store: redis.Redis,
                                       alice: dict[str, str], bob: dict[str, str]) -> None:
    put(store, make_quote(SAMSUNG, price=71_200))
    b = created(client, alice, "B")
    order(client, {**alice, **header(b["id"])}, code=SAMSUNG, side="BUY", type="MARKET",
          quantity=1)
    before = get_json(client, f"{PORTFOLIOS}/{b['id']}", alice)
    # Another user's portfolio, one that does not exist, and the path's own validation.
    assert_problem(client.post(f"{PORTFOLIOS}/{b['id']}/reset", headers=bob), 404,
                   "portfolio_not_found")
    assert_problem(client.get(f"{PORTFOLIOS}/{b['id']}/resets", headers=bob), 404,
                   "portfolio_not_found")
    assert_problem(client.post(f"{PORTFOLIOS}/999999/reset", headers=alice), 404,
                   "portfolio_not_found")
    assert_problem(client.post(f"{PORTFOLIOS}/0/reset", headers=alice), 422,
                   "validation_error")
    assert client.post(f"{PORTFOLIOS}/{b['id']}/reset").status_code == 401
    assert get_json(client, f"{PORTFOLIOS}/{b['id']}", alice) == before
    assert resets_in_sql(client) == 0
    # A deleted portfolio is gone for resets too.
    empty = created(client, alice, "C")
    assert client.delete(f"{PORTFOLIOS}/{empty['id']}", headers=alice).status_code == 204
    assert_problem(client.post(f"{PORTFOLIOS}/{empty['id']}/reset", headers=alice), 404,
                   "portfolio_not_found")
    assert resets_in_sql(client) == 0


def test_the_history_counts_a_reset_as_a_flow_not_a_loss(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    job = SnapshotJob(database(client), store, NAMES, batch_size=10, pass_budget_s=None)
    # Monday: 20 x 50,000 = 1,000,000 + commission 150; cash 8,999,850. At 55,000:
    # E = 8,999,850 + 1,100,000 = 10,099,850.
    put(store, make_quote(SAMSUNG, price=50_000, base=50_000))
    order(client, alice, code=SAMSUNG, side="BUY", type="MARKET", quantity=20)
    put(store, make_quote(SAMSUNG, price=55_000, base=50_000))
    job.take_due(CALENDAR, after_close(0))
    # Tuesday at 60,500 the account is reset: the 20 shares close at 1,210,000 (realized
    # 1,210,000 - 1,000,150 = 209,850), the cash is 10,209,850, and RESET takes 209,850.
    put(store, make_quote(SAMSUNG, price=60_500, base=55_000))
    reset_at(client, alice, at(1, 11))
    job.take_due(CALENDAR, after_close(1))
    # Tuesday: E = 10,000,000, B = 10,099,850, F = -209,850:
    # pnl = 10,000,000 - 10,099,850 + 209,850 = 110,000 (20 x 5,500 made before the reset);
    # r = 10,000,000 / (10,099,850 - 209,850) - 1 = 110,000 / 9,890,000 = 1.11223%.
    # Monday's r = 10,099,850 / 10,000,000 - 1 = 0.9985%; cumulative 1.009985 x 1.0111223
    # - 1 = 2.1218%.
    answer = history(client, alice, at(2, 10), period="1W")
    monday, tuesday, live = points(answer)
    assert (monday["equity"], monday["return_pct"], monday["resets"]) == (
        10_099_850, "0.9985", 0)
    assert (tuesday["resets"], live["resets"]) == (1, 0)
    assert (tuesday["equity"], tuesday["net_flows"], tuesday["pnl"], tuesday["return_pct"],
            tuesday["cumulative_return_pct"], tuesday["realized_pnl"], tuesday["fees"],
            tuesday["taxes"]) == (INITIAL, -209_850, 110_000, "1.1122", "2.1218", 209_850,
                                  0, 0)
    # A second reset after Tuesday's close is the live point's (nothing moves: flat at 10M).
    reset_at(client, alice, at(1, 16))
    *_, live = points(history(client, alice, at(2, 10), period="1W"))
    assert (live["resets"], live["net_flows"], live["pnl"]) == (1, 0, 0)


def test_a_reset_racing_orders_keeps_every_invariant(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(SAMSUNG, price=71_200))
    mine = default_id(client, alice)
    order(client, alice, code=SAMSUNG, side="BUY", type="LIMIT", price=60_000, quantity=5)

    def act(index: int) -> int:
        if index == 0:
            return client.post(f"{PORTFOLIOS}/{mine}/reset", headers=alice).status_code
        side = "BUY" if index % 2 else "SELL"
        return client.post("/api/v1/orders", headers=alice, json={
            "code": SAMSUNG, "side": side, "type": "MARKET", "quantity": 3}).status_code

    codes = concurrently(13, act)

    # Each request ran whole before or after the reset (one account lock): a sale finds no
    # shares (422) or sells what it finds; nothing failed. The invariants are checked after.
    assert codes[0] == 200 and all(code in (201, 422) for code in codes[1:]), codes
    marks = get_json(client, f"{PORTFOLIOS}/{mine}/resets", alice)["items"]
    assert len(marks) == 1 and marks[0]["orders_cancelled"] == 1
