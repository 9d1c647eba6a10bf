"""A fake PortOne V2 REST server, so tests exercise the real portone-server-sdk over real HTTP.

Tests point the SDK's `base_url` at `FakePortOne.base_url`, set the payment state PortOne should
report, and switch on failure modes (an outage, a garbled answer, a dropped or stalled connection).
Every request is recorded so a test can count how often PortOne was asked.

Only `GET /payments/{paymentId}` is served (the one call the payment flow makes). The bodies carry
every field the SDK 0.21.0 requires for each status, so the SDK returns the matching class:

    READY                   ReadyPayment              PAID               PaidPayment
    PAY_PENDING             PayPendingPayment         FAILED             FailedPayment
    VIRTUAL_ACCOUNT_ISSUED  VirtualAccountIssuedPayment
    PARTIAL_CANCELLED       PartialCancelledPayment   CANCELLED          CancelledPayment

What the SDK raises for each failure mode (checked by tests/test_fake_portone.py):

    wrong or missing secret        portone_server_sdk.errors.UnauthorizedError
    unknown id / other store       portone_server_sdk.errors.PaymentNotFoundError
    Mode.UNAVAILABLE (503, HTML)   json.JSONDecodeError, a ValueError: the SDK parses every
                                   non-200 body as JSON before it maps errors
    Mode.SERVER_ERROR (500, JSON)  portone_server_sdk.errors.UnknownError
    Mode.GARBAGE (200, not JSON)   json.JSONDecodeError (ValueError)
    Mode.INCOMPLETE (200, PAID body without `amount`)   ValueError("... is not Payment")
    Mode.DISCONNECT                httpx.RemoteProtocolError (an httpx.HTTPError)
    Mode.STALL                     nothing until released: the SDK's own timeout is 60 s, so
                                   the caller's deadline is what fires
    stop()                         httpx.ConnectError (an httpx.HTTPError)

The webhook helpers sign with the `standardwebhooks` package, never with our code or the SDK's,
so a test that verifies a signature checks our code against an independent implementation.

This module is test support: application code must never import it.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import secrets
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qs, unquote, urlsplit

from standardwebhooks import Webhook

DEFAULT_SECRET = "test-portone-v2-api-secret"
DEFAULT_STORE_ID = "store-4f9a1c2e-7b3d-4e8a-9c21-5d6f7a8b9c0d"
DEFAULT_CHANNEL_KEY = "channel-key-0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
MERCHANT_ID = "merchant-8e2b6c40-1f3a-4d5e-9b7c-2a1d0e9f8c7b"

# A stall ends on its own after this long, so a forgotten release cannot hang a test run.
_STALL_LIMIT_SECONDS = 60.0
_ID_NAMESPACE = uuid.UUID("6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f")


class PaymentStatus(StrEnum):
    READY = "READY"
    PAY_PENDING = "PAY_PENDING"
    VIRTUAL_ACCOUNT_ISSUED = "VIRTUAL_ACCOUNT_ISSUED"
    PAID = "PAID"
    FAILED = "FAILED"
    PARTIAL_CANCELLED = "PARTIAL_CANCELLED"
    CANCELLED = "CANCELLED"


class Mode(StrEnum):
    """How the fake answers; see the module docstring for what the SDK raises in each."""

    NORMAL = "normal"
    UNAVAILABLE = "unavailable"
    SERVER_ERROR = "server_error"
    GARBAGE = "garbage"
    INCOMPLETE = "incomplete"
    DISCONNECT = "disconnect"
    STALL = "stall"


class RecordedRequest(NamedTuple):
    method: str
    path: str
    """As sent, percent-encoded, with the query string."""
    headers: dict[str, str]
    """Lowercase names."""

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        return {name: values[-1] for name, values in parse_qs(urlsplit(self.path).query).items()}

    @property
    def payment_id(self) -> str | None:
        """The decoded id of a `/payments/{id}` request, else None."""
        parts = self.route.split("/")
        if len(parts) == 3 and parts[1] == "payments" and parts[2]:
            return unquote(parts[2])
        return None


def transaction_id_for(payment_id: str) -> str:
    """The transaction id the fake reports for `payment_id` unless told otherwise."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"transaction:{payment_id}"))


def cancellation_id_for(payment_id: str) -> str:
    """The cancellation id the fake reports for `payment_id` unless told otherwise."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"cancellation:{payment_id}"))


def iso(moment: datetime) -> str:
    """PortOne's timestamp format: UTC, ISO-8601, `Z` suffix."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def payment_body(
    payment_id: str,
    *,
    status: PaymentStatus | str,
    amount: int,
    order_name: str,
    currency: str = "KRW",
    store_id: str = DEFAULT_STORE_ID,
    channel_key: str = DEFAULT_CHANNEL_KEY,
    cancelled: int | None = None,
    tax_free: int = 0,
    custom_data: str | None = None,
    customer_id: str | None = None,
    transaction_id: str | None = None,
    cancellation_id: str | None = None,
    failure_reason: str = "사용자가 결제를 취소했습니다",
    at: datetime | None = None,
) -> dict[str, Any]:
    """A complete `GET /payments/{id}` answer, as PortOne V2 sends it.

    `cancelled` defaults to the whole amount for CANCELLED and half of it for PARTIAL_CANCELLED;
    it must be 0 for every other status. `at` is when the status last changed (default now).
    Inconsistent input raises ValueError: use `FakePortOne.set_payment_body` for odd bodies.
    """
    status = PaymentStatus(status)
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"amount must be a non-negative int, not {amount!r}")
    if not 0 <= tax_free <= amount:
        raise ValueError(f"tax_free must be within 0..{amount}, not {tax_free}")
    cancelled_amount = _cancelled_amount(status, amount, cancelled)
    at = at or datetime.now(UTC)
    requested_at = at - timedelta(minutes=2)
    paid_at = at if status is PaymentStatus.PAID else at - timedelta(minutes=1)
    transaction_id = transaction_id or transaction_id_for(payment_id)
    was_paid = status in _PAID_STATUSES

    body: dict[str, Any] = {
        "status": status.value,
        "id": payment_id,
        "transactionId": transaction_id,
        "merchantId": MERCHANT_ID,
        "storeId": store_id,
        "channel": {
            "type": "TEST",
            "id": "channel-id-" + str(uuid.uuid5(_ID_NAMESPACE, channel_key)),
            "key": channel_key,
            "name": "토스페이먼츠 테스트",
            "pgProvider": "TOSSPAYMENTS",
            "pgMerchantId": "tosspayments",
        },
        "version": "V2",
        "requestedAt": iso(requested_at),
        "updatedAt": iso(at),
        "statusChangedAt": iso(at),
        "orderName": order_name,
        "amount": {
            "total": amount,
            "taxFree": tax_free,
            "vat": _vat(amount - tax_free),
            "supply": amount - tax_free - _vat(amount - tax_free),
            "discount": 0,
            "paid": amount if was_paid else 0,
            "cancelled": cancelled_amount,
            "cancelledTaxFree": 0,
        },
        "currency": currency,
        "customer": {"id": customer_id} if customer_id is not None else {},
        "origin": {
            "platformType": "PC",
            "ipAddress": "203.0.113.7",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) StocKingTest/1.0",
            "url": "https://stocking.example/payments",
        },
        "isCulturalExpense": False,
    }
    if custom_data is not None:
        body["customData"] = custom_data

    if was_paid:
        body["method"] = {
            "type": "PaymentMethodCard",
            "card": {
                "publisher": "SHINHAN",
                "issuer": "SHINHAN",
                "brand": "VISA",
                "type": "CREDIT",
                "ownerType": "PERSONAL",
                "bin": "433012",
                "name": "신한카드",
                "number": "433012******1234",
            },
            "approvalNumber": "30012345",
            "installment": {"month": 0, "isInterestFree": False},
            "pointUsed": False,
        }
        body["pgTxId"] = "tgen_" + transaction_id.replace("-", "")[:20]
        body["paidAt"] = iso(paid_at)
        body["receiptUrl"] = f"https://dashboard.tosspayments.com/receipt/{transaction_id}"
    if status is PaymentStatus.PAID:
        body["disputes"] = []
    elif status is PaymentStatus.VIRTUAL_ACCOUNT_ISSUED:
        body["method"] = {
            "type": "PaymentMethodVirtualAccount",
            "bank": "SHINHAN",
            "accountNumber": "56211102345678",
            "accountType": "NORMAL",
            "remitteeName": "스토킹",
            "expiredAt": iso(at + timedelta(days=3)),
            "issuedAt": iso(at),
        }
        body["pgTxId"] = "tvir_" + transaction_id.replace("-", "")[:20]
    elif status is PaymentStatus.FAILED:
        body["failedAt"] = iso(at)
        body["failure"] = {
            "reason": failure_reason,
            "pgCode": "PAY_PROCESS_CANCELED",
            "pgMessage": failure_reason,
        }
    elif status in (PaymentStatus.PARTIAL_CANCELLED, PaymentStatus.CANCELLED):
        body["cancelledAt"] = iso(at)
        body["cancellations"] = [
            {
                "status": "SUCCEEDED",
                "id": cancellation_id or cancellation_id_for(payment_id),
                "pgCancellationId": "tcan_" + transaction_id.replace("-", "")[:20],
                "totalAmount": cancelled_amount,
                "taxFreeAmount": 0,
                "vatAmount": _vat(cancelled_amount),
                "easyPayDiscountAmount": 0,
                "reason": "고객 요청",
                "requestedAt": iso(at - timedelta(seconds=5)),
                "cancelledAt": iso(at),
                "trigger": "API",
            }
        ]
    return body


_PAID_STATUSES = frozenset(
    {PaymentStatus.PAID, PaymentStatus.PARTIAL_CANCELLED, PaymentStatus.CANCELLED}
)


def _cancelled_amount(status: PaymentStatus, amount: int, cancelled: int | None) -> int:
    if status is PaymentStatus.CANCELLED:
        if cancelled not in (None, amount):
            raise ValueError(f"a CANCELLED payment cancels all {amount}, not {cancelled}")
        return amount
    if status is PaymentStatus.PARTIAL_CANCELLED:
        partial = amount // 2 if cancelled is None else cancelled
        if not 0 < partial < amount:
            raise ValueError(f"a partial cancellation must be within 1..{amount - 1}")
        return partial
    if cancelled:
        raise ValueError(f"a {status} payment has nothing cancelled")
    return 0


def _vat(taxable: int) -> int:
    # Korean VAT is a tenth of the supply value, so 1/11 of a VAT-inclusive price.
    return round(taxable / 11)


class FakePortOne:
    """The fake server. `with FakePortOne(secret=...) as portone:` starts it on a free port.

    Each answer closes its connection (HTTP/1.0), so after `stop()` no pooled connection can
    still reach the fake: the next SDK call gets httpx.ConnectError. `start()` after `stop()`
    listens on the same port again (PortOne is back), keeping `base_url` stable.
    """

    def __init__(
        self,
        *,
        secret: str = DEFAULT_SECRET,
        store_id: str = DEFAULT_STORE_ID,
        channel_key: str = DEFAULT_CHANNEL_KEY,
    ) -> None:
        self.secret = secret
        self.store_id = store_id
        self.channel_key = channel_key
        self._lock = threading.Lock()
        self._payments: dict[str, dict[str, Any]] = {}
        self._requests: list[RecordedRequest] = []
        self._mode = Mode.NORMAL
        self._mode_times: int | None = None
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # Lifecycle

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the fake PortOne is already running")
        server = _Server(self, self._port or 0)
        self._port = server.server_address[1]
        self._server = server
        # A short poll interval so stop() returns quickly.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"fake-portone-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; requests now fail to connect. Stalled requests are dropped."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        self.release_stalled()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`, no trailing slash; still the same after stop()."""
        if self._port is None:
            raise RuntimeError("start the fake PortOne before asking for its URL")
        return f"http://127.0.0.1:{self._port}"

    # Payment state

    def set_payment(
        self,
        payment_id: str,
        *,
        status: PaymentStatus | str,
        amount: int,
        order_name: str,
        currency: str = "KRW",
        store_id: str | None = None,
        channel_key: str | None = None,
        cancelled: int | None = None,
        tax_free: int = 0,
        custom_data: str | None = None,
        customer_id: str | None = None,
        transaction_id: str | None = None,
        cancellation_id: str | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Make PortOne report this payment (replacing any earlier state); returns the body."""
        body = payment_body(
            payment_id,
            status=status,
            amount=amount,
            order_name=order_name,
            currency=currency,
            store_id=store_id or self.store_id,
            channel_key=channel_key or self.channel_key,
            cancelled=cancelled,
            tax_free=tax_free,
            custom_data=custom_data,
            customer_id=customer_id,
            transaction_id=transaction_id,
            cancellation_id=cancellation_id,
            at=at,
        )
        self.set_payment_body(payment_id, body)
        return copy.deepcopy(body)

    def set_payment_body(self, payment_id: str, body: Mapping[str, Any]) -> None:
        """Report `body` verbatim for `payment_id` (a status the SDK does not know, a bad field).

        A body with a `storeId` is only found by requests for that store (or with no storeId).
        """
        stored = copy.deepcopy(dict(body))
        with self._lock:
            self._payments[payment_id] = stored

    def payment(self, payment_id: str) -> dict[str, Any]:
        """A copy of the body the fake reports for `payment_id` (KeyError when unknown)."""
        with self._lock:
            return copy.deepcopy(self._payments[payment_id])

    def remove_payment(self, payment_id: str) -> None:
        with self._lock:
            self._payments.pop(payment_id, None)

    # Failure modes

    @property
    def mode(self) -> Mode:
        with self._lock:
            return self._mode

    @mode.setter
    def mode(self, mode: Mode | str) -> None:
        self.set_mode(mode)

    def set_mode(self, mode: Mode | str, *, times: int | None = None) -> None:
        """Answer in `mode` from now on, or only for the next `times` requests and then
        NORMAL again (e.g. one 503, then PortOne answers)."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._mode = Mode(mode)
            self._mode_times = times

    @property
    def down(self) -> bool:
        """True while answering 503 (Mode.UNAVAILABLE); setting it switches that mode on/off."""
        return self.mode is Mode.UNAVAILABLE

    @down.setter
    def down(self, down: bool) -> None:
        self.set_mode(Mode.UNAVAILABLE if down else Mode.NORMAL)

    def release_stalled(self) -> None:
        """Drop every request held by Mode.STALL (their connections close with no answer)."""
        with self._lock:
            release, self._release = self._release, threading.Event()
        release.set()

    # What PortOne was asked

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a snapshot)."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, payment_id: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.payment_id == payment_id]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # Serving (called on the server's request threads)

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        request = RecordedRequest(
            method=handler.command,
            path=handler.path,
            headers={name.lower(): value for name, value in handler.headers.items()},
        )
        with self._lock:
            self._requests.append(request)
            mode = self._mode
            if self._mode_times is not None:
                self._mode_times -= 1
                if self._mode_times == 0:
                    self._mode, self._mode_times = Mode.NORMAL, None
            release = self._release

        if mode is Mode.DISCONNECT:
            return  # the server closes the connection without a status line
        if mode is Mode.STALL:
            release.wait(_STALL_LIMIT_SECONDS)
            return
        if mode is Mode.UNAVAILABLE:
            _send(handler, 503, _UNAVAILABLE_PAGE, "text/html")
            return
        if mode is Mode.SERVER_ERROR:
            _send_json(handler, 500, _error("INTERNAL_SERVER_ERROR", "일시적인 오류입니다"))
            return
        self._answer(handler, request, mode)

    def _answer(self, handler: _Handler, request: RecordedRequest, mode: Mode) -> None:
        payment_id = request.payment_id
        if request.method != "GET" or payment_id is None:
            _send_json(handler, 404, _error("NOT_FOUND", "the fake serves GET /payments/{id}"))
            return
        if request.headers.get("authorization") != f"PortOne {self.secret}":
            _send_json(handler, 401, _error("UNAUTHORIZED", "인증 정보가 올바르지 않습니다"))
            return
        if mode is Mode.GARBAGE:
            _send(handler, 200, b'{"status": "PAID", "id": "' + payment_id.encode(), None)
            return
        with self._lock:
            body = copy.deepcopy(self._payments.get(payment_id))
        wanted_store = request.query.get("storeId")
        if body is None or wanted_store not in (None, body.get("storeId", wanted_store)):
            _send_json(handler, 404, _error("PAYMENT_NOT_FOUND", "결제 건이 존재하지 않습니다"))
            return
        if mode is Mode.INCOMPLETE:
            body.pop("amount", None)
        _send_json(handler, 200, body)


_UNAVAILABLE_PAGE = (
    b"<html><head><title>503 Service Temporarily Unavailable</title></head>"
    b"<body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>"
)


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"type": error_type, "message": message}


def _send_json(handler: _Handler, status: int, body: Mapping[str, Any]) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode()
    _send(handler, status, payload, "application/json")


def _send(handler: _Handler, status: int, payload: bytes, content_type: str | None) -> None:
    handler.send_response(status)
    if content_type is not None:
        handler.send_header("Content-Type", f"{content_type}; charset=utf-8")
    handler.send_header("Content-Length", str(len(payload)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Room for a burst of simultaneous connects (the default backlog is 5).
    request_queue_size = 128

    def __init__(self, fake: FakePortOne, port: int) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def _serve(self) -> None:
        self.server.fake._handle(self)

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output to what the test says


# Webhooks


def webhook_secret() -> str:
    """A fresh PortOne-style webhook secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_body(
    type: str,
    payment_id: str,
    store_id: str = DEFAULT_STORE_ID,
    *,
    transaction_id: str | None = None,
    cancellation_id: str | None = None,
    timestamp: datetime | None = None,
) -> bytes:
    """A PortOne V2 webhook body (version 2024-04-25), e.g. type "Transaction.Paid".

    Transaction.Cancelled, .PartialCancelled and .CancelPending carry a cancellationId. The ids
    default to the ones `set_payment` reports for the same payment.
    """
    data = {
        "paymentId": payment_id,
        "storeId": store_id,
        "transactionId": transaction_id or transaction_id_for(payment_id),
    }
    if type in _CANCELLATION_TYPES:
        data["cancellationId"] = cancellation_id or cancellation_id_for(payment_id)
    body = {"type": type, "timestamp": iso(timestamp or datetime.now(UTC)), "data": data}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


_CANCELLATION_TYPES = frozenset(
    {"Transaction.Cancelled", "Transaction.PartialCancelled", "Transaction.CancelPending"}
)


def signed_webhook(
    secret: str, body: bytes, *, msg_id: str, timestamp: datetime
) -> dict[str, str]:
    """The Standard Webhooks headers PortOne would send with `body`, signed by `standardwebhooks`.

    `timestamp` must be timezone-aware; it is converted to UTC first because
    standardwebhooks' `sign` replaces (rather than converts) the timezone.
    """
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    moment = timestamp.astimezone(UTC)
    signature = Webhook(secret).sign(msg_id, moment, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(moment.timestamp())),
        "webhook-signature": signature,
    }
