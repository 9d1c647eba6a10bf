"""Payments credit the portfolio chosen at prepare (issue 15), end to end through HTTP on SQLite
and on MariaDB: the app's real portone-server-sdk client talks to the fake PortOne
(tests/support/fake_portone.py), webhooks are signed with `standardwebhooks`.

A cash pack prepared with `X-Portfolio-Id` credits that portfolio's account, and its refund
takes back from there; without the header, the default portfolio. Another user's portfolio is a
404 that prepares nothing. A portfolio deleted before the payment is granted: the cash goes to
the default portfolio (docs/PAYMENTS.md, "Which portfolio a payment credits"). After every test
the money invariants hold (tests/support/invariants.py): each PAYMENT row is on its payment's
`account_id`, and each account's REFUND rows plus what it owes are what its payments took back.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import httpx
import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.migrate import alembic_config
from api.models import LedgerEntry, Payment, Portfolio
from api.settings import ApiSettings

# The fake PortOne, the settings that point the app at it, and the helpers that pay are the
# payment tests' own: one definition of how a test pays.
from tests.api.test_payments import (  # noqa: F401  (the fixtures portone, api_settings)
    COMPLETE,
    PACK,
    PREMIUM,
    api_settings,
    cash,
    complete,
    pay,
    portone,
    premium_until,
    send_webhook,
)
from tests.support.api import assert_problem, database, new_user
from tests.support.concurrency import concurrently
from tests.support.databases import (  # noqa: F401
    database_url_on_both_backends,
    empty_mysql_database,
    mysql_unreachable_reason,
)
from tests.support.fake_portone import FakePortOne

PORTFOLIOS = "/api/v1/portfolios"
PREPARE = "/api/v1/payments/portone/prepare"
PAYMENTS = "/api/v1/payments"
INITIAL = 10_000_000
CREDIT = PACK["credit"]


@pytest.fixture
def bob(client: TestClient, api_settings: ApiSettings) -> dict[str, str]:  # noqa: F811
    return new_user(client, api_settings, "bob@example.com")


def in_portfolio(user: dict[str, str], portfolio_id: int) -> dict[str, str]:
    return {**user, "X-Portfolio-Id": str(portfolio_id)}


def new_portfolio(client: TestClient, user: dict[str, str], name: str) -> int:
    response = client.post(PORTFOLIOS, headers=user, json={"name": name})
    assert response.status_code == 201, response.text
    portfolio_id: int = response.json()["id"]
    return portfolio_id


def prepare(client: TestClient, headers: dict[str, str], product_id: str = PACK["id"]) -> str:
    response = client.post(PREPARE, headers=headers, json={"product_id": product_id})
    assert response.status_code == 201, response.text
    payment_id: str = response.json()["data"]["payment_id"]
    return payment_id


def account_of(client: TestClient, portfolio_id: int) -> int:
    account_id = database(client).call(lambda session: session.scalar(
        select(Portfolio.account_id).where(Portfolio.id == portfolio_id)))
    assert account_id is not None
    return account_id


def stored(client: TestClient, payment_id: str) -> tuple[int, int]:
    """The payment's (payer, credited account) as stored."""
    def load(session: Session) -> tuple[int, int]:
        row = session.execute(select(Payment.user_id, Payment.account_id)
                              .where(Payment.payment_id == payment_id)).one()
        return row[0], row[1]
    return database(client).call(load)


def money_rows(client: TestClient, account_id: int) -> list[tuple[str, int, str | None]]:
    """An account's PAYMENT and REFUND ledger rows, oldest first, read from the database (a
    deleted portfolio's account answers 404 through the API)."""
    def load(session: Session) -> list[tuple[str, int, str | None]]:
        return [(row.type, row.amount, row.reference) for row in session.scalars(
            select(LedgerEntry).where(LedgerEntry.user_id == account_id,
                                      LedgerEntry.type.in_(("PAYMENT", "REFUND")))
            .order_by(LedgerEntry.id))]
    return database(client).call(load)


def user_id_of(client: TestClient, user: dict[str, str]) -> int:
    me = client.get("/api/v1/users/me", headers=user)
    assert me.status_code == 200, me.text
    user_id: int = me.json()["id"]
    return user_id


def payment_count(client: TestClient) -> int | None:
    return database(client).call(
        lambda session: session.scalar(select(func.count()).select_from(Payment)))


# --- which portfolio is credited ---------------------------------------------------------------


def test_a_pack_prepared_with_a_portfolio_credits_that_portfolio_and_not_the_default(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:  # noqa: F811
    growth = new_portfolio(client, alice, "Growth")
    payment_id = prepare(client, in_portfolio(alice, growth))
    pay(portone, payment_id)

    assert complete(client, alice, payment_id)["status"] == "PAID"

    assert cash(client, in_portfolio(alice, growth))["cash"] == INITIAL + CREDIT
    assert cash(client, alice)["cash"] == INITIAL
    assert money_rows(client, account_of(client, growth)) == [("PAYMENT", CREDIT, payment_id)]
    assert money_rows(client, user_id_of(client, alice)) == []
    # The payer is still the user: his payments list it, with or without the header.
    assert stored(client, payment_id) == (user_id_of(client, alice), account_of(client, growth))
    for headers in (alice, in_portfolio(alice, growth)):
        [listed] = client.get(PAYMENTS, headers=headers).json()["items"]
        assert (listed["payment_id"], listed["status"]) == (payment_id, "PAID")


def test_without_the_header_a_pack_credits_the_default_portfolio(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:  # noqa: F811
    growth = new_portfolio(client, alice, "Growth")
    payment_id = prepare(client, alice)
    pay(portone, payment_id)

    assert send_webhook(client, payment_id).json() == {"status": "processed",
                                                        "payment_status": "PAID"}

    me = user_id_of(client, alice)
    assert stored(client, payment_id) == (me, me)
    assert cash(client, alice)["cash"] == INITIAL + CREDIT
    assert cash(client, in_portfolio(alice, growth))["cash"] == INITIAL


def test_another_users_portfolio_at_prepare_is_404_and_prepares_nothing(
        client: TestClient, alice: dict[str, str], bob: dict[str, str]) -> None:
    bobs = new_portfolio(client, bob, "Bob's")
    gone = new_portfolio(client, alice, "Gone")
    assert client.delete(f"{PORTFOLIOS}/{gone}", headers=alice).status_code == 204

    for headers in (in_portfolio(alice, bobs), in_portfolio(alice, gone),
                    in_portfolio(alice, 2**63 - 1)):
        assert_problem(client.post(PREPARE, headers=headers, json={"product_id": PACK["id"]}),
                       404, "portfolio_not_found")
    assert_problem(client.post(PREPARE, headers=in_portfolio(alice, 0),
                               json={"product_id": PACK["id"]}), 422, "validation_error")

    assert payment_count(client) == 0
    assert client.get(PAYMENTS, headers=alice).json()["items"] == []
    assert client.get(PAYMENTS, headers=bob).json()["items"] == []


def test_premium_bought_from_a_portfolio_is_the_users_and_credits_no_cash(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:  # noqa: F811
    growth = new_portfolio(client, alice, "Growth")
    payment_id = prepare(client, in_portfolio(alice, growth), PREMIUM["id"])
    pay(portone, payment_id, product=PREMIUM)

    assert complete(client, alice, payment_id)["status"] == "PAID"

    assert premium_until(client, alice) is not None
    assert cash(client, in_portfolio(alice, growth))["cash"] == INITIAL
    assert cash(client, alice)["cash"] == INITIAL


# --- refunds -----------------------------------------------------------------------------------


def test_a_refund_takes_back_from_the_chosen_portfolio(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:  # noqa: F811
    growth = new_portfolio(client, alice, "Growth")
    in_growth = in_portfolio(alice, growth)
    payment_id = prepare(client, in_growth)
    pay(portone, payment_id)
    complete(client, alice, payment_id)

    pay(portone, payment_id, "PARTIAL_CANCELLED", cancelled=300)  # 30% refunded
    assert send_webhook(client, payment_id, "Transaction.PartialCancelled").json()[
        "payment_status"] == "PARTIAL_CANCELLED"

    assert money_rows(client, account_of(client, growth)) == [
        ("PAYMENT", CREDIT, payment_id), ("REFUND", -3_000_000, f"{payment_id}@300")]
    assert cash(client, in_growth)["cash"] == INITIAL + CREDIT - 3_000_000
    assert cash(client, alice)["cash"] == INITIAL
    assert money_rows(client, user_id_of(client, alice)) == []


def test_a_refund_of_a_portfolios_spent_cash_is_owed_by_that_portfolio_only(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:  # noqa: F811
    growth = new_portfolio(client, alice, "Growth")
    in_growth = in_portfolio(alice, growth)
    payment_id = prepare(client, in_growth)
    pay(portone, payment_id)
    complete(client, alice, payment_id)
    spent = client.post("/api/v1/account/withdraw", headers=in_growth,
                        json={"amount": INITIAL + CREDIT - 1_000_000})
    assert spent.status_code == 200, spent.text

    pay(portone, payment_id, "CANCELLED")
    assert complete(client, alice, payment_id)["status"] == "CANCELLED"

    summary = cash(client, in_growth)
    assert (summary["cash"], summary["clawback_due"]) == (0, CREDIT - 1_000_000)
    assert_problem(client.post("/api/v1/account/withdraw", headers=in_growth,
                               json={"amount": 1}), 409, "clawback_outstanding")
    # The default portfolio owes nothing and is free to withdraw.
    assert cash(client, alice)["clawback_due"] == 0
    response = client.post("/api/v1/account/withdraw", headers=alice, json={"amount": 1})
    assert response.status_code == 200, response.text


# --- a portfolio deleted between prepare and payment ------------------------------------------


def test_a_pack_whose_portfolio_was_deleted_before_payment_credits_the_default_portfolio(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:  # noqa: F811
    gone = new_portfolio(client, alice, "Gone")
    gone_account = account_of(client, gone)
    payment_id = prepare(client, in_portfolio(alice, gone))
    assert client.delete(f"{PORTFOLIOS}/{gone}", headers=alice).status_code == 204
    pay(portone, payment_id)

    assert complete(client, alice, payment_id)["status"] == "PAID"

    me = user_id_of(client, alice)
    assert stored(client, payment_id) == (me, me)  # the record says where the cash went
    assert cash(client, alice)["cash"] == INITIAL + CREDIT
    assert money_rows(client, gone_account) == []
    # Its refund then takes back from where it was credited.
    pay(portone, payment_id, "CANCELLED")
    assert complete(client, alice, payment_id)["status"] == "CANCELLED"
    assert money_rows(client, me) == [("PAYMENT", CREDIT, payment_id),
                                      ("REFUND", -CREDIT, f"{payment_id}@1000")]
    assert cash(client, alice)["cash"] == INITIAL


def test_a_portfolio_deleted_after_its_pack_was_credited_still_gives_the_refund_back(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:  # noqa: F811
    gone = new_portfolio(client, alice, "Gone")
    gone_account = account_of(client, gone)
    payment_id = prepare(client, in_portfolio(alice, gone))
    pay(portone, payment_id)
    complete(client, alice, payment_id)
    assert client.delete(f"{PORTFOLIOS}/{gone}", headers=alice).status_code == 204

    pay(portone, payment_id, "CANCELLED")
    assert complete(client, alice, payment_id)["status"] == "CANCELLED"

    # Taken from the deleted portfolio's account, where the cash stayed; the default one is
    # untouched.
    assert money_rows(client, gone_account) == [("PAYMENT", CREDIT, payment_id),
                                                ("REFUND", -CREDIT, f"{payment_id}@1000")]
    assert stored(client, payment_id)[1] == gone_account
    assert cash(client, alice)["cash"] == INITIAL
    assert money_rows(client, user_id_of(client, alice)) == []


# --- exactly once ------------------------------------------------------------------------------


def test_racing_webhooks_and_completes_credit_the_chosen_portfolio_once(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:  # noqa: F811
    growth = new_portfolio(client, alice, "Growth")
    payment_id = prepare(client, in_portfolio(alice, growth))
    pay(portone, payment_id)

    def arrive(index: int) -> int:
        if index % 3 == 2:
            response: httpx.Response = client.post(COMPLETE, headers=alice,
                                                   json={"payment_id": payment_id})
            return response.status_code
        # Deliveries of one webhook and of others about the same payment.
        webhook_id = "msg_dup" if index % 2 else f"msg_{index}"
        return send_webhook(client, payment_id, webhook_id=webhook_id).status_code

    assert set(concurrently(24, arrive)) == {200}

    assert money_rows(client, account_of(client, growth)) == [("PAYMENT", CREDIT, payment_id)]
    assert cash(client, in_portfolio(alice, growth))["cash"] == INITIAL + CREDIT
    assert cash(client, alice)["cash"] == INITIAL


def test_a_grant_racing_the_deletion_of_its_portfolio_credits_exactly_one_portfolio(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:  # noqa: F811
    """Whichever commits first, the cash lands once: in the portfolio (deleted afterwards,
    holding it) or in the default one (the deletion came first)."""
    gone = new_portfolio(client, alice, "Gone")
    gone_account = account_of(client, gone)
    payment_ids = [prepare(client, in_portfolio(alice, gone)) for _ in range(3)]
    for payment_id in payment_ids:
        pay(portone, payment_id)

    def arrive(index: int) -> int:
        if index == 0:
            deleted: httpx.Response = client.delete(f"{PORTFOLIOS}/{gone}", headers=alice)
            return deleted.status_code
        payment_id = payment_ids[index % 3]
        answer: httpx.Response = (
            client.post(COMPLETE, headers=alice, json={"payment_id": payment_id}) if index % 2
            else send_webhook(client, payment_id))
        return answer.status_code

    statuses = concurrently(10, arrive)

    assert statuses[0] == 204 and set(statuses[1:]) == {200}
    me = user_id_of(client, alice)
    for payment_id in payment_ids:
        account = stored(client, payment_id)[1]
        assert account in (me, gone_account)
        assert [row for row in money_rows(client, account) if row[2] == payment_id] == [
            ("PAYMENT", CREDIT, payment_id)]
    in_gone = sum(1 for row in money_rows(client, gone_account) if row[0] == "PAYMENT")
    in_default = sum(1 for row in money_rows(client, me) if row[0] == "PAYMENT")
    assert in_gone + in_default == 3
    assert cash(client, alice)["cash"] == INITIAL + in_default * CREDIT


# --- migration 0016 ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_0016_gives_every_existing_payment_its_payers_account(backend: str,
                                                              tmp_path: Path) -> None:
    if backend == "mariadb" and (reason := mysql_unreachable_reason()) is not None:
        pytest.skip(f"SKIPPED MySQL-only check: {reason}")
    with (empty_mysql_database() if backend == "mariadb"
          else nullcontext(f"sqlite:///{tmp_path / 'old.db'}")) as url:
        config = alembic_config(url, configure_logging=False)
        command.upgrade(config, "0015")
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO users (id, email, password_hash, role, created_at) VALUES "
                "(3, 'a@example.com', 'x', 'user', CURRENT_TIMESTAMP), "
                "(8, 'b@example.com', 'x', 'user', CURRENT_TIMESTAMP)"))
            for number, user_id in enumerate((3, 8, 3)):
                connection.execute(text(
                    "INSERT INTO payments (payment_id, user_id, product_id, kind, order_name, "
                    "amount, currency, credit, premium_days, status, cancelled_amount, "
                    "clawed_back, premium_revoked_s, created_at, updated_at) VALUES (:id, "
                    ":user_id, 'cash-10m', 'CASH', 'pack', 1000, 'KRW', 10000000, 0, 'PAID', "
                    "0, 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                    {"id": f"pay_{number}", "user_id": user_id})
        command.upgrade(config, "0016")
        with engine.begin() as connection:
            rows = connection.execute(text(
                "SELECT payment_id, user_id, account_id FROM payments ORDER BY id")).all()
            # NOT NULL from now on.
            with pytest.raises(IntegrityError):
                with connection.begin_nested():
                    connection.execute(text("UPDATE payments SET account_id = NULL"))
        engine.dispose()
        assert [tuple(row) for row in rows] == [("pay_0", 3, 3), ("pay_1", 8, 8),
                                                ("pay_2", 3, 3)]
        command.downgrade(config, "0015")
        command.upgrade(config, "head")
