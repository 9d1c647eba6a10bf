"""HTTP routes of api.payments: the catalog, PortOne prepare / complete / webhook, and the
user's payments. Each route calls one function of api.payments.service, or
api.payments.webhooks for the webhook; the flow and its guarantees are in docs/PAYMENTS.md.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from api.auth.deps import CurrentUser
from api.deps import ResourcesDep, SettingsDep
from api.models import PAYMENT_ID_MAX_LENGTH
from api.openapi import problems
from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from api.payments import service, webhooks
from api.payments.schemas import (
    CompleteRequest,
    PaymentEnvelope,
    PaymentsPage,
    PreparedEnvelope,
    PrepareRequest,
    ProductsOut,
    WebhookAck,
)
from api.portfolios.deps import AccountId

router = APIRouter(tags=["payments"])

_UNAVAILABLE = "`portone_unavailable`: PortOne could not be asked, or its answer not read"


@router.get("/payments/products")
async def products(_: CurrentUser, settings: SettingsDep) -> ProductsOut:
    """What can be bought: virtual-cash packs and the premium plan, at the server's prices."""
    return ProductsOut.of(settings.payment_products)


@router.post("/payments/portone/prepare", status_code=201, responses=problems({
    404: "`account_not_found`",
    422: "`validation_error`, `unknown_product`",
}))
async def prepare(body: PrepareRequest, principal: CurrentUser, account_id: AccountId,
                  resources: ResourcesDep) -> PreparedEnvelope:
    """Start a payment for a product: a PREPARED record with a server-made `payment_id`, and
    the values to pass to the browser SDK's `PortOne.requestPayment`. A cash pack will credit
    the portfolio chosen with `X-Portfolio-Id` (the default one without it)."""
    return await service.prepare_payment(resources, principal.user_id, account_id, body)


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
    return await service.complete(resources, principal.user_id, body.payment_id)


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
    return await webhooks.handle_webhook(resources, await request.body(), request.headers)


@router.get("/payments", responses=problems({422: "`validation_error`, `invalid_cursor`"}))
async def list_payments(
    principal: CurrentUser,
    resources: ResourcesDep,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> PaymentsPage:
    """The signed-in user's payments and their states, newest first."""
    return await service.payments_page(resources, principal.user_id, cursor=cursor,
                                       limit=limit)


@router.get("/payments/{payment_id}", responses=problems({404: "`payment_not_found`"}))
async def get_payment(payment_id: Annotated[str, Path(max_length=PAYMENT_ID_MAX_LENGTH)],
                      principal: CurrentUser,
                      resources: ResourcesDep) -> PaymentEnvelope:
    """One of the signed-in user's payments."""
    return await service.get_payment(resources, principal.user_id, payment_id)
