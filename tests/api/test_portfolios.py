"""Several portfolios per user through HTTP against the real app, a real Redis and a real
database, on SQLite and on MariaDB: the portfolios' CRUD and its refusals (which change
nothing), the `X-Portfolio-Id` header on every account-scoped endpoint (another user's
portfolio is a 404 everywhere, a malformed value a 422), two portfolios of one user trading
independently, deleting (only when flat; the account's history stays), and a portfolio's
account refused at login. The money invariants hold after every test (tests/api/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.app import create_app
from api.models import LedgerEntry, Portfolio, Role, User
from api.settings import ApiSettings
from tests.conftest import RedisServer
from tests.support.api import app_settings, assert_problem, database, new_user
from tests.support.concurrency import concurrently
from tests.support.databases import database_url_on_both_backends  # noqa: F401
from tests.support.quotes import make_quote, put

PORTFOLIOS = "/api/v1/portfolios"
INITIAL = 10_000_000
CODE = "A005930"
DEFAULT_NAME = "기본 포트폴리오"


def header(portfolio_id: int | str) -> dict[str, str]:
    return {"X-Portfolio-Id": str(portfolio_id)}


def created(client: TestClient, user: dict[str, str], name: str) -> dict[str, Any]:
    response = client.post(PORTFOLIOS, headers=user, json={"name": name})
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def listed(client: TestClient, user: dict[str, str]) -> list[tuple[str, bool]]:
    response = client.get(PORTFOLIOS, headers=user)
    assert response.status_code == 200, response.text
    return [(item["name"], item["is_default"]) for item in response.json()["items"]]


def get_json(client: TestClient, path: str, headers: dict[str, str]) -> Any:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def cash(client: TestClient, headers: dict[str, str]) -> int:
    answer: int = get_json(client, "/api/v1/account", headers)["cash"]
    return answer


def portfolio_rows(client: TestClient) -> int:
    return database(client).call(
        lambda s: s.scalar(select(func.count()).select_from(Portfolio)))


@pytest.fixture
def bob(client: TestClient, api_settings: ApiSettings) -> dict[str, str]:
    return new_user(client, api_settings, "bob@example.com")


# --------------------------------------------------------------------------------------------
# The portfolios themselves


def test_a_new_user_has_the_default_portfolio_and_creates_more(
        client: TestClient, alice: dict[str, str]) -> None:
    assert listed(client, alice) == [(DEFAULT_NAME, True)]

    momentum = created(client, alice, "  Momentum  ")  # trimmed
    value = created(client, alice, "가치주")

    assert (momentum["name"], momentum["is_default"]) == ("Momentum", False)
    assert listed(client, alice) == [(DEFAULT_NAME, True), ("Momentum", False), ("가치주", False)]
    detail = get_json(client, f"{PORTFOLIOS}/{value['id']}", alice)
    assert (detail["id"], detail["name"]) == (value["id"], "가치주")
    # A new portfolio's account is opened as a registration's: the initial cash, nothing held.
    account = detail["account"]
    assert (account["cash"], account["held_cash"], account["equity"]) == (INITIAL, 0, INITIAL)
    assert cash(client, {**alice, **header(value["id"])}) == INITIAL

    renamed = client.patch(f"{PORTFOLIOS}/{value['id']}", headers=alice, json={"name": "Value"})
    assert renamed.status_code == 200, renamed.text
    assert listed(client, alice) == [(DEFAULT_NAME, True), ("Momentum", False), ("Value", False)]
    # The default portfolio can be renamed too; it stays first.
    default_id = client.get(PORTFOLIOS, headers=alice).json()["items"][0]["id"]
    assert client.patch(f"{PORTFOLIOS}/{default_id}", headers=alice,
                        json={"name": "Main"}).status_code == 200
    assert listed(client, alice)[0] == ("Main", True)


def test_refused_names_and_the_limit_change_nothing(redis_server: RedisServer,
                                                    api_settings: ApiSettings) -> None:
    settings = app_settings(redis_server.url, api_settings.database_url,
                            max_portfolios_per_user=3)
    with TestClient(create_app(settings)) as client:
        alice = new_user(client, settings, "alice@example.com")
        momentum = created(client, alice, "Momentum")
        before = portfolio_rows(client)

        for body in ({"name": ""}, {"name": "   "}, {"name": "x" * 65}, {"name": "a\nb"}, {}):
            assert_problem(client.post(PORTFOLIOS, headers=alice, json=body), 422,
                           "validation_error")
        # Letter case is ignored.
        assert_problem(client.post(PORTFOLIOS, headers=alice, json={"name": "MOMENTUM"}), 409,
                       "portfolio_name_taken")
        assert_problem(client.patch(f"{PORTFOLIOS}/{momentum['id']}", headers=alice,
                                    json={"name": DEFAULT_NAME}), 409, "portfolio_name_taken")
        assert_problem(client.patch(f"{PORTFOLIOS}/{momentum['id']}", headers=alice,
                                    json={"name": " "}), 422, "validation_error")
        assert portfolio_rows(client) == before
        assert listed(client, alice) == [(DEFAULT_NAME, True), ("Momentum", False)]

        created(client, alice, "Third")  # 3 with the default: the limit
        assert_problem(client.post(PORTFOLIOS, headers=alice, json={"name": "Fourth"}), 409,
                       "portfolio_limit")
        assert listed(client, alice) == [(DEFAULT_NAME, True), ("Momentum", False),
                                         ("Third", False)]
        # A deleted portfolio frees its place and its name.
        assert client.delete(f"{PORTFOLIOS}/{momentum['id']}",
                             headers=alice).status_code == 204
        created(client, alice, "Momentum")
        assert listed(client, alice) == [(DEFAULT_NAME, True), ("Third", False),
                                         ("Momentum", False)]


def test_concurrent_creates_keep_the_limit_and_the_names_unique(
        redis_server: RedisServer, api_settings: ApiSettings) -> None:
    settings = app_settings(redis_server.url, api_settings.database_url,
                            max_portfolios_per_user=4)
    with TestClient(create_app(settings)) as client:
        alice = new_user(client, settings, "alice@example.com")

        def create(name: str) -> str:
            answer = client.post(PORTFOLIOS, headers=alice, json={"name": name})
            return "ok" if answer.status_code == 201 else answer.json()["code"]

        same = concurrently(6, lambda _: create("Same"))
        assert sorted(same) == ["ok"] + ["portfolio_name_taken"] * 5
        # 4 allowed, the default and "Same" made: room for 2 of 6.
        distinct = concurrently(6, lambda index: create(f"P{index}"))
        assert sorted(distinct) == ["ok"] * 2 + ["portfolio_limit"] * 4
        assert len(listed(client, alice)) == 4


def test_a_portfolio_account_cannot_sign_in(client: TestClient, alice: dict[str, str]) -> None:
    portfolio = created(client, alice, "Momentum")
    # new_user registers alice with the password test-password-0001.
    known_hash = database(client).call(lambda s: s.scalar(
        select(User.password_hash).where(User.email == "alice@example.com")))

    def known_password(session: Session) -> str:
        # Give the account the hash of alice's known password: only its role refuses it then.
        account = session.get(User, session.get(Portfolio, portfolio["id"]).account_id)
        assert account is not None and account.role == Role.PORTFOLIO.value
        account.password_hash = known_hash
        return account.email

    email = database(client).call(known_password)
    assert email.endswith("@portfolios.invalid")

    answer = client.post("/api/v1/auth/login",
                         json={"email": email, "password": "test-password-0001"})

    assert_problem(answer, 401, "invalid_credentials")


# --------------------------------------------------------------------------------------------
# The header


def test_two_portfolios_of_one_user_trade_independently(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=71_200))
    b = {**alice, **header(created(client, alice, "B")["id"])}

    order = client.post("/api/v1/orders", headers=b,
                        json={"code": CODE, "side": "BUY", "type": "MARKET", "quantity": 10})
    assert order.status_code == 201, order.text
    resting = client.post("/api/v1/orders", headers=b, json={
        "code": CODE, "side": "BUY", "type": "LIMIT", "price": 60_000, "quantity": 1})
    assert resting.status_code == 201, resting.text
    assert client.post("/api/v1/account/deposit", headers=b,
                       json={"amount": 5_000}).status_code == 200

    # B: 10 x 71,200 = 712,000 plus 0.015% commission 106.8 -> 106, then +5,000 deposited;
    # 60,000 + floor(9) = 60,009 held for the resting buy.
    b_account = get_json(client, "/api/v1/account", b)
    assert (b_account["cash"], b_account["held_cash"]) == (INITIAL - 712_106 + 5_000, 60_009)
    assert [p["quantity"] for p in get_json(client, "/api/v1/portfolio", b)["positions"]] == [10]
    # A (no header: the default portfolio) is untouched.
    a_account = get_json(client, "/api/v1/account", alice)
    assert (a_account["cash"], a_account["held_cash"], a_account["market_value"]) == (
        INITIAL, 0, 0)
    assert get_json(client, "/api/v1/portfolio", alice)["positions"] == []
    assert get_json(client, "/api/v1/orders", alice)["items"] == []
    assert len(get_json(client, "/api/v1/orders", b)["items"]) == 2
    assert get_json(client, "/api/v1/fills", alice)["items"] == []
    assert len(get_json(client, "/api/v1/fills", b)["items"]) == 1
    assert [row["type"] for row in get_json(client, "/api/v1/transactions", alice)["items"]] == [
        "DEPOSIT"]
    assert [row["type"] for row in get_json(client, "/api/v1/transactions", b)["items"]] == [
        "DEPOSIT", "FEE", "BUY", "DEPOSIT"]
    # B's order is not A's: 404 without B's header, and B's header reaches it.
    resting_id = resting.json()["id"]
    assert_problem(client.get(f"/api/v1/orders/{resting_id}", headers=alice), 404,
                   "order_not_found")
    assert_problem(client.delete(f"/api/v1/orders/{resting_id}", headers=alice), 404,
                   "order_not_found")
    cancelled = client.delete(f"/api/v1/orders/{resting_id}", headers=b)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    # What A may buy is A's cash's: floor(10,000,000 / (71,200 x 1.00015)) = 140.
    power = get_json(client, f"/api/v1/account/buying-power?code={CODE}&price=71200", alice)
    assert power["max_buy_quantity"] == 140
    assert get_json(client, f"/api/v1/account/buying-power?code={CODE}", b)[
        "max_sell_quantity"] == 10
    # The portfolio's detail answers its own account.
    assert get_json(client, f"{PORTFOLIOS}/{b['X-Portfolio-Id']}", alice)["account"]["cash"] == (
        INITIAL - 712_106 + 5_000)


def _endpoints(order_id: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every account-scoped endpoint, with a request it would accept."""
    return [
        ("GET", "/api/v1/account", None),
        ("GET", "/api/v1/portfolio", None),
        ("POST", "/api/v1/account/deposit", {"amount": 1_000}),
        ("POST", "/api/v1/account/withdraw", {"amount": 1_000}),
        ("GET", "/api/v1/transactions", None),
        ("POST", "/api/v1/orders", {"code": CODE, "side": "BUY", "type": "MARKET",
                                    "quantity": 1}),
        ("GET", "/api/v1/orders", None),
        ("GET", f"/api/v1/orders/{order_id}", None),
        ("DELETE", f"/api/v1/orders/{order_id}", None),
        ("PATCH", f"/api/v1/orders/{order_id}", {"price": 61_000}),
        ("GET", "/api/v1/fills", None),
        ("GET", "/api/v1/stats", None),
        ("GET", "/api/v1/portfolio/history", None),
        ("GET", f"/api/v1/account/buying-power?code={CODE}", None),
        ("POST", "/api/v1/payments/portone/prepare", {"product_id": "cash-10m"}),
        ("GET", "/api/v1/stream/sse?orders=1", None),
    ]


def test_another_users_portfolio_is_not_found_and_bad_headers_are_refused_everywhere(
        client: TestClient, store: redis.Redis, alice: dict[str, str],
        bob: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=71_200))
    bobs = [item["id"] for item in client.get(PORTFOLIOS, headers=bob).json()["items"]]
    bobs.append(created(client, bob, "Bob's")["id"])
    # An order of bob's second portfolio, which alice must not reach through its id either.
    bob_order = client.post("/api/v1/orders", headers={**bob, **header(bobs[1])}, json={
        "code": CODE, "side": "BUY", "type": "LIMIT", "price": 60_000, "quantity": 1})
    assert bob_order.status_code == 201, bob_order.text
    gone = created(client, alice, "Gone")["id"]
    assert client.delete(f"{PORTFOLIOS}/{gone}", headers=alice).status_code == 204
    unknown = max(bobs) + 1_000

    def state() -> tuple[int, int, int]:
        return (cash(client, alice), cash(client, {**bob, **header(bobs[1])}),
                database(client).call(
                    lambda s: s.scalar(select(func.count()).select_from(LedgerEntry))))

    before = state()
    for method, path, body in _endpoints(bob_order.json()["id"]):
        for portfolio_id in (*bobs, gone, unknown):
            answer = client.request(method, path, headers={**alice, **header(portfolio_id)},
                                    json=body)
            assert_problem(answer, 404, "portfolio_not_found")
        for bad in ("abc", "0", "-1", "1.5", "", str(2**63), " 1x"):
            answer = client.request(method, path, headers={**alice, **header(bad)}, json=body)
            assert_problem(answer, 422, "validation_error")
    for portfolio_id in bobs:
        for method in ("GET", "PATCH", "DELETE"):
            answer = client.request(method, f"{PORTFOLIOS}/{portfolio_id}", headers=alice,
                                    json={"name": "mine"} if method == "PATCH" else None)
            assert_problem(answer, 404, "portfolio_not_found")
    assert state() == before
    assert [name for name, _ in listed(client, bob)] == [DEFAULT_NAME, "Bob's"]


# --------------------------------------------------------------------------------------------
# Deleting


def test_only_a_flat_extra_portfolio_is_deleted_and_its_history_stays(
        client: TestClient, store: redis.Redis, alice: dict[str, str]) -> None:
    put(store, make_quote(CODE, price=71_200))
    portfolio = created(client, alice, "B")
    b = {**alice, **header(portfolio["id"])}
    default_id = client.get(PORTFOLIOS, headers=alice).json()["items"][0]["id"]
    path = f"{PORTFOLIOS}/{portfolio['id']}"

    assert_problem(client.delete(f"{PORTFOLIOS}/{default_id}", headers=alice), 409,
                   "default_portfolio")
    resting = client.post("/api/v1/orders", headers=b, json={
        "code": CODE, "side": "BUY", "type": "LIMIT", "price": 60_000, "quantity": 1})
    assert resting.status_code == 201, resting.text
    assert_problem(client.delete(path, headers=alice), 409, "portfolio_not_flat")  # an order
    assert client.delete(f"/api/v1/orders/{resting.json()['id']}", headers=b).status_code == 200
    for side in ("BUY", "SELL"):
        assert client.post("/api/v1/orders", headers=b, json={
            "code": CODE, "side": side, "type": "MARKET", "quantity": 2}).status_code == 201
        if side == "BUY":
            assert_problem(client.delete(path, headers=alice), 409, "portfolio_not_flat")
    assert listed(client, alice) == [(DEFAULT_NAME, True), ("B", False)]

    assert client.delete(path, headers=alice).status_code == 204

    assert listed(client, alice) == [(DEFAULT_NAME, True)]
    assert_problem(client.get(path, headers=alice), 404, "portfolio_not_found")
    assert_problem(client.delete(path, headers=alice), 404, "portfolio_not_found")
    assert_problem(client.get("/api/v1/account", headers=b), 404, "portfolio_not_found")
    # Its account's history is kept: DEPOSIT, then BUY + FEE and SELL + FEE + TAX.
    rows = database(client).call(lambda s: list(s.scalars(
        select(LedgerEntry.type).join(Portfolio, Portfolio.account_id == LedgerEntry.user_id)
        .where(Portfolio.id == portfolio["id"]).order_by(LedgerEntry.id))))
    assert rows == ["DEPOSIT", "BUY", "FEE", "SELL", "FEE", "TAX"]
