"""Per-user caps through the real app: live orders (ORDERS_MAX_OPEN_PER_USER), items per
watchlist (WATCHLIST_MAX_ITEMS) and free deposits per KST day (DEPOSIT_DAILY_MAX_KRW, with an
injected clock). Each is counted under the user's account lock, so concurrent requests stop
exactly at the cap (checked on MariaDB, where requests really run in parallel)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.kst_days import kst_day_around
from api.ledger import service as ledger
from api.market.rules import KST
from api.models import LedgerType
from api.settings import ApiSettings
from tests.support.api import assert_problem, database, new_user
from tests.support.concurrency import concurrently
from tests.support.databases import mysql_unreachable_reason
from tests.support.quotes import make_quote, put

ORDERS = "/api/v1/orders"
DEPOSIT = "/api/v1/account/deposit"
CODE = "A005930"
INITIAL = 10_000_000

MakeClient = Callable[..., tuple[TestClient, dict[str, str]]]


@pytest.fixture
def make_client_with(api_settings: ApiSettings) -> Iterator[MakeClient]:
    """An app with overridden settings (on the test's database), and a new user's headers."""
    with ExitStack() as stack:
        def make(**overrides: Any) -> tuple[TestClient, dict[str, str]]:
            settings = api_settings.model_copy(update=overrides)
            client = stack.enter_context(TestClient(create_app(settings)))
            return client, new_user(client, settings, "caps@example.com")

        yield make


def needs_parallel_database() -> None:
    reason = mysql_unreachable_reason()
    if reason is not None:
        pytest.skip(f"SKIPPED MySQL-only check: {reason}")


def resting_buy(client: TestClient, headers: dict[str, str], price: int = 70_000) -> int:
    return client.post(ORDERS, headers=headers, json={
        "code": CODE, "side": "BUY", "type": "LIMIT", "quantity": 1, "price": price,
        "time_in_force": "GTC"}).status_code


# --------------------------------------------------------------------------------------------
# Open orders


def test_live_orders_are_capped_and_a_cancel_makes_room(make_client_with: MakeClient,
                                                        store: redis.Redis) -> None:
    client, alice = make_client_with(orders_max_open_per_user=2)
    put(store, make_quote(CODE, price=71_200))
    assert [resting_buy(client, alice) for _ in range(2)] == [201, 201]

    refused = client.post(ORDERS, headers=alice, json={
        "code": CODE, "side": "BUY", "type": "LIMIT", "quantity": 1, "price": 70_000,
        "time_in_force": "DAY"})
    body = assert_problem(refused, 409, "too_many_open_orders")
    assert body["max_open_orders"] == 2
    # Orders that end in their request never count against the cap.
    market = client.post(ORDERS, headers=alice, json={"code": CODE, "side": "BUY",
                                                      "type": "MARKET", "quantity": 1})
    assert market.status_code == 201, market.text
    ioc = client.post(ORDERS, headers=alice, json={
        "code": CODE, "side": "BUY", "type": "LIMIT", "quantity": 1, "price": 70_000,
        "time_in_force": "IOC"})
    assert ioc.status_code == 201, ioc.text

    orders = client.get(ORDERS, headers=alice, params={"status": "OPEN"}).json()["items"]
    assert len(orders) == 2
    assert client.delete(f"{ORDERS}/{orders[0]['id']}", headers=alice).status_code == 200
    assert resting_buy(client, alice) == 201
    assert resting_buy(client, alice) == 409


def test_concurrent_resting_orders_stop_exactly_at_the_cap(make_client_with: MakeClient,
                                                           store: redis.Redis) -> None:
    needs_parallel_database()
    client, alice = make_client_with(orders_max_open_per_user=3)
    put(store, make_quote(CODE, price=71_200))

    outcomes = concurrently(10, lambda _: resting_buy(client, alice))

    assert sorted(outcomes) == [201] * 3 + [409] * 7
    assert len(client.get(ORDERS, headers=alice).json()["items"]) == 3


# --------------------------------------------------------------------------------------------
# Watchlist items


def test_concurrent_adds_of_distinct_codes_stop_exactly_at_the_cap(
        make_client_with: MakeClient) -> None:
    needs_parallel_database()
    client, alice = make_client_with(watchlist_max_items=3)
    created = client.post("/api/v1/watchlists", headers=alice, json={"name": "Race"})
    assert created.status_code == 201, created.text
    path = f"/api/v1/watchlists/{created.json()['id']}"
    codes = ["A005930", "A000660", "A035420", "A051910", "A005380", "A068270", "A035720",
             "A105560", "A055550", "A012330"]  # instruments of the master

    def add(index: int) -> int:
        return client.post(f"{path}/items", headers=alice,
                           json={"code": codes[index]}).status_code

    outcomes = concurrently(10, add)

    assert sorted(outcomes) == [201] * 3 + [422] * 7
    assert client.get(path, headers=alice).json()["item_count"] == 3
    assert_problem(client.post(f"{path}/items", headers=alice, json={"code": "A003550"}),
                   422, "watchlist_full")


# --------------------------------------------------------------------------------------------
# Free deposits per KST day


class Clock:
    """The app's "now", moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def with_clock(client: TestClient, clock: Clock) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    app.state.resources.clock = clock


def deposit(client: TestClient, headers: dict[str, str], amount: int) -> Any:
    return client.post(DEPOSIT, headers=headers, json={"amount": amount})


def test_free_deposits_are_capped_per_kst_day(make_client_with: MakeClient) -> None:
    client, alice = make_client_with(deposit_daily_max_krw=5_000_000)
    # Today, as the opening credit: it is not a free deposit, so all 5,000,000 are left.
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    with_clock(client, clock)
    tomorrow = datetime.combine(clock.now.astimezone(KST).date() + timedelta(days=1),
                                datetime.min.time(), tzinfo=KST)

    assert deposit(client, alice, 3_000_000).status_code == 200
    assert deposit(client, alice, 2_000_000).status_code == 200
    body = assert_problem(deposit(client, alice, 1), 422, "daily_deposit_limit_exceeded")
    assert (body["daily_max_krw"], body["remaining_today_krw"]) == (5_000_000, 0)
    assert body["resets_at"] == tomorrow.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    clock.now = tomorrow.astimezone(UTC) - timedelta(seconds=1)  # 23:59:59 in Korea
    assert_problem(deposit(client, alice, 1), 422, "daily_deposit_limit_exceeded")
    clock.now = tomorrow.astimezone(UTC) + timedelta(seconds=1)  # 00:00:01, the next day
    assert deposit(client, alice, 4_000_000).status_code == 200
    body = assert_problem(deposit(client, alice, 1_000_001), 422,
                          "daily_deposit_limit_exceeded")
    assert body["remaining_today_krw"] == 1_000_000
    assert deposit(client, alice, 1_000_000).status_code == 200

    rows = client.get("/api/v1/transactions", headers=alice).json()["items"]
    assert [r["amount"] for r in rows] == [1_000_000, 4_000_000, 2_000_000, 3_000_000,
                                           INITIAL]
    assert client.get("/api/v1/account", headers=alice).json()["cash"] == INITIAL + 10_000_000


def test_paid_credits_do_not_count_against_the_free_deposit_cap(
        make_client_with: MakeClient) -> None:
    client, alice = make_client_with(deposit_daily_max_krw=1_000_000)
    now = datetime.now(UTC).replace(microsecond=0)
    with_clock(client, Clock(now))
    user_id = client.get("/api/v1/users/me", headers=alice).json()["id"]

    def paid(session: Any) -> None:  # what a granted virtual-cash pack writes
        account = ledger.take_user_lock(session, user_id)
        ledger.post(session, account, LedgerType.PAYMENT, 50_000_000, "pay_test")

    database(client).call(paid)

    assert deposit(client, alice, 1_000_000).status_code == 200
    assert_problem(deposit(client, alice, 1), 422, "daily_deposit_limit_exceeded")


def test_concurrent_deposits_stop_exactly_at_the_daily_cap(make_client_with: MakeClient) -> None:
    needs_parallel_database()
    client, alice = make_client_with(deposit_daily_max_krw=5_000_000)

    outcomes = concurrently(10, lambda _: deposit(client, alice, 1_000_000).status_code)

    assert sorted(outcomes) == [200] * 5 + [422] * 5
    assert client.get("/api/v1/account", headers=alice).json()["cash"] == INITIAL + 5_000_000


def test_the_day_is_the_korean_calendar_day() -> None:
    start, end = kst_day_around(datetime(2026, 3, 2, 15, 0, tzinfo=UTC))
    assert start == datetime(2026, 3, 3, tzinfo=KST) and end - start == timedelta(days=1)
