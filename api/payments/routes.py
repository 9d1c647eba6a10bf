"""HTTP routes of api.payments: the catalog, PortOne prepare / complete / webhook, and the
user's payments. The flow and its guarantees are in docs/PAYMENTS.md.

`complete` (from the buyer's browser) and the webhook (from PortOne) do the same thing: ask
PortOne for the payment, outside any transaction, then apply the answer in one transaction
(`api.payments.sync.apply_remote`). Neither trusts anything but PortOne's answer.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy.orm import Session

from api.auth.deps import CurrentUser
from api.deps import ResourcesDep, SettingsDep
from api.errors import ApiError, Conflict, ServiceUnavailable
from api.models import PAYMENT_ID_MAX_LENGTH, Payment
from api.openapi import problems
from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from api.payments import service, sync
from api.payments.catalog import product_by_id, product_by_terms
from api.payments.portone import (
    PortOneNotFound,
    PortOneUnavailable,
    RemotePayment,
    WebhookEvent,
    WebhookRejected,
)
from api.payments.schemas import (
    CompleteRequest,
    PaymentEnvelope,
    PaymentOut,
    PaymentsPage,
    PreparedEnvelope,
    PreparedOut,
    PrepareRequest,
    ProductOut,
    ProductsOut,
    WebhookAck,
)
from api.resources import Resources
from api.system.metrics import PAYMENT_SYNCS

logger = logging.getLogger(__name__)

router = APIRouter(tags=["payments"])

_UNAVAILABLE = "`portone_unavailable`: PortOne could not be asked, or its answer not read"


class InvalidWebhook(ApiError):
    status, code, title = 400, "invalid_webhook", "Invalid webhook"


@router.get("/payments/products")
async def products(_: CurrentUser, settings: SettingsDep) -> ProductsOut:
    """What can be bought: virtual-cash packs and the premium plan, at the server's prices."""
    return ProductsOut(items=[ProductOut.of(product) for product in settings.payment_products])


@router.post("/payments/portone/prepare", status_code=201, responses=problems({
    404: "`account_not_found`",
    422: "`validation_error`, `unknown_product`",
}))
async def prepare(body: PrepareRequest, principal: CurrentUser,
                  resources: ResourcesDep) -> PreparedEnvelope:
    """Start a payment for a product: a PREPARED record with a server-made `payment_id`, and
    the values to pass to the browser SDK's `PortOne.requestPayment`."""
    settings = resources.settings
    catalog = settings.payment_products
    if body.product_id is not None:
        product = product_by_id(catalog, body.product_id)
    else:
        assert body.amount is not None and body.order_name is not None
        assert body.currency is not None  # checked by PrepareRequest
        product = product_by_terms(catalog, order_name=body.order_name, amount=body.amount,
                                   currency=body.currency)
    payment = await resources.db.run(service.prepare, principal.user_id, product)
    return PreparedEnvelope(data=PreparedOut(
        store_id=settings.portone_store_id, channel_key=settings.portone_channel_key,
        payment_id=payment.payment_id, order_name=payment.order_name, amount=payment.amount,
        currency=payment.currency))


async def ask_portone(resources: Resources, payment_id: str) -> RemotePayment:
    try:
        return await resources.portone.get_payment(payment_id)
    except PortOneUnavailable as exc:
        logger.warning("%s", exc)
        raise ServiceUnavailable("PortOne could not be asked about this payment; nothing was "
                                 "credited. Try again shortly.",
                                 code="portone_unavailable") from exc


def _apply(session: Session, payment_id: str, remote: RemotePayment,
           store_id: str) -> PaymentOut:
    return PaymentOut.model_validate(sync.apply_remote(session, payment_id, remote, store_id))


def _counted(payment: PaymentOut) -> PaymentOut:
    """Counted once its transaction has committed (a retried one would count twice)."""
    PAYMENT_SYNCS.labels(status=payment.status.value).inc()
    return payment


@router.post("/payments/portone/complete", responses=problems({
    404: "`payment_not_found` (none of yours has this id)",
    409: "`payment_not_started`: PortOne has no payment with this id yet",
    422: "`validation_error`",
    503: _UNAVAILABLE,
}))
async def complete(body: CompleteRequest, principal: CurrentUser,
                   resources: ResourcesDep) -> PaymentEnvelope:
    """After `requestPayment` returns in the browser: check the payment with PortOne and, if
    it is paid and matches what was prepared, credit it (once, however often this is called,
    and whether or not the webhook came first)."""
    payment = await resources.db.read(service.owned_payment, body.payment_id,
                                     principal.user_id)
    try:
        remote = await ask_portone(resources, payment.payment_id)
    except PortOneNotFound as exc:
        raise Conflict("PortOne has no payment with this id yet: call requestPayment first",
                       code="payment_not_started") from exc
    return PaymentEnvelope(data=_counted(await resources.db.run_retrying(
        _apply, payment.payment_id, remote, resources.settings.portone_store_id)))


def _remember_and_apply(session: Session, event: WebhookEvent, remote: RemotePayment,
                        store_id: str) -> PaymentOut:
    service.remember_webhook(session, event.webhook_id, event.type, event.payment_id)
    return _apply(session, remote.payment_id, remote, store_id)


async def _ignore(resources: Resources, event: WebhookEvent, why: str) -> WebhookAck:
    logger.info("webhook %s (%s) ignored: %s", event.webhook_id, event.type, why)
    try:
        await resources.db.run(service.remember_webhook, event.webhook_id, event.type,
                               event.payment_id)
    except service.DuplicateWebhook:
        return WebhookAck(status="duplicate")
    return WebhookAck(status="ignored")


@router.post("/payments/portone/webhook", responses=problems({
    400: "`invalid_webhook`: signature, timestamp or headers wrong (`reason` says which)",
    503: _UNAVAILABLE + " (PortOne retries the delivery)",
}), openapi_extra={"requestBody": {
    # Read raw (the signature covers the bytes), so FastAPI does not document it by itself.
    "required": True,
    "description": "PortOne's signed event (`webhook-id`, `webhook-timestamp` and "
                   "`webhook-signature` headers, Standard Webhooks)",
    "content": {"application/json": {"schema": {"type": "object"}}},
}})
async def webhook(request: Request, resources: ResourcesDep) -> WebhookAck:
    """PortOne's webhook (register `https://<host>/api/v1/payments/portone/webhook` in the
    console, version 2024-04-25). Verified on the raw body; each webhook id acts once, ever.
    A 5xx answer makes PortOne deliver it again later."""
    try:
        event = resources.portone.verify_webhook(await request.body(), request.headers)
    except WebhookRejected as exc:
        logger.warning("webhook rejected: %s", exc.reason)
        raise InvalidWebhook(f"the webhook could not be verified: {exc.reason}",
                             reason=exc.reason) from exc
    except PortOneUnavailable as exc:
        logger.error("webhook not verifiable: %s", exc)
        raise ServiceUnavailable("webhooks cannot be verified now",
                                 code="portone_unavailable") from exc
    db = resources.db
    store_id = resources.settings.portone_store_id
    if await db.read(service.webhook_seen, event.webhook_id):
        return WebhookAck(status="duplicate")
    if event.payment_id is None or not event.type.startswith("Transaction."):
        return await _ignore(resources, event, "not about a payment")
    if event.store_id not in (None, store_id):
        return await _ignore(resources, event, f"for another store ({event.store_id})")
    if await db.read(service.payment_owner, event.payment_id) is None:
        return await _ignore(resources, event, f"no payment {event.payment_id!r} here")
    try:
        remote = await ask_portone(resources, event.payment_id)
    except PortOneNotFound as exc:
        # PortOne announced a payment it cannot find: let it deliver again later.
        logger.warning("webhook %s: %s", event.webhook_id, exc)
        raise ServiceUnavailable("PortOne does not know this payment yet",
                                 code="portone_unavailable") from exc
    try:
        payment = _counted(await db.run_retrying(_remember_and_apply, event, remote, store_id))
    except service.DuplicateWebhook:
        return WebhookAck(status="duplicate")
    return WebhookAck(status="processed", payment_status=payment.status)


@router.get("/payments", responses=problems({422: "`validation_error`, `invalid_cursor`"}))
async def list_payments(
    principal: CurrentUser,
    resources: ResourcesDep,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> PaymentsPage:
    """The signed-in user's payments and their states, newest first."""
    page = await resources.db.read(service.list_payments, principal.user_id, cursor=cursor,
                                  limit=limit)
    return PaymentsPage(items=[PaymentOut.model_validate(p) for p in page.items],
                        next_cursor=page.next_cursor)


@router.get("/payments/{payment_id}", responses=problems({404: "`payment_not_found`"}))
async def get_payment(payment_id: Annotated[str, Path(max_length=PAYMENT_ID_MAX_LENGTH)],
                      principal: CurrentUser,
                      resources: ResourcesDep) -> PaymentEnvelope:
    """One of the signed-in user's payments."""
    payment: Payment = await resources.db.read(service.owned_payment, payment_id,
                                              principal.user_id)
    return PaymentEnvelope(data=PaymentOut.model_validate(payment))
