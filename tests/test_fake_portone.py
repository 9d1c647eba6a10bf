"""The fake PortOne server, checked against the real portone-server-sdk: each status parses into
its class, each failure mode raises what the module docstring of tests/support/fake_portone.py
says, and webhooks signed by the independent helper pass the SDK's verify."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from portone_server_sdk import PaymentClient
from portone_server_sdk import webhook as portone_webhook
from portone_server_sdk.errors import (
    PaymentNotFoundError,
    UnauthorizedError,
    UnknownError,
)
from portone_server_sdk.payment import (
    CancelledPayment,
    FailedPayment,
    GetPaymentError,
    PaidPayment,
    PartialCancelledPayment,
    PayPendingPayment,
    ReadyPayment,
    SucceededPaymentCancellation,
    VirtualAccountIssuedPayment,
)
from standardwebhooks import Webhook

from tests.support.concurrency import concurrently
from tests.support.env import scaled
from tests.support.fake_portone import (
    DEFAULT_STORE_ID,
    FakePortOne,
    Mode,
    PaymentStatus,
    cancellation_id_for,
    signed_webhook,
    transaction_id_for,
    webhook_body,
    webhook_secret,
)

SECRET = "fake-portone-selfcheck-secret"
ORDER = "StocKing 모의투자 캐시 10,000"


@pytest.fixture
def portone() -> Iterator[FakePortOne]:
    with FakePortOne(secret=SECRET) as fake:
        yield fake


def sdk(
    portone: FakePortOne, *, secret: str = SECRET, store_id: str | None = None
) -> PaymentClient:
    # Built inside each async test: the SDK's httpx client belongs to the loop that first uses it.
    return PaymentClient(secret=secret, base_url=portone.base_url, store_id=store_id)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (PaymentStatus.READY, ReadyPayment),
        (PaymentStatus.PAY_PENDING, PayPendingPayment),
        (PaymentStatus.VIRTUAL_ACCOUNT_ISSUED, VirtualAccountIssuedPayment),
        (PaymentStatus.PAID, PaidPayment),
        (PaymentStatus.FAILED, FailedPayment),
        (PaymentStatus.PARTIAL_CANCELLED, PartialCancelledPayment),
        (PaymentStatus.CANCELLED, CancelledPayment),
    ],
)
async def test_each_status_parses_into_its_sdk_class(
    portone: FakePortOne, status: PaymentStatus, expected: type
) -> None:
    payment_id = f"pay_{status.lower()}_0001"
    portone.set_payment(
        payment_id, status=status, amount=9900, order_name=ORDER, custom_data='{"pack":"10k"}'
    )

    payment = await sdk(portone, store_id=DEFAULT_STORE_ID).get_payment_async(
        payment_id=payment_id
    )

    assert type(payment) is expected
    assert not isinstance(payment, dict)
    assert payment.id == payment_id
    assert payment.transaction_id == transaction_id_for(payment_id)
    assert payment.store_id == DEFAULT_STORE_ID
    assert payment.amount.total == 9900
    assert payment.currency == "KRW"
    assert payment.order_name == ORDER
    assert payment.custom_data == '{"pack":"10k"}'
    assert payment.channel is not None and payment.channel.type == "TEST"
    assert payment.channel.key == portone.channel_key
    [request] = portone.requests_for(payment_id)
    assert request.method == "GET"
    assert request.route == f"/payments/{payment_id}"
    assert request.query == {"storeId": DEFAULT_STORE_ID}
    assert request.headers["authorization"] == f"PortOne {SECRET}"


async def test_amounts_of_paid_and_cancelled_payments(portone: FakePortOne) -> None:
    portone.set_payment("pay_full", status="PAID", amount=9900, order_name=ORDER)
    portone.set_payment("pay_part", status="PARTIAL_CANCELLED", amount=9900, order_name=ORDER,
                        cancelled=4000)
    portone.set_payment("pay_gone", status="CANCELLED", amount=9900, order_name=ORDER)
    portone.set_payment("pay_fail", status="FAILED", amount=9900, order_name=ORDER)
    client = sdk(portone)

    paid = await client.get_payment_async(payment_id="pay_full")
    part = await client.get_payment_async(payment_id="pay_part")
    gone = await client.get_payment_async(payment_id="pay_gone")
    fail = await client.get_payment_async(payment_id="pay_fail")

    assert isinstance(paid, PaidPayment)
    assert (paid.amount.paid, paid.amount.cancelled, paid.disputes) == (9900, 0, [])
    assert isinstance(part, PartialCancelledPayment)
    assert (part.amount.paid, part.amount.cancelled) == (9900, 4000)
    [cancellation] = part.cancellations
    assert isinstance(cancellation, SucceededPaymentCancellation)
    assert cancellation.total_amount == 4000
    assert cancellation.id == cancellation_id_for("pay_part")
    assert isinstance(gone, CancelledPayment)
    assert gone.amount.cancelled == 9900
    assert isinstance(fail, FailedPayment)
    assert fail.amount.paid == 0
    assert fail.failure.reason


async def test_payment_state_can_change_between_calls(portone: FakePortOne) -> None:
    portone.set_payment("pay_va", status="VIRTUAL_ACCOUNT_ISSUED", amount=50000, order_name=ORDER)
    client = sdk(portone)
    assert isinstance(await client.get_payment_async(payment_id="pay_va"),
                      VirtualAccountIssuedPayment)

    portone.set_payment("pay_va", status="PAID", amount=50000, order_name=ORDER)
    assert isinstance(await client.get_payment_async(payment_id="pay_va"), PaidPayment)

    portone.remove_payment("pay_va")
    with pytest.raises(PaymentNotFoundError):
        await client.get_payment_async(payment_id="pay_va")
    assert len(portone.requests_for("pay_va")) == 3


def test_inconsistent_state_is_refused_when_set(portone: FakePortOne) -> None:
    with pytest.raises(ValueError):
        portone.set_payment("p", status="PAID", amount=1000, order_name=ORDER, cancelled=10)
    with pytest.raises(ValueError):
        portone.set_payment("p", status="PARTIAL_CANCELLED", amount=1000, order_name=ORDER,
                            cancelled=1000)
    with pytest.raises(ValueError):
        portone.set_payment("p", status="SETTLED", amount=1000, order_name=ORDER)


async def test_wrong_secret_is_unauthorized(portone: FakePortOne) -> None:
    portone.set_payment("pay_1", status="PAID", amount=9900, order_name=ORDER)

    with pytest.raises(UnauthorizedError) as raised:
        await sdk(portone, secret="not-the-secret").get_payment_async(payment_id="pay_1")

    assert isinstance(raised.value, GetPaymentError)
    assert raised.value.message
    async with httpx.AsyncClient() as raw:
        answer = await raw.get(f"{portone.base_url}/payments/pay_1")
    assert answer.status_code == 401
    assert answer.json()["type"] == "UNAUTHORIZED"


async def test_unknown_id_and_other_store_are_not_found(portone: FakePortOne) -> None:
    portone.set_payment("pay_1", status="PAID", amount=9900, order_name=ORDER)

    with pytest.raises(PaymentNotFoundError):
        await sdk(portone).get_payment_async(payment_id="pay_missing")
    with pytest.raises(PaymentNotFoundError):
        await sdk(portone, store_id="store-someone-else").get_payment_async(payment_id="pay_1")


async def test_ids_are_percent_encoded_on_the_wire(portone: FakePortOne) -> None:
    odd_id = "pay/with space"
    portone.set_payment(odd_id, status="PAID", amount=100, order_name=ORDER)

    payment = await sdk(portone).get_payment_async(payment_id=odd_id)

    assert payment.id == odd_id  # type: ignore[union-attr]
    [request] = portone.requests_for(odd_id)
    assert request.path == "/payments/pay%2Fwith%20space"


async def test_unavailable_answers_503_which_the_sdk_reports_as_a_value_error(
    portone: FakePortOne,
) -> None:
    portone.set_payment("pay_1", status="PAID", amount=9900, order_name=ORDER)
    portone.down = True

    # Not a GetPaymentError: the SDK decodes the HTML error page as JSON before mapping errors.
    with pytest.raises(json.JSONDecodeError):
        await sdk(portone).get_payment_async(payment_id="pay_1")

    portone.down = False
    assert isinstance(await sdk(portone).get_payment_async(payment_id="pay_1"), PaidPayment)
    assert len(portone.requests_for("pay_1")) == 2


async def test_a_json_server_error_is_unknown_error(portone: FakePortOne) -> None:
    portone.set_payment("pay_1", status="PAID", amount=9900, order_name=ORDER)
    portone.mode = Mode.SERVER_ERROR

    with pytest.raises(UnknownError):
        await sdk(portone).get_payment_async(payment_id="pay_1")


async def test_garbage_and_incomplete_bodies_are_value_errors(portone: FakePortOne) -> None:
    portone.set_payment("pay_1", status="PAID", amount=9900, order_name=ORDER)
    client = sdk(portone)

    portone.mode = Mode.GARBAGE
    with pytest.raises(json.JSONDecodeError):
        await client.get_payment_async(payment_id="pay_1")

    portone.mode = Mode.INCOMPLETE
    with pytest.raises(ValueError, match="is not Payment"):
        await client.get_payment_async(payment_id="pay_1")


async def test_a_status_the_sdk_does_not_know_is_a_value_error(portone: FakePortOne) -> None:
    body = portone.set_payment("pay_1", status="PAID", amount=9900, order_name=ORDER)
    portone.set_payment_body("pay_1", {**body, "status": "SETTLED"})

    with pytest.raises(ValueError, match="is not Payment"):
        await sdk(portone).get_payment_async(payment_id="pay_1")


async def test_a_dropped_connection_is_an_httpx_error(portone: FakePortOne) -> None:
    portone.set_payment("pay_1", status="PAID", amount=9900, order_name=ORDER)
    portone.mode = Mode.DISCONNECT

    with pytest.raises(httpx.RemoteProtocolError):
        await sdk(portone).get_payment_async(payment_id="pay_1")


async def test_a_stall_lasts_until_the_callers_deadline(portone: FakePortOne) -> None:
    portone.set_payment("pay_1", status="PAID", amount=9900, order_name=ORDER)
    portone.mode = Mode.STALL
    client = sdk(portone)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(scaled(0.5)):
            await client.get_payment_async(payment_id="pay_1")

    portone.mode = Mode.NORMAL
    portone.release_stalled()
    assert isinstance(await client.get_payment_async(payment_id="pay_1"), PaidPayment)


async def test_a_failure_can_last_for_a_number_of_requests(portone: FakePortOne) -> None:
    portone.set_payment("pay_1", status="PAID", amount=9900, order_name=ORDER)
    portone.set_mode(Mode.UNAVAILABLE, times=2)
    client = sdk(portone)

    for _ in range(2):
        with pytest.raises(ValueError):
            await client.get_payment_async(payment_id="pay_1")
    assert isinstance(await client.get_payment_async(payment_id="pay_1"), PaidPayment)
    assert portone.mode is Mode.NORMAL


async def test_a_stopped_server_is_unreachable_and_can_come_back(portone: FakePortOne) -> None:
    portone.set_payment("pay_1", status="PAID", amount=9900, order_name=ORDER)
    client = sdk(portone)
    assert isinstance(await client.get_payment_async(payment_id="pay_1"), PaidPayment)
    url = portone.base_url

    portone.stop()
    with pytest.raises(httpx.ConnectError) as raised:
        await client.get_payment_async(payment_id="pay_1")
    assert isinstance(raised.value, httpx.HTTPError)

    portone.start()
    assert portone.base_url == url
    assert isinstance(await client.get_payment_async(payment_id="pay_1"), PaidPayment)


async def test_twenty_concurrent_requests(portone: FakePortOne) -> None:
    ids = [f"pay_{i:02d}" for i in range(20)]
    for i, payment_id in enumerate(ids):
        portone.set_payment(payment_id, status="PAID", amount=1000 + i, order_name=ORDER)
    client = sdk(portone)

    payments = await asyncio.gather(*(client.get_payment_async(payment_id=p) for p in ids))

    assert [p.amount.total for p in payments] == [1000 + i for i in range(20)]  # type: ignore[union-attr]
    assert sorted(r.payment_id or "" for r in portone.requests) == ids


def test_twenty_threads_at_once_while_the_state_changes(portone: FakePortOne) -> None:
    portone.set_payment("pay_hot", status="VIRTUAL_ACCOUNT_ISSUED", amount=500, order_name=ORDER)
    client = sdk(portone)

    def ask(index: int) -> str:
        if index == 10:
            portone.set_payment("pay_hot", status="PAID", amount=500, order_name=ORDER)
        payment = client.get_payment(payment_id="pay_hot")
        return type(payment).__name__

    seen = concurrently(20, ask)

    assert set(seen) <= {"VirtualAccountIssuedPayment", "PaidPayment"}
    assert len(portone.requests_for("pay_hot")) == 20


def test_webhook_signed_by_the_helper_passes_the_sdk_verify() -> None:
    secret = webhook_secret()
    body = webhook_body("Transaction.Paid", "pay_1", DEFAULT_STORE_ID)
    headers = signed_webhook(secret, body, msg_id="msg_001", timestamp=datetime.now(UTC))

    event = portone_webhook.verify(secret, body.decode(), headers)

    assert isinstance(event, portone_webhook.WebhookTransactionPaid)
    assert event.data.payment_id == "pay_1"
    assert event.data.store_id == DEFAULT_STORE_ID
    assert event.data.transaction_id == transaction_id_for("pay_1")
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    # The same headers also pass the reference implementation.
    assert Webhook(secret).verify(body, headers)["data"]["paymentId"] == "pay_1"


def test_a_tampered_webhook_is_rejected() -> None:
    secret = webhook_secret()
    body = webhook_body("Transaction.Paid", "pay_1", DEFAULT_STORE_ID)
    headers = signed_webhook(secret, body, msg_id="msg_001", timestamp=datetime.now(UTC))
    tampered = body.replace(b"pay_1", b"pay_2")

    with pytest.raises(portone_webhook.WebhookVerificationError) as raised:
        portone_webhook.verify(secret, tampered.decode(), headers)
    assert raised.value.reason == "NO_MATCHING_SIGNATURE"
    with pytest.raises(portone_webhook.WebhookVerificationError) as raised:
        portone_webhook.verify(webhook_secret(), body.decode(), headers)
    assert raised.value.reason == "NO_MATCHING_SIGNATURE"


def test_a_webhook_signed_long_ago_is_too_old() -> None:
    secret = webhook_secret()
    body = webhook_body("Transaction.Paid", "pay_1", DEFAULT_STORE_ID)
    headers = signed_webhook(
        secret, body, msg_id="msg_001", timestamp=datetime.now(UTC) - timedelta(minutes=6)
    )

    with pytest.raises(portone_webhook.WebhookVerificationError) as raised:
        portone_webhook.verify(secret, body.decode(), headers)
    assert raised.value.reason == "TIMESTAMP_TOO_OLD"


def test_a_timestamp_in_another_zone_signs_the_same_instant() -> None:
    secret = webhook_secret()
    body = webhook_body("Transaction.Paid", "pay_1", DEFAULT_STORE_ID)
    now_in_seoul = datetime.now(timezone(timedelta(hours=9)))

    headers = signed_webhook(secret, body, msg_id="msg_kst", timestamp=now_in_seoul)

    assert int(headers["webhook-timestamp"]) == int(now_in_seoul.timestamp())
    assert portone_webhook.verify(secret, body.decode(), headers)


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("Transaction.Cancelled", portone_webhook.WebhookTransactionCancelledCancelled),
        ("Transaction.PartialCancelled",
         portone_webhook.WebhookTransactionCancelledPartialCancelled),
    ],
)
def test_cancellation_webhooks_carry_the_cancellation_id(event_type: str, expected: type) -> None:
    secret = webhook_secret()
    body = webhook_body(event_type, "pay_1", DEFAULT_STORE_ID)
    headers = signed_webhook(secret, body, msg_id="msg_c", timestamp=datetime.now(UTC))

    event = portone_webhook.verify(secret, body.decode(), headers)

    assert type(event) is expected
    assert json.loads(body)["data"]["cancellationId"] == cancellation_id_for("pay_1")


def test_an_unknown_webhook_type_verifies_as_a_plain_dict() -> None:
    secret = webhook_secret()
    body = webhook_body("Transaction.SomethingNew", "pay_1", DEFAULT_STORE_ID)
    headers = signed_webhook(secret, body, msg_id="msg_new", timestamp=datetime.now(UTC))

    assert isinstance(portone_webhook.verify(secret, body.decode(), headers), dict)
