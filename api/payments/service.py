"""Payments as SQL units of work: prepare one, read them, remember handled webhooks. What
PortOne says of a payment is applied by `api.payments.sync`."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import NotFound
from api.ledger.service import get_account
from api.models import Payment, PaymentStatus, WebhookEvent
from api.pagination import DEFAULT_PAGE_SIZE, Page, check_limit, decode_cursor, page_of
from api.payments.catalog import Product

CURSOR_KIND = "pay"


def new_payment_id() -> str:
    """Ours, not the client's: PortOne's paymentId, unguessable and unique."""
    return f"pay_{uuid.uuid4().hex}"


def prepare(session: Session, user_id: int, product: Product) -> Payment:
    """A PREPARED payment for the product, owned by the user, with the product's terms."""
    # The payment will credit this account: it must exist, and a token whose user is gone gets
    # its 401 here rather than a foreign-key error at the insert.
    get_account(session, user_id)
    payment = Payment(payment_id=new_payment_id(), user_id=user_id, product_id=product.id,
                      kind=product.kind.value, order_name=product.name, amount=product.price,
                      currency=product.currency, credit=product.credit,
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
    return session.scalar(select(WebhookEvent.id)
                          .where(WebhookEvent.webhook_id == webhook_id)) is not None


class DuplicateWebhook(Exception):
    """Another delivery of this webhook was handled first (concurrently)."""


def remember_webhook(session: Session, webhook_id: str, type: str,
                     payment_id: str | None) -> None:
    """Record the webhook as handled, in the transaction that handles it: a concurrent
    delivery of the same id waits on the UNIQUE key, then fails here and changes nothing."""
    session.add(WebhookEvent(webhook_id=webhook_id, type=type, payment_id=payment_id))
    try:
        session.flush()
    except IntegrityError as exc:
        raise DuplicateWebhook(webhook_id) from exc
