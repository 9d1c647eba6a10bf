"""Payments: the requests of the payment routes, and their SQL units of work (prepare one,
read them, remember handled webhooks). What PortOne says of a payment is applied by
`api.payments.sync`; the webhook's flow is `api.payments.webhooks`.

`complete` (from the buyer's browser) and the webhook (from PortOne) do the same thing: ask
PortOne for the payment, outside any transaction (`ask_portone`), then apply the answer in one
transaction (`synced`). Neither trusts anything but PortOne's answer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound, ServiceUnavailable
from api.ledger.service import get_account
from api.models import HandledWebhook, Payment, PaymentStatus
from api.pagination import DEFAULT_PAGE_SIZE, Page, check_limit, decode_cursor, page_of
from api.payments import sync
from api.payments.catalog import Product, product_by_id, product_by_terms
from api.payments.portone import PortOneNotFound, PortOneUnavailable, RemotePayment
from api.payments.schemas import (
    PaymentEnvelope,
    PaymentOut,
    PaymentsPage,
    PreparedEnvelope,
    PreparedOut,
    PrepareRequest,
)
from api.resources import Resources
from api.system.metrics import PAYMENT_SYNCS

logger = logging.getLogger(__name__)

CURSOR_KIND = "pay"


# --- requests ------------------------------------------------------------------------------------


async def prepare_payment(resources: Resources, user_id: int, account_id: int,
                          request: PrepareRequest) -> PreparedEnvelope:
    """A PREPARED payment of the user for the product the request names, to credit
    `account_id` (the portfolio chosen with X-Portfolio-Id, the default one without), and what
    the browser SDK's `PortOne.requestPayment` needs to pay it."""
    settings = resources.settings
    payment = await resources.db.run(prepare, user_id, _product(settings.payment_products,
                                                                request),
                                     account_id=account_id)
    return PreparedEnvelope(data=PreparedOut(
        store_id=settings.portone_store_id, channel_key=settings.portone_channel_key,
        payment_id=payment.payment_id, order_name=payment.order_name, amount=payment.amount,
        currency=payment.currency))


def _product(catalog: Sequence[Product], request: PrepareRequest) -> Product:
    if request.product_id is not None:
        return product_by_id(catalog, request.product_id)
    assert request.amount is not None and request.order_name is not None
    assert request.currency is not None  # checked by PrepareRequest
    return product_by_terms(catalog, order_name=request.order_name, amount=request.amount,
                            currency=request.currency)


async def complete(resources: Resources, user_id: int, payment_id: str) -> PaymentEnvelope:
    """The user's payment as PortOne reports it now, applied (granted once, refunds taken back);
    409 `payment_not_started` while PortOne has no payment of this id."""
    payment = await resources.db.read(owned_payment, payment_id, user_id)
    try:
        remote = await ask_portone(resources, payment.payment_id)
    except PortOneNotFound as exc:
        raise Conflict("PortOne has no payment with this id yet: call requestPayment first",
                       code="payment_not_started") from exc
    return PaymentEnvelope(data=counted(await resources.db.run_retrying(
        synced, payment.payment_id, remote, resources.settings.portone_store_id)))


async def payments_page(resources: Resources, user_id: int, *, cursor: str | None,
                        limit: int) -> PaymentsPage:
    page = await resources.db.read(list_payments, user_id, cursor=cursor, limit=limit)
    return PaymentsPage(items=[PaymentOut.model_validate(p) for p in page.items],
                        next_cursor=page.next_cursor)


async def get_payment(resources: Resources, user_id: int, payment_id: str) -> PaymentEnvelope:
    payment = await resources.db.read(owned_payment, payment_id, user_id)
    return PaymentEnvelope(data=PaymentOut.model_validate(payment))


# --- syncing with PortOne (complete and the webhook) ---------------------------------------------


async def ask_portone(resources: Resources, payment_id: str) -> RemotePayment:
    """PortOne's record of the payment; 503 `portone_unavailable` if it cannot be had.
    PortOneNotFound is left to the caller: what it means depends on who asks."""
    try:
        return await resources.portone.get_payment(payment_id)
    except PortOneUnavailable as exc:
        logger.warning("%s", exc)
        raise ServiceUnavailable("PortOne could not be asked about this payment; nothing was "
                                 "credited. Try again shortly.",
                                 code="portone_unavailable") from exc


def synced(session: Session, payment_id: str, remote: RemotePayment,
           store_id: str) -> PaymentOut:
    """Unit of work: PortOne's answer applied (`sync.apply_remote`), read inside the
    transaction. Flushed first: `updated_at` is stamped at the flush, and an answer read before
    it would show the time of the previous change."""
    payment = sync.apply_remote(session, payment_id, remote, store_id)
    session.flush()
    return PaymentOut.model_validate(payment)


def counted(payment: PaymentOut) -> PaymentOut:
    """Counted once its transaction has committed (a retried one would count twice)."""
    PAYMENT_SYNCS.labels(status=payment.status.value).inc()
    return payment


# --- SQL units of work ---------------------------------------------------------------------------


def new_payment_id() -> str:
    """Ours, not the client's: PortOne's paymentId, unguessable and unique."""
    return f"pay_{uuid.uuid4().hex}"


def prepare(session: Session, user_id: int, product: Product, *,
            account_id: int | None = None) -> Payment:
    """A PREPARED payment for the product, owned by the user, with the product's terms, that
    will credit `account_id`: one of the user's portfolios' accounts (the caller checked it is
    his), his default portfolio's (his own) when None."""
    if account_id is None:
        account_id = user_id
    # The payment will credit this account: it must exist, and a token whose user is gone gets
    # its 401 here rather than a foreign-key error at the insert.
    get_account(session, account_id)
    payment = Payment(payment_id=new_payment_id(), user_id=user_id, account_id=account_id,
                      product_id=product.id, kind=product.kind.value, order_name=product.name,
                      amount=product.price, currency=product.currency, credit=product.credit,
                      premium_days=product.premium_days, status=PaymentStatus.PREPARED.value,
                      cancelled_amount=0, clawed_back=0, premium_revoked_s=0)
    session.add(payment)
    session.flush()
    return payment


def owned_payment(session: Session, payment_id: str, user_id: int) -> Payment:
    """The user's payment; someone else's is as absent as one that does not exist (404)."""
    payment = session.scalar(select(Payment).where(Payment.payment_id == payment_id,
                                                   Payment.user_id == user_id))
    if payment is None:
        raise NotFound(f"you have no payment {payment_id!r}", code="payment_not_found")
    return payment


def payment_owner(session: Session, payment_id: str) -> int | None:
    return session.scalar(select(Payment.user_id).where(Payment.payment_id == payment_id))


def list_payments(session: Session, user_id: int, *, cursor: str | None = None,
                  limit: int = DEFAULT_PAGE_SIZE) -> Page[Payment]:
    """The user's payments, newest first."""
    check_limit(limit)
    query = select(Payment).where(Payment.user_id == user_id)
    if cursor is not None:
        query = query.where(Payment.id < decode_cursor(CURSOR_KIND, cursor))
    rows = list(session.scalars(query.order_by(Payment.id.desc()).limit(limit + 1)))
    return page_of(CURSOR_KIND, rows, limit, lambda payment: payment.id)


def webhook_seen(session: Session, webhook_id: str) -> bool:
    return session.scalar(select(HandledWebhook.id)
                          .where(HandledWebhook.webhook_id == webhook_id)) is not None


class DuplicateWebhook(Exception):
    """Another delivery of this webhook was handled first (concurrently)."""


def remember_webhook(session: Session, webhook_id: str, type: str,
                     payment_id: str | None) -> None:
    """Record the webhook as handled, in the transaction that handles it: a concurrent
    delivery of the same id waits on the UNIQUE key, then fails here and changes nothing."""
    session.add(HandledWebhook(webhook_id=webhook_id, type=type, payment_id=payment_id))
    try:
        session.flush()
    except IntegrityError as exc:
        raise DuplicateWebhook(webhook_id) from exc
