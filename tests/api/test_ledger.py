"""The cash account and its ledger through HTTP, against the real app and a real database
(MariaDB when reachable): the opening deposit, deposits and withdrawals with their refusals, the
ledger with its filters and cursor, isolation between users, the retry on deadlocks,
concurrent withdrawals that never overspend, and the Idempotency-Key header. After every test
that used the app, every account's cash equals the sum of its ledger and each row continues the
one before."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api.app import create_app
from api.db import Database, make_engine
from api.errors import Conflict, Unprocessable
from api.ledger import service
from api.market.rules import KST
from api.models import Account, LedgerEntry, LedgerType, Role, User
from api.settings import ApiSettings
from tests.conftest import RedisServer
from tests.support.api import assert_problem, database, new_user
from tests.support.concurrency import concurrently
from tests.support.invariants import assert_invariants
from tests.support.quotes import make_quote, put
from tests.support.tokens import bearer

ACCOUNT = "/api/v1/account"
DEPOSIT = "/api/v1/account/deposit"
WITHDRAW = "/api/v1/account/withdraw"
TRANSACTIONS = "/api/v1/transactions"
INITIAL = 10_000_000

MakeClient = Callable[..., tuple[TestClient, dict[str, str]]]


# --------------------------------------------------------------------------------------------
# Helpers


def database_settings(client: TestClient) -> ApiSettings:
    app = client.app
    assert isinstance(app, FastAPI)
    settings: ApiSettings = app.state.resources.settings
    return settings


def rows_of(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get(TRANSACTIONS, headers=headers, params={"limit": 200})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# --------------------------------------------------------------------------------------------
# Opening, deposits and withdrawals


def test_a_new_user_starts_with_the_initial_deposit(client: TestClient,
                                                    alice: dict[str, str]) -> None:
    response = client.get(ACCOUNT, headers=alice)

    assert response.status_code == 200, response.text
    assert response.json() == {"cash": INITIAL, "held_cash": 0, "available_cash": INITIAL,
                               "market_value": 0, "equity": INITIAL, "realized_pnl": 0,
                               "unrealized_pnl": 0, "return_rate": None, "fees_paid": 0,
                               "taxes_paid": 0, "stale_quotes": [], "clawback_due": 0,
                               "currency": "KRW"}
    [row] = rows_of(client, alice)
    assert (row["type"], row["amount"], row["balance_before"], row["balance_after"]) == (
        "DEPOSIT", INITIAL, 0, INITIAL)
    # The opening credit is marked, so the daily cap on free deposits does not count it.
    assert row["reference"] == f"opening:{alice_id(client)}"


def test_the_admin_created_at_start_has_an_account(client: TestClient) -> None:
    admin_id = database(client).call(lambda session: session.scalar(
        select(User.id).where(User.role == Role.ADMIN.value)))
    assert admin_id is not None
    headers = bearer(database_settings(client), Role.ADMIN, admin_id)
    assert client.get(ACCOUNT, headers=headers).json()["cash"] == INITIAL


def test_deposit_and_withdraw_write_one_row_each(client: TestClient,
                                                 alice: dict[str, str]) -> None:
    deposited = client.post(DEPOSIT, headers=alice, json={"amount": 2_500_000})
    assert deposited.status_code == 200, deposited.text
    body = deposited.json()
    assert body["account"]["cash"] == INITIAL + 2_500_000
    assert body["account"]["available_cash"] == INITIAL + 2_500_000
    entry = body["entry"]
    assert (entry["type"], entry["amount"], entry["balance_before"], entry["balance_after"]) == (
        "DEPOSIT", 2_500_000, INITIAL, INITIAL + 2_500_000)

    withdrawn = client.post(WITHDRAW, headers=alice, json={"amount": 12_000_000})
    assert withdrawn.status_code == 200, withdrawn.text
    body = withdrawn.json()
    assert body["account"]["cash"] == 500_000
    entry = body["entry"]
    assert (entry["type"], entry["amount"], entry["balance_before"], entry["balance_after"]) == (
        "WITHDRAW", -12_000_000, INITIAL + 2_500_000, 500_000)

    rows = rows_of(client, alice)
    assert rows[0] == entry  # the answer shows the row as stored
    assert [(r["type"], r["amount"]) for r in rows] == [
        ("WITHDRAW", -12_000_000), ("DEPOSIT", 2_500_000), ("DEPOSIT", INITIAL)]
    assert client.get(ACCOUNT, headers=alice).json()["cash"] == 500_000


@pytest.mark.parametrize(("path", "amount", "code"), [
    (DEPOSIT, 0, "invalid_amount"),
    (DEPOSIT, -5, "invalid_amount"),
    (WITHDRAW, 0, "invalid_amount"),
    (WITHDRAW, -1_000, "invalid_amount"),
    (DEPOSIT, 1000.5, "validation_error"),
    (DEPOSIT, 1000.0, "validation_error"),
    (WITHDRAW, "1000", "validation_error"),
    (DEPOSIT, True, "validation_error"),
    (DEPOSIT, None, "validation_error"),
    (DEPOSIT, 100_000_001, "amount_over_limit"),
    (WITHDRAW, 100_000_001, "amount_over_limit"),
    (DEPOSIT, 2**70, "amount_over_limit"),
])
def test_invalid_amounts_are_refused_and_write_nothing(client: TestClient, alice: dict[str, str],
                                                       path: str, amount: object,
                                                       code: str) -> None:
    assert_problem(client.post(path, headers=alice, json={"amount": amount}), 422, code)

    assert len(rows_of(client, alice)) == 1
    assert client.get(ACCOUNT, headers=alice).json()["cash"] == INITIAL


def test_a_missing_amount_is_refused(client: TestClient, alice: dict[str, str]) -> None:
    assert_problem(client.post(DEPOSIT, headers=alice, json={}), 422, "validation_error")


def test_the_limits_are_settings(make_client_with: MakeClient) -> None:
    client, headers = make_client_with(deposit_max_krw=1_000, withdraw_max_krw=500)
    assert client.post(DEPOSIT, headers=headers, json={"amount": 1_000}).status_code == 200
    body = assert_problem(client.post(DEPOSIT, headers=headers, json={"amount": 1_001}), 422,
                          "amount_over_limit")
    assert body["max_amount"] == 1_000
    assert client.post(WITHDRAW, headers=headers, json={"amount": 500}).status_code == 200
    assert_problem(client.post(WITHDRAW, headers=headers, json={"amount": 501}), 422,
                   "amount_over_limit")


@pytest.fixture
def make_client_with(api_settings: ApiSettings) -> Iterator[MakeClient]:
    """An app with overridden settings (on the test's database), and a new user's headers."""
    with ExitStack() as stack:
        clients: list[TestClient] = []

        def make(**overrides: Any) -> tuple[TestClient, dict[str, str]]:
            settings = api_settings.model_copy(update=overrides)
            client = stack.enter_context(TestClient(create_app(settings)))
            clients.append(client)
            return client, new_user(client, settings, "limits@example.com")

        yield make
        for client in clients:
            assert_invariants(database(client))


def test_the_initial_cash_is_a_setting(make_client_with: MakeClient) -> None:
    client, headers = make_client_with(initial_cash=0)
    assert client.get(ACCOUNT, headers=headers).json()["cash"] == 0
    assert rows_of(client, headers) == []  # nothing executed, so no row
    assert_problem(client.post(WITHDRAW, headers=headers, json={"amount": 1}), 422,
                   "insufficient_funds")


def test_withdrawing_more_than_available_changes_nothing(client: TestClient,
                                                         alice: dict[str, str]) -> None:
    body = assert_problem(client.post(WITHDRAW, headers=alice, json={"amount": INITIAL + 1}),
                          422, "insufficient_funds")
    assert body["available_cash"] == INITIAL
    assert client.get(ACCOUNT, headers=alice).json()["cash"] == INITIAL
    assert len(rows_of(client, alice)) == 1

    # Everything is available, and can be taken out to the last won.
    assert client.post(WITHDRAW, headers=alice, json={"amount": INITIAL}).status_code == 200
    assert client.get(ACCOUNT, headers=alice).json()["cash"] == 0


def test_held_cash_cannot_be_withdrawn(client: TestClient, redis_server: RedisServer,
                                      alice: dict[str, str]) -> None:
    store = redis_server.client()
    put(store, make_quote("A005930", price=80_100))  # the buy below is under it: it rests
    store.close()
    # A resting buy of 50 at 80,000 holds its value plus commission: 4,000,600.
    assert client.post("/api/v1/orders", headers=alice, json={
        "code": "A005930", "side": "BUY", "type": "LIMIT", "quantity": 50,
        "price": 80_000}).status_code == 201

    summary = client.get(ACCOUNT, headers=alice).json()
    assert (summary["cash"], summary["held_cash"], summary["available_cash"]) == (
        INITIAL, 4_000_600, 5_999_400)
    assert_problem(client.post(WITHDRAW, headers=alice, json={"amount": 5_999_401}), 422,
                   "insufficient_funds")
    assert client.post(WITHDRAW, headers=alice, json={"amount": 5_999_400}).status_code == 200


def alice_id(client: TestClient) -> int:
    user_id = database(client).call(lambda session: session.scalar(
        select(User.id).where(User.email == "alice@example.com")))
    assert user_id is not None
    return int(user_id)


def test_account_endpoints_need_a_token(client: TestClient) -> None:
    for method, path in [("GET", ACCOUNT), ("POST", DEPOSIT), ("POST", WITHDRAW),
                         ("GET", TRANSACTIONS)]:
        assert_problem(client.request(method, path, json={"amount": 1}), 401,
                       "not_authenticated")


def test_a_token_whose_user_does_not_exist_gets_401(client: TestClient,
                                                    api_settings: ApiSettings) -> None:
    headers = bearer(api_settings, Role.USER, 987_654)  # no such user (nor account)
    assert_problem(client.get(ACCOUNT, headers=headers), 401, "user_not_found")
    assert_problem(client.post(DEPOSIT, headers=headers, json={"amount": 1}), 401,
                   "user_not_found")


def test_users_from_before_accounts_get_one_at_the_next_start(
        client: TestClient, api_settings: ApiSettings) -> None:
    def old_user(session: Session) -> int:
        user = User(email="early@example.com", password_hash="x", role=Role.USER.value)
        session.add(user)
        session.flush()
        return user.id
    user_id = database(client).call(old_user)
    headers = bearer(api_settings, Role.USER, user_id)
    assert_problem(client.get(ACCOUNT, headers=headers), 404, "account_not_found")

    with TestClient(create_app(api_settings)) as restarted:
        assert restarted.get(ACCOUNT, headers=headers).json()["cash"] == INITIAL
        assert [(r["type"], r["amount"]) for r in rows_of(restarted, headers)] == [
            ("DEPOSIT", INITIAL)]


# --------------------------------------------------------------------------------------------
# The ledger


def test_transactions_page_by_cursor_newest_first(client: TestClient,
                                                  alice: dict[str, str]) -> None:
    for amount in (1, 2, 3, 4, 5):
        assert client.post(DEPOSIT, headers=alice, json={"amount": amount}).status_code == 200

    first = client.get(TRANSACTIONS, headers=alice, params={"limit": 4}).json()
    assert [r["amount"] for r in first["items"]] == [5, 4, 3, 2]
    assert first["next_cursor"]
    second = client.get(TRANSACTIONS, headers=alice,
                        params={"limit": 4, "cursor": first["next_cursor"]}).json()
    assert [r["amount"] for r in second["items"]] == [1, INITIAL]
    assert second["next_cursor"] is None
    ids = [r["id"] for r in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6

    exact = client.get(TRANSACTIONS, headers=alice, params={"limit": 6}).json()
    assert len(exact["items"]) == 6 and exact["next_cursor"] is None
    assert len(client.get(TRANSACTIONS, headers=alice).json()["items"]) == 6  # default 50


def test_transactions_filter_by_type_and_day(client: TestClient, alice: dict[str, str]) -> None:
    client.post(WITHDRAW, headers=alice, json={"amount": 700})
    client.post(DEPOSIT, headers=alice, json={"amount": 300})
    client.post(WITHDRAW, headers=alice, json={"amount": 100})

    withdrawals = client.get(TRANSACTIONS, headers=alice, params={"type": "WITHDRAW"}).json()
    assert [r["amount"] for r in withdrawals["items"]] == [-100, -700]
    deposits = client.get(TRANSACTIONS, headers=alice, params={"type": "DEPOSIT"}).json()
    assert [r["amount"] for r in deposits["items"]] == [300, INITIAL]
    assert client.get(TRANSACTIONS, headers=alice,
                      params={"type": "FEE"}).json()["items"] == []

    today = datetime.now(KST).date()
    day = timedelta(days=1)

    def amounts(**params: Any) -> list[int]:
        response = client.get(TRANSACTIONS, headers=alice, params=params)
        assert response.status_code == 200, response.text
        return [r["amount"] for r in response.json()["items"]]

    assert len(amounts(**{"from": str(today - day), "to": str(today + day)})) == 4
    assert amounts(**{"from": str(today + day)}) == []
    assert amounts(to=str(today - day)) == []
    assert amounts(type="WITHDRAW", **{"from": str(today - day)}) == [-100, -700]


@pytest.mark.parametrize(("params", "code"), [
    ({"type": "BONUS"}, "validation_error"),
    ({"limit": 0}, "validation_error"),
    ({"limit": 201}, "validation_error"),
    ({"from": "yesterday"}, "validation_error"),
    ({"from": "2026-01-02", "to": "2026-01-01"}, "invalid_date_range"),
    ({"cursor": "not-a-cursor"}, "invalid_cursor"),
    ({"cursor": "bGU6eA"}, "invalid_cursor"),  # "le:x"
])
def test_bad_transaction_queries_are_refused(client: TestClient, alice: dict[str, str],
                                             params: dict[str, Any], code: str) -> None:
    assert_problem(client.get(TRANSACTIONS, headers=alice, params=params), 422, code)


def test_a_user_never_sees_another_users_rows(client: TestClient, api_settings: ApiSettings,
                                              alice: dict[str, str]) -> None:
    bob = new_user(client, api_settings, "bob@example.com")
    client.post(DEPOSIT, headers=alice, json={"amount": 111})
    client.post(WITHDRAW, headers=bob, json={"amount": 222})

    assert [r["amount"] for r in rows_of(client, alice)] == [111, INITIAL]
    assert [r["amount"] for r in rows_of(client, bob)] == [-222, INITIAL]
    assert client.get(ACCOUNT, headers=bob).json()["cash"] == INITIAL - 222
    # Another user's cursor only continues below an id; it still shows only my rows.
    alice_cursor = client.get(TRANSACTIONS, headers=alice,
                              params={"limit": 1}).json()["next_cursor"]
    page = client.get(TRANSACTIONS, headers=bob, params={"cursor": alice_cursor}).json()
    assert all(r["amount"] in (-222, INITIAL) for r in page["items"])


# --------------------------------------------------------------------------------------------
# Posting, references and retries (service level)


def test_a_reference_is_recorded_once_per_type(client: TestClient, alice: dict[str, str]) -> None:
    user_id = alice_id(client)
    db = database(client)

    # (A PAYMENT row must credit a payment record, which the invariants check: a DEPOSIT
    # with an outside reference shows the same rule.)
    def credit(session: Session) -> int:
        return service.post(session, service.take_user_lock(session, user_id),
                            LedgerType.DEPOSIT, 5_000, reference="transfer-123").id

    db.call(credit)
    with pytest.raises(Conflict) as refused:
        db.call(credit)
    assert refused.value.code == "duplicate_ledger_reference"
    assert client.get(ACCOUNT, headers=alice).json()["cash"] == INITIAL + 5_000


def mysql_error(number: int) -> OperationalError:
    return OperationalError("UPDATE accounts ...", {}, Exception(number, "simulated"))


def test_deadlocks_are_retried_a_bounded_number_of_times() -> None:
    db = Database(create_engine("sqlite://"), deadlock_retries=2)
    calls: list[int] = []

    def flaky(session: Session, failures: int, number: int) -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise mysql_error(number)
        return "done"

    assert db.call_retrying(flaky, 2, 1213) == "done" and len(calls) == 3
    calls.clear()
    assert db.call_retrying(flaky, 1, 1205) == "done" and len(calls) == 2
    calls.clear()
    with pytest.raises(OperationalError):
        db.call_retrying(flaky, 3, 1213)  # one try and two retries, then the error surfaces
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(OperationalError):
        db.call_retrying(flaky, 1, 2006)  # "server has gone away": not retried
    assert len(calls) == 1
    db.dispose()


def test_concurrent_withdrawals_never_overspend(mysql_database_url: str) -> None:
    """50 threads each withdraw a tenth of the balance at once: exactly 10 succeed."""
    db = Database(make_engine(mysql_database_url, pool_size=25))
    try:
        def make_user(session: Session) -> int:
            user = User(email="race@example.com", password_hash="x", role=Role.USER.value)
            session.add(user)
            session.flush()
            service.open_account(session, user.id, 1_000_000)
            return user.id
        user_id = db.call(make_user)

        def attempt(_: int) -> str:
            try:
                db.call_retrying(service.withdraw, user_id, 100_000, max_krw=10**8)
                return "ok"
            except Unprocessable as exc:
                return exc.code

        outcomes = concurrently(50, attempt)

        assert outcomes.count("ok") == 10
        assert outcomes.count("insufficient_funds") == 40
        account = db.call(lambda session: session.get(Account, user_id))
        assert account is not None and account.cash == 0
        assert db.call(service.ledger_total, user_id) == 0
        assert_invariants(db)
        rows = db.call(lambda session: session.scalars(select(LedgerEntry.type)).all())
        assert sorted(rows) == ["DEPOSIT"] + ["WITHDRAW"] * 10
    finally:
        db.dispose()


# --------------------------------------------------------------------------------------------
# Idempotency-Key


def test_the_same_idempotency_key_answers_the_same_without_a_second_effect(
        client: TestClient, alice: dict[str, str]) -> None:
    headers = {**alice, "Idempotency-Key": "dep-1"}
    first = client.post(DEPOSIT, headers=headers, json={"amount": 1_000})
    again = client.post(DEPOSIT, headers=headers, json={"amount": 1_000})

    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert client.get(ACCOUNT, headers=alice).json()["cash"] == INITIAL + 1_000
    assert len(rows_of(client, alice)) == 2
    # A new key is a new deposit.
    other = client.post(DEPOSIT, headers={**alice, "Idempotency-Key": "dep-2"},
                        json={"amount": 1_000})
    assert other.json()["entry"]["id"] != first.json()["entry"]["id"]
    assert client.get(ACCOUNT, headers=alice).json()["cash"] == INITIAL + 2_000


def test_an_idempotency_key_reused_for_another_request_is_refused(
        client: TestClient, alice: dict[str, str]) -> None:
    headers = {**alice, "Idempotency-Key": "k"}
    assert client.post(WITHDRAW, headers=headers, json={"amount": 500}).status_code == 200

    assert_problem(client.post(WITHDRAW, headers=headers, json={"amount": 501}), 422,
                   "idempotency_key_reused")
    assert_problem(client.post(DEPOSIT, headers=headers, json={"amount": 500}), 422,
                   "idempotency_key_reused")
    assert client.get(ACCOUNT, headers=alice).json()["cash"] == INITIAL - 500
    assert len(rows_of(client, alice)) == 2


def test_idempotency_keys_are_per_user_and_failures_are_not_recorded(
        client: TestClient, api_settings: ApiSettings, alice: dict[str, str]) -> None:
    bob = new_user(client, api_settings, "bob@example.com")
    assert_problem(client.post(WITHDRAW, headers={**alice, "Idempotency-Key": "same"},
                               json={"amount": INITIAL + 1}), 422, "insufficient_funds")
    # Nothing executed, so the key is still free: the corrected request goes through.
    assert client.post(WITHDRAW, headers={**alice, "Idempotency-Key": "same"},
                       json={"amount": 1}).status_code == 200
    assert client.post(WITHDRAW, headers={**bob, "Idempotency-Key": "same"},
                       json={"amount": 2}).status_code == 200
    assert client.get(ACCOUNT, headers=alice).json()["cash"] == INITIAL - 1
    assert client.get(ACCOUNT, headers=bob).json()["cash"] == INITIAL - 2
    assert_problem(client.post(DEPOSIT, headers={**alice, "Idempotency-Key": "x" * 129},
                               json={"amount": 1}), 422, "validation_error")


def test_concurrent_requests_with_one_idempotency_key_execute_once(
        client: TestClient, alice: dict[str, str]) -> None:
    headers = {**alice, "Idempotency-Key": "burst"}
    responses = concurrently(10, lambda _: client.post(DEPOSIT, headers=headers,
                                                       json={"amount": 7}))

    assert [r.status_code for r in responses] == [200] * 10
    assert len({r.json()["entry"]["id"] for r in responses}) == 1
    assert client.get(ACCOUNT, headers=alice).json()["cash"] == INITIAL + 7
