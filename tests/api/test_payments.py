"""PortOne payments end to end through HTTP: the app's real portone-server-sdk client talks to a
fake PortOne over real HTTP (tests/support/fake_portone.py), and webhooks are signed with the
`standardwebhooks` package, independently of our code and of the SDK.

After every test the money invariants hold (tests/support/invariants.py), payments included:
every PAYMENT ledger row credits one granted payment in full, and what refunds took back is
what the payments record.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr, ValidationError
from sqlalchemy import func, select

from api.models import HandledWebhook, Payment
from api.settings import ApiSettings, Environment
from tests.support.api import assert_problem, database, new_user
from tests.support.concurrency import concurrently
from tests.support.fake_portone import (
    FakePortOne,
    Mode,
    signed_webhook,
    webhook_body,
    webhook_secret,
)
from tests.support.quotes import make_quote, put

PREPARE = "/api/v1/payments/portone/prepare"
COMPLETE = "/api/v1/payments/portone/complete"
WEBHOOK = "/api/v1/payments/portone/webhook"
PAYMENTS = "/api/v1/payments"
ACCOUNT = "/api/v1/account"
INITIAL = 10_000_000
PACK: dict[str, Any] = {"id": "cash-10m", "name": "StocKing 가상머니 1,000만원",
                        "price": 1_000, "credit": 10_000_000}
PREMIUM: dict[str, Any] = {"id": "premium-30d", "name": "StocKing 프리미엄 30일",
                           "price": 9_900, "days": 30}
WEBHOOK_SECRET = webhook_secret()


@pytest.fixture
def portone() -> Iterator[FakePortOne]:
    with FakePortOne(secret="test-portone-api-secret") as fake:
        yield fake


@pytest.fixture
def api_settings(api_settings: ApiSettings, portone: FakePortOne) -> ApiSettings:
    """The API tests' settings, pointed at the fake PortOne."""
    return api_settings.model_copy(update={
        "portone_store_id": portone.store_id,
        "portone_channel_key": portone.channel_key,
        "portone_v2_api_secret": SecretStr(portone.secret),
        "portone_webhook_secret": SecretStr(WEBHOOK_SECRET),
        "portone_api_base_url": portone.base_url,
        "portone_timeout_s": 2.0,
    })


@pytest.fixture
def bob(client: TestClient, api_settings: ApiSettings) -> dict[str, str]:
    return new_user(client, api_settings, "bob@example.com")


# --- helpers -----------------------------------------------------------------------------------


def prepare(client: TestClient, user: dict[str, str], product_id: str = PACK["id"]) -> str:
    response = client.post(PREPARE, headers=user, json={"product_id": product_id})
    assert response.status_code == 201, response.text
    payment_id: str = response.json()["data"]["payment_id"]
    return payment_id


def pay(portone: FakePortOne, payment_id: str, status: str = "PAID", *,
        product: dict[str, Any] = PACK, **changes: Any) -> None:
    """Make PortOne report the payment (as the prepared product unless `changes` say else)."""
    terms = {"amount": product["price"], "order_name": product["name"], "currency": "KRW"}
    portone.set_payment(payment_id, status=status, **{**terms, **changes})


def complete(client: TestClient, user: dict[str, str], payment_id: str) -> dict[str, Any]:
    response = client.post(COMPLETE, headers=user, json={"payment_id": payment_id})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def send_webhook(client: TestClient, payment_id: str, type: str = "Transaction.Paid", *,
                 webhook_id: str | None = None, secret: str = WEBHOOK_SECRET,
                 at: datetime | None = None, store_id: str | None = None) -> httpx.Response:
    body = (webhook_body(type, payment_id, store_id) if store_id
            else webhook_body(type, payment_id))
    headers = signed_webhook(secret, body, msg_id=webhook_id or f"msg_{uuid.uuid4().hex}",
                             timestamp=at or datetime.now(UTC))
    response: httpx.Response = client.post(
        WEBHOOK, content=body, headers={**headers, "content-type": "application/json"})
    return response


def cash(client: TestClient, user: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = client.get(ACCOUNT, headers=user).json()
    return body


def ledger(client: TestClient, user: dict[str, str]) -> list[tuple[str, int, str | None]]:
    rows = client.get("/api/v1/transactions", headers=user).json()["items"]
    return [(row["type"], row["amount"], row["reference"]) for row in reversed(rows)]


def payment_credits(client: TestClient, user: dict[str, str]) -> list[tuple[str, int, str | None]]:
    return [row for row in ledger(client, user) if row[0] == "PAYMENT"]


def synced(client: TestClient, status: str) -> float:
    """stocking_payment_syncs_total{status} as /metrics shows it (0 before the first)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if (sample.name == "stocking_payment_syncs_total"
                    and sample.labels.get("status") == status):
                return float(sample.value)
    return 0.0


def stored(client: TestClient, payment_id: str) -> Payment:
    def load(session: Any) -> Payment:
        payment = session.query(Payment).filter_by(payment_id=payment_id).one()
        session.expunge(payment)
        return payment  # type: ignore[no-any-return]
    return database(client).call(load)


# --- catalog and prepare -----------------------------------------------------------------------


def test_the_catalog_lists_products_at_the_servers_prices(client: TestClient,
                                                           alice: dict[str, str]) -> None:
    items = client.get(f"{PAYMENTS}/products", headers=alice).json()["items"]
    by_id = {item["id"]: item for item in items}
    assert by_id[PACK["id"]] == {"id": PACK["id"], "kind": "CASH", "name": PACK["name"],
                                 "price": 1_000, "currency": "KRW", "credit": 10_000_000,
                                 "premium_days": 0}
    assert by_id[PREMIUM["id"]]["kind"] == "PREMIUM"
    assert by_id[PREMIUM["id"]]["premium_days"] == 30


def test_prepare_answers_what_the_browser_sdk_needs(client: TestClient, alice: dict[str, str],
                                                    portone: FakePortOne) -> None:
    response = client.post(PREPARE, headers=alice, json={"product_id": PACK["id"]})

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data.pop("payment_id").startswith("pay_")
    assert data == {"store_id": portone.store_id, "channel_key": portone.channel_key,
                    "order_name": PACK["name"], "amount": 1_000, "currency": "KRW"}
    [listed] = client.get(PAYMENTS, headers=alice).json()["items"]
    assert (listed["status"], listed["product_id"], listed["paid_at"]) == (
        "PREPARED", PACK["id"], None)
    assert portone.requests == []  # preparing does not ask PortOne


def test_prepare_accepts_the_seed_body_only_for_an_exact_catalog_product(
        client: TestClient, alice: dict[str, str]) -> None:
    exact = {"amount": 1_000, "order_name": PACK["name"], "currency": "KRW"}
    response = client.post(PREPARE, headers=alice, json=exact)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["amount"] == 1_000

    for wrong in ({**exact, "amount": 1}, {**exact, "order_name": "cheap"},
                  {**exact, "currency": "USD"}):
        assert_problem(client.post(PREPARE, headers=alice, json=wrong), 422, "unknown_product")
    assert_problem(client.post(PREPARE, headers=alice, json={"product_id": "free-money"}),
                   422, "unknown_product")
    for malformed in ({}, {"product_id": PACK["id"], "amount": 1_000}, {"amount": 1_000},
                      {"product_id": PACK["id"], "credit": 10**12}):
        assert_problem(client.post(PREPARE, headers=alice, json=malformed), 422,
                       "validation_error")
    assert_problem(client.post(PREPARE, json={"product_id": PACK["id"]}), 401,
                   "not_authenticated")
    assert len(client.get(PAYMENTS, headers=alice).json()["items"]) == 1


# --- complete ----------------------------------------------------------------------------------


def test_complete_credits_a_paid_payment_exactly_once(client: TestClient, alice: dict[str, str],
                                                      portone: FakePortOne) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id)

    first = complete(client, alice, payment_id)
    again = complete(client, alice, payment_id)

    assert (first["status"], first["portone_status"]) == ("PAID", "PAID")
    assert first["paid_at"] is not None and again == first
    assert payment_credits(client, alice) == [("PAYMENT", 10_000_000, payment_id)]
    assert cash(client, alice)["cash"] == INITIAL + 10_000_000
    # Each complete asked PortOne, with our secret and store.
    asked = portone.requests_for(payment_id)
    assert len(asked) == 2
    assert asked[0].headers["authorization"] == f"PortOne {portone.secret}"
    assert asked[0].query == {"storeId": portone.store_id}


def test_a_payment_still_pending_at_portone_stays_prepared_until_paid(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:
    payment_id = prepare(client, alice)
    assert_problem(client.post(COMPLETE, headers=alice, json={"payment_id": payment_id}),
                   409, "payment_not_started")  # PortOne has never heard of it
    for pending in ("READY", "PAY_PENDING", "VIRTUAL_ACCOUNT_ISSUED"):
        pay(portone, payment_id, pending)
        data = complete(client, alice, payment_id)
        assert (data["status"], data["portone_status"]) == ("PREPARED", pending)
    assert payment_credits(client, alice) == []

    pay(portone, payment_id)
    assert complete(client, alice, payment_id)["status"] == "PAID"
    assert cash(client, alice)["cash"] == INITIAL + 10_000_000


def test_a_failed_payment_is_recorded_and_a_later_success_still_credits(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id, "FAILED")
    assert complete(client, alice, payment_id)["status"] == "FAILED"
    assert payment_credits(client, alice) == []

    pay(portone, payment_id)  # the buyer tried again with the same payment id
    assert complete(client, alice, payment_id)["status"] == "PAID"
    assert payment_credits(client, alice) == [("PAYMENT", 10_000_000, payment_id)]


def test_someone_elses_payment_is_not_found(client: TestClient, alice: dict[str, str],
                                            bob: dict[str, str], portone: FakePortOne) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id)

    assert_problem(client.post(COMPLETE, headers=bob, json={"payment_id": payment_id}),
                   404, "payment_not_found")
    assert_problem(client.get(f"{PAYMENTS}/{payment_id}", headers=bob), 404,
                   "payment_not_found")
    assert_problem(client.post(COMPLETE, headers=bob, json={"payment_id": "pay_nope"}),
                   404, "payment_not_found")
    assert portone.requests == []  # refused before PortOne was asked
    assert payment_credits(client, bob) == payment_credits(client, alice) == []
    assert client.get(PAYMENTS, headers=bob).json()["items"] == []


@pytest.mark.parametrize("change", [{"amount": 100}, {"currency": "USD"},
                                    {"order_name": "something else"}],
                         ids=["amount", "currency", "order_name"])
def test_a_payment_that_differs_from_the_prepared_one_credits_nothing(
        client: TestClient, alice: dict[str, str], portone: FakePortOne,
        change: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id, **change)
    alerts = synced(client, "MISMATCH")

    data = complete(client, alice, payment_id)

    assert data["status"] == "MISMATCH"
    assert synced(client, "MISMATCH") == alerts + 1
    assert payment_credits(client, alice) == []
    assert cash(client, alice)["cash"] == INITIAL
    assert stored(client, payment_id).mismatch is not None
    assert any(record.levelname == "ERROR" and "ALERT" in record.getMessage()
               and payment_id in record.getMessage() for record in caplog.records)
    # Final: PortOne "fixing" the answer later does not credit a payment already judged.
    pay(portone, payment_id)
    assert complete(client, alice, payment_id)["status"] == "MISMATCH"
    assert send_webhook(client, payment_id).json()["payment_status"] == "MISMATCH"
    assert payment_credits(client, alice) == []


@pytest.mark.parametrize("mode", [Mode.UNAVAILABLE, Mode.SERVER_ERROR, Mode.GARBAGE,
                                  Mode.INCOMPLETE, Mode.DISCONNECT, Mode.STALL])
def test_portone_unreachable_or_unreadable_answers_503_and_credits_nothing_until_it_is_back(
        client: TestClient, alice: dict[str, str], portone: FakePortOne, mode: Mode) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id)
    portone.mode = mode

    try:
        assert_problem(client.post(COMPLETE, headers=alice, json={"payment_id": payment_id}),
                       503, "portone_unavailable")
        assert_problem(send_webhook(client, payment_id, webhook_id="msg_retried"), 503,
                       "portone_unavailable")
    finally:
        portone.mode = Mode.NORMAL
        portone.release_stalled()
    assert payment_credits(client, alice) == []
    assert stored(client, payment_id).status == "PREPARED"

    # PortOne is back: its retry of the same webhook is processed (a failed delivery is not
    # remembered as handled), and the complete after it changes nothing more.
    assert send_webhook(client, payment_id, webhook_id="msg_retried").json() == {
        "status": "processed", "payment_status": "PAID"}
    assert complete(client, alice, payment_id)["status"] == "PAID"
    assert payment_credits(client, alice) == [("PAYMENT", 10_000_000, payment_id)]


def test_portone_stopped_then_started_again(client: TestClient, alice: dict[str, str],
                                            portone: FakePortOne) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id)
    portone.stop()
    assert_problem(client.post(COMPLETE, headers=alice, json={"payment_id": payment_id}),
                   503, "portone_unavailable")
    assert payment_credits(client, alice) == []

    portone.start()
    assert complete(client, alice, payment_id)["status"] == "PAID"
    assert payment_credits(client, alice) == [("PAYMENT", 10_000_000, payment_id)]


# --- webhook -----------------------------------------------------------------------------------


@pytest.mark.parametrize("webhook_first", [True, False],
                         ids=["webhook then complete", "complete then webhook"])
def test_webhook_and_complete_credit_once_in_either_order(
        client: TestClient, alice: dict[str, str], portone: FakePortOne,
        webhook_first: bool) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id)

    if webhook_first:
        webhook = send_webhook(client, payment_id)
        paid = complete(client, alice, payment_id)
    else:
        paid = complete(client, alice, payment_id)
        webhook = send_webhook(client, payment_id)

    assert webhook.status_code == 200, webhook.text
    assert webhook.json() == {"status": "processed", "payment_status": "PAID"}
    assert paid["status"] == "PAID"
    assert payment_credits(client, alice) == [("PAYMENT", 10_000_000, payment_id)]
    assert cash(client, alice)["cash"] == INITIAL + 10_000_000


def test_a_webhook_id_acts_once_ever(client: TestClient, alice: dict[str, str],
                                     portone: FakePortOne) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id)
    assert send_webhook(client, payment_id, webhook_id="msg_1").json()["status"] == "processed"
    asked = len(portone.requests)

    assert send_webhook(client, payment_id, webhook_id="msg_1").json() == {
        "status": "duplicate", "payment_status": None}
    assert len(portone.requests) == asked  # a duplicate does not even ask PortOne


@pytest.mark.parametrize(("case", "reason"), [
    ("wrong secret", "NO_MATCHING_SIGNATURE"),
    ("tampered body", "NO_MATCHING_SIGNATURE"),
    ("stale timestamp", "TIMESTAMP_TOO_OLD"),
    ("future timestamp", "TIMESTAMP_TOO_NEW"),
    ("missing headers", "MISSING_REQUIRED_HEADERS"),
])
def test_a_webhook_that_fails_verification_is_400_and_changes_nothing(
        client: TestClient, alice: dict[str, str], portone: FakePortOne, case: str,
        reason: str) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id)
    body = webhook_body("Transaction.Paid", payment_id, portone.store_id)
    now = datetime.now(UTC)
    secret = webhook_secret() if case == "wrong secret" else WEBHOOK_SECRET
    at = {"stale timestamp": now - timedelta(minutes=6),
          "future timestamp": now + timedelta(minutes=6)}.get(case, now)
    headers = signed_webhook(secret, body, msg_id="msg_bad", timestamp=at)
    if case == "tampered body":
        body = body.replace(payment_id.encode(), prepare(client, alice).encode())
    if case == "missing headers":
        del headers["webhook-signature"]

    problem = assert_problem(client.post(WEBHOOK, content=body, headers=headers), 400,
                             "invalid_webhook")

    assert problem["reason"] == reason
    assert portone.requests == []
    assert payment_credits(client, alice) == []
    # Not remembered: the genuine delivery with that id still works.
    assert send_webhook(client, payment_id, webhook_id="msg_bad").json()["status"] == (
        "processed")


def test_a_signed_webhook_whose_body_is_not_a_webhook_is_400(client: TestClient) -> None:
    for body in (b"not json", b"[1, 2]"):
        headers = signed_webhook(WEBHOOK_SECRET, body, msg_id=f"msg_{uuid.uuid4().hex}",
                                 timestamp=datetime.now(UTC))
        problem = assert_problem(client.post(WEBHOOK, content=body, headers=headers), 400,
                                 "invalid_webhook")
        assert problem["reason"] == "UNREADABLE_BODY"


@pytest.mark.parametrize(("webhook_id", "named_payment", "reason"), [
    ("w" * 129, None, "WEBHOOK_ID_TOO_LONG"),
    ("w" * 129, "pay_not_ours", "WEBHOOK_ID_TOO_LONG"),
    (None, "p" * 65, "PAYMENT_ID_TOO_LONG"),
])
def test_a_signed_webhook_with_an_id_longer_than_we_store_is_400_and_records_nothing(
        client: TestClient, alice: dict[str, str], portone: FakePortOne,
        webhook_id: str | None, named_payment: str | None, reason: str) -> None:
    """Signed and timely, but naming ids longer than the columns that record them (MariaDB
    refused the row: a 500): refused before anything is looked up or written."""
    payment_id = prepare(client, alice)
    pay(portone, payment_id)

    answer = send_webhook(client, named_payment or payment_id, webhook_id=webhook_id)

    assert assert_problem(answer, 400, "invalid_webhook")["reason"] == reason
    assert portone.requests == []
    assert payment_credits(client, alice) == []
    assert database(client).call(lambda session: session.scalar(
        select(func.count()).select_from(HandledWebhook))) == 0
    # The longest ids we store are accepted.
    assert send_webhook(client, payment_id, webhook_id="w" * 128).json()["status"] == (
        "processed")
    assert send_webhook(client, "p" * 64).json()["status"] == "ignored"


def test_webhooks_not_about_our_payments_are_acknowledged_and_ignored(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id)
    unknown_type = send_webhook(client, payment_id, "BillingKey.Issued")
    unknown_payment = send_webhook(client, "pay_not_ours")
    other_store = send_webhook(client, payment_id, store_id="store-someone-else")

    for response in (unknown_type, unknown_payment, other_store):
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ignored"
    assert portone.requests == []
    assert payment_credits(client, alice) == []


def test_twenty_duplicate_webhooks_and_concurrent_completes_credit_once(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id)

    def arrive(index: int) -> int:
        if index % 3 == 2:
            response: httpx.Response = client.post(COMPLETE, headers=alice,
                                                   json={"payment_id": payment_id})
            return response.status_code
        return send_webhook(client, payment_id, webhook_id="msg_dup").status_code

    statuses = concurrently(30, arrive)

    assert set(statuses) == {200}
    assert payment_credits(client, alice) == [("PAYMENT", 10_000_000, payment_id)]
    assert cash(client, alice)["cash"] == INITIAL + 10_000_000
    assert stored(client, payment_id).status == "PAID"


# --- refunds (cancellations) -------------------------------------------------------------------


def test_a_partial_refund_takes_back_its_share_once(client: TestClient, alice: dict[str, str],
                                                    portone: FakePortOne) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id)
    complete(client, alice, payment_id)

    pay(portone, payment_id, "PARTIAL_CANCELLED", cancelled=300)  # 30% refunded
    assert send_webhook(client, payment_id, "Transaction.PartialCancelled").json()[
        "payment_status"] == "PARTIAL_CANCELLED"
    data = complete(client, alice, payment_id)  # the same refund seen again

    assert (data["cancelled_amount"], data["clawed_back"]) == (300, 3_000_000)
    assert ledger(client, alice)[-1] == ("REFUND", -3_000_000, f"{payment_id}@300")
    assert cash(client, alice)["cash"] == INITIAL + 7_000_000

    pay(portone, payment_id, "CANCELLED")  # then the rest
    assert complete(client, alice, payment_id)["status"] == "CANCELLED"
    assert ledger(client, alice)[-1] == ("REFUND", -7_000_000, f"{payment_id}@1000")
    assert cash(client, alice)["cash"] == INITIAL


def test_a_refund_of_spent_cash_is_owed_blocks_withdrawals_and_is_paid_from_later_credits(
        client: TestClient, alice: dict[str, str], portone: FakePortOne,
        store: redis.Redis) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id)
    complete(client, alice, payment_id)
    # Spend most of it: 200 shares at 70,000 = 14,000,000 (+ 2,100 commission).
    put(store, make_quote("A005930", price=70_000, base=70_000))
    response = client.post("/api/v1/orders", headers=alice, json={
        "code": "005930", "side": "BUY", "type": "MARKET", "quantity": 200})
    assert response.status_code == 201, response.text
    available = INITIAL + 10_000_000 - 14_002_100

    pay(portone, payment_id, "CANCELLED")
    assert complete(client, alice, payment_id)["status"] == "CANCELLED"

    summary = cash(client, alice)
    assert (summary["cash"], summary["clawback_due"]) == (0, 10_000_000 - available)
    assert ledger(client, alice)[-1] == ("REFUND", -available, f"{payment_id}@1000")
    assert_problem(client.post(f"{ACCOUNT}/withdraw", headers=alice, json={"amount": 1}),
                   409, "clawback_outstanding")

    # A sale pays the debt first: 50 shares at 70,000 = 3,500,000 - 525 fee - 7,000 tax.
    response = client.post("/api/v1/orders", headers=alice, json={
        "code": "005930", "side": "SELL", "type": "MARKET", "quantity": 50})
    assert response.status_code == 201, response.text
    owed = 10_000_000 - available
    proceeds = 3_500_000 - 525 - 7_000
    summary = cash(client, alice)
    assert (summary["cash"], summary["clawback_due"]) == (0, owed - proceeds)
    assert ledger(client, alice)[-1] == ("REFUND", -proceeds, None)

    # A deposit pays the rest, and withdrawals work again.
    deposit = client.post(f"{ACCOUNT}/deposit", headers=alice, json={"amount": 5_000_000})
    assert deposit.status_code == 200, deposit.text
    assert deposit.json()["account"]["clawback_due"] == 0
    assert cash(client, alice)["cash"] == 5_000_000 - (owed - proceeds)
    response = client.post(f"{ACCOUNT}/withdraw", headers=alice, json={"amount": 1})
    assert response.status_code == 200, response.text


def test_a_payment_cancelled_before_it_was_seen_paid_grants_nothing(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:
    payment_id = prepare(client, alice)
    pay(portone, payment_id, "CANCELLED")

    assert complete(client, alice, payment_id)["status"] == "CANCELLED"
    pay(portone, payment_id)  # an older answer arriving late cannot revive it
    assert complete(client, alice, payment_id)["status"] == "CANCELLED"
    assert [row for row in ledger(client, alice) if row[0] in ("PAYMENT", "REFUND")] == []


# --- premium -----------------------------------------------------------------------------------


def premium_until(client: TestClient, user: dict[str, str]) -> datetime | None:
    me = client.get("/api/v1/users/me", headers=user).json()
    value = me["premium_until"]
    assert me["premium"] == (value is not None and datetime.fromisoformat(value)
                             > datetime.now(UTC))
    return None if value is None else datetime.fromisoformat(value)


def test_premium_periods_add_up_and_a_refund_takes_its_days_back(
        client: TestClient, alice: dict[str, str], portone: FakePortOne) -> None:
    assert premium_until(client, alice) is None
    first, second = prepare(client, alice, PREMIUM["id"]), prepare(client, alice, PREMIUM["id"])
    for payment_id in (first, second):
        pay(portone, payment_id, product=PREMIUM)

    start = datetime.now(UTC)
    complete(client, alice, first)
    granted_by = datetime.now(UTC)
    one = premium_until(client, alice)
    complete(client, alice, second)
    complete(client, alice, second)  # once only
    two = premium_until(client, alice)

    assert one is not None and two is not None
    # 30 days from the grant, made during `complete` (however long a loaded machine took);
    # the time is stored to the second.
    second_ = timedelta(seconds=1)
    assert start - second_ <= one - timedelta(days=30) <= granted_by + second_
    assert two - one == timedelta(days=30)
    assert cash(client, alice)["cash"] == INITIAL  # premium credits no cash

    pay(portone, second, "CANCELLED", product=PREMIUM)
    complete(client, alice, second)
    assert premium_until(client, alice) == one


# --- settings ----------------------------------------------------------------------------------


def test_production_refuses_to_start_without_real_portone_settings() -> None:
    production: dict[str, Any] = {"stocking_env": Environment.PRODUCTION,
                  "jwt_secret_key": SecretStr("k" * 40),
                  "database_url": "mysql+pymysql://app@db/stocking"}
    with pytest.raises(ValidationError, match="PORTONE_STORE_ID, PORTONE_CHANNEL_KEY, "
                                              "PORTONE_V2_API_SECRET, PORTONE_WEBHOOK_SECRET"):
        ApiSettings(**production)
    real: dict[str, Any] = {"portone_store_id": "store-1", "portone_channel_key": "channel-key-1",
            "portone_v2_api_secret": SecretStr("s" * 40),
            "portone_webhook_secret": SecretStr(webhook_secret())}
    assert ApiSettings(**production, **real).portone_store_id == "store-1"
    with pytest.raises(ValidationError, match="PORTONE_V2_API_SECRET"):
        ApiSettings(**production, **{**real, "portone_v2_api_secret": SecretStr("")})
    with pytest.raises(ValidationError, match="whsec_"):
        ApiSettings(portone_webhook_secret=SecretStr("plain-text-secret"))
