"""PortOne V2, behind one seam: fetch a payment, verify a webhook. Nothing else in the app
imports the SDK, and every SDK, HTTP or parsing failure leaves here as one of our exceptions:

    PortOneError
    ├── PortOneUnavailable   PortOne could not be asked or its answer not understood (-> 5xx)
    ├── PortOneNotFound      PortOne has no payment with this id
    └── WebhookRejected      a webhook that fails verification (-> 400), with the SDK's reason

The SDK client is the real `portone_server_sdk.PaymentClient`, pointed at
`PORTONE_API_BASE_URL` (tests point it at a local fake PortOne). It is built once per process,
by the first payment that needs it, and kept by the app's lifespan resources: building one
takes ~200 ms of CPU (it creates twelve httpx clients, each with its own TLS context), which
every API start, and every test app, would otherwise pay whether or not a payment ever comes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from portone_server_sdk import PaymentClient
from portone_server_sdk.errors import PaymentNotFoundError
from portone_server_sdk.payment import (
    CancelledPayment,
    FailedPayment,
    GetPaymentError,
    PaidPayment,
    PartialCancelledPayment,
    PayPendingPayment,
    ReadyPayment,
    VirtualAccountIssuedPayment,
)
from portone_server_sdk.webhook import InvalidInputError, WebhookVerificationError, verify

from api.models import PAYMENT_ID_MAX_LENGTH, WEBHOOK_ID_MAX_LENGTH

logger = logging.getLogger(__name__)

# PortOne's payment statuses, by the SDK class that carries each.
STATUS_OF = {
    ReadyPayment: "READY",
    PayPendingPayment: "PAY_PENDING",
    VirtualAccountIssuedPayment: "VIRTUAL_ACCOUNT_ISSUED",
    PaidPayment: "PAID",
    FailedPayment: "FAILED",
    PartialCancelledPayment: "PARTIAL_CANCELLED",
    CancelledPayment: "CANCELLED",
}


class PortOneError(Exception):
    """Root of the errors of this module."""


class PortOneUnavailable(PortOneError):
    pass


class PortOneNotFound(PortOneError):
    pass


class WebhookRejected(PortOneError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RemotePayment:
    """What PortOne says of a payment: the only source of truth for what was paid."""

    payment_id: str
    status: str  # a value of STATUS_OF
    store_id: str
    order_name: str
    currency: str
    total: int  # amount.total
    cancelled: int  # amount.cancelled (0 unless cancelled)


@dataclass(frozen=True)
class VerifiedWebhook:
    """A verified webhook: its id (for deduplication), type, and the payment it names, if any."""

    webhook_id: str
    type: str
    payment_id: str | None
    store_id: str | None


def remote_payment(payment: object) -> RemotePayment:
    status = STATUS_OF.get(type(payment))
    if status is None:  # the SDK answers a plain dict for a status it does not know
        raise PortOneUnavailable(
            f"PortOne answered a payment the SDK cannot read: {payment!r:.200}")
    fields: Any = payment  # every class above has these attributes
    return RemotePayment(payment_id=fields.id, status=status, store_id=fields.store_id,
                         order_name=fields.order_name, currency=str(fields.currency),
                         total=fields.amount.total, cancelled=fields.amount.cancelled)


class PortOne:
    def __init__(self, *, api_secret: str, webhook_secret: str, base_url: str, store_id: str,
                 timeout_s: float) -> None:
        self._api_secret = api_secret
        self._webhook_secret = webhook_secret
        self.base_url = base_url
        self.store_id = store_id
        self.timeout_s = timeout_s
        self._client: PaymentClient | None = None
        self._building = asyncio.Lock()

    async def _payment_client(self) -> PaymentClient:
        async with self._building:
            if self._client is None:
                # Off the event loop: ~200 ms of CPU (see the module docstring).
                self._client = await asyncio.to_thread(
                    PaymentClient, secret=self._api_secret, base_url=self.base_url,
                    store_id=self.store_id)
            return self._client

    async def get_payment(self, payment_id: str) -> RemotePayment:
        """PortOne's record of the payment. Raises PortOneNotFound or PortOneUnavailable."""
        client = await self._payment_client()
        try:
            async with asyncio.timeout(self.timeout_s):
                payment = await client.get_payment_async(payment_id=payment_id)
        except PaymentNotFoundError as exc:
            raise PortOneNotFound(f"PortOne has no payment {payment_id!r}") from exc
        # The SDK raises its typed errors for the API's own error answers, ValueError for a
        # body it cannot parse (a 5xx HTML page included), and httpx's errors for the network.
        except (GetPaymentError, ValueError, httpx.HTTPError, TimeoutError) as exc:
            raise PortOneUnavailable(f"asking PortOne for payment {payment_id!r} failed: "
                                     f"{type(exc).__name__}: {exc}"[:500]) from exc
        return remote_payment(payment)

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> VerifiedWebhook:
        """The webhook, if its Standard Webhooks signature over the raw body is ours and its
        timestamp within 5 minutes; WebhookRejected otherwise."""
        try:
            payload = body.decode("utf-8")
            verified = verify(self._webhook_secret, payload, headers)
        except UnicodeDecodeError as exc:
            raise WebhookRejected("BODY_NOT_UTF8") from exc
        except WebhookVerificationError as exc:
            raise WebhookRejected(str(exc.reason)) from exc
        except InvalidInputError as exc:  # our secret is malformed: settings refuse that
            raise PortOneUnavailable(f"the webhook secret is unusable: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            # Signed, but not a webhook body the SDK can read (it parses only after checking
            # the signature, and raises whatever the parse raises).
            raise WebhookRejected("UNREADABLE_BODY") from exc
        # Authentic and JSON from here on. The SDK gives typed events for the types it knows
        # and the parsed dict for others; read the type and ids from the signed body either way.
        document = orjson.loads(body)
        data = document.get("data") if isinstance(document, dict) else None
        data = data if isinstance(data, dict) else {}
        event_type = document.get("type") if isinstance(document, dict) else None
        logger.debug("verified webhook %s: %r", headers.get("webhook-id"), type(verified))
        event = VerifiedWebhook(webhook_id=headers["webhook-id"],
                             type=str(event_type or "")[:64],
                             payment_id=_optional_str(data.get("paymentId")),
                             store_id=_optional_str(data.get("storeId")))
        # Signed ids longer than what we store: no payment of ours has such an id, and a
        # delivery we cannot record as handled must not be acted on (MariaDB would refuse
        # the row, a 500), so it is refused before anything is looked up or written.
        if len(event.webhook_id) > WEBHOOK_ID_MAX_LENGTH:
            raise WebhookRejected("WEBHOOK_ID_TOO_LONG")
        if event.payment_id is not None and len(event.payment_id) > PAYMENT_ID_MAX_LENGTH:
            raise WebhookRejected("PAYMENT_ID_TOO_LONG")
        return event


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
