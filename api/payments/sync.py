"""Applying what PortOne says of a payment to our record: the one place a payment grants or
takes back what it bought. `complete` and the webhook both end here.

`apply_remote` is a SQL unit of work (run with `Database.run_retrying`). It locks the payment
row first (`SELECT ... FOR UPDATE`), then the account or user it credits; nothing locks those
in the other order. A cash payment credits `payment.account_id`, the portfolio chosen at
prepare, and a refund takes back from that same account; premium is always the payer's
(`user_id`). If the chosen portfolio was deleted before the payment was granted, the cash goes
to the payer's default portfolio instead, and `account_id` says so from then on (see
`credited_account`). Under the payment lock any number of concurrent or repeated syncs are
serialised, and each one acts only on what has changed since the last: the product is granted
when `paid_at` is still null, and a refund is taken back only for the part of
`cancelled_amount` not seen before. The ledger's UNIQUE (type, reference) is the second guard:
a PAYMENT row's reference is the payment id.

Rules (docs/PAYMENTS.md):
- PortOne's answer must match the record: payment id, store, amount, currency and order name.
  A payment that does not match before it was granted becomes MISMATCH (final), grants nothing,
  and is logged as an alert.
- PAID or PARTIAL_CANCELLED, not yet granted -> grant (cash through the ledger, or premium days).
- PARTIAL_CANCELLED or CANCELLED, granted -> take back the cancelled share (clawback).
- CANCELLED, never granted -> CANCELLED, nothing to grant or take back. CANCELLED is final.
- FAILED, not granted -> FAILED (PortOne lets the buyer try again with the same payment id, so a
  later PAID still grants).
- READY, PAY_PENDING, VIRTUAL_ACCOUNT_ISSUED -> still PREPARED.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import NotFound
from api.ledger.service import claw_back, collect_clawback, post, take_user_lock
from api.models import Account, LedgerType, Payment, PaymentStatus, Portfolio, User, utc_now
from api.payments.catalog import ProductKind
from api.payments.portone import RemotePayment

logger = logging.getLogger(__name__)

DAY_S = 24 * 3600
FINAL = frozenset({PaymentStatus.CANCELLED.value, PaymentStatus.MISMATCH.value})


def lock_payment(session: Session, payment_id: str) -> Payment:
    payment = session.scalar(select(Payment).where(Payment.payment_id == payment_id)
                             .with_for_update().execution_options(populate_existing=True))
    if payment is None:
        raise NotFound(f"there is no payment {payment_id!r}", code="payment_not_found")
    return payment


def mismatches(payment: Payment, remote: RemotePayment, store_id: str) -> list[str]:
    """How PortOne's payment differs from what was prepared; empty when it matches."""
    expected = {"payment id": payment.payment_id, "store": store_id,
                "amount": payment.amount, "currency": payment.currency,
                "order name": payment.order_name}
    seen = {"payment id": remote.payment_id, "store": remote.store_id,
            "amount": remote.total, "currency": remote.currency,
            "order name": remote.order_name}
    return [f"{what}: expected {expected[what]!r}, PortOne says {seen[what]!r}"
            for what in expected if expected[what] != seen[what]]


def apply_remote(session: Session, payment_id: str, remote: RemotePayment,
                 store_id: str) -> Payment:
    payment = lock_payment(session, payment_id)
    payment.portone_status = remote.status
    if payment.status in FINAL:
        return payment
    differences = mismatches(payment, remote, store_id)
    if differences:
        # ALERT: money may have moved at PortOne that does not match what we sold.
        logger.error("ALERT payment %s (user %d) does not match PortOne (%s): %s",
                     payment.payment_id, payment.user_id, remote.status, "; ".join(differences))
        if not payment.granted:
            payment.status = PaymentStatus.MISMATCH.value
            payment.mismatch = "; ".join(differences)[:255]
        return payment

    now = utc_now()
    if remote.status in ("PAID", "PARTIAL_CANCELLED") and not payment.granted:
        grant(session, payment, now)
    if remote.status in ("PARTIAL_CANCELLED", "CANCELLED") and payment.granted:
        take_back(session, payment, remote.cancelled, now)
    payment.status = status_after(payment, remote).value
    return payment


def status_after(payment: Payment, remote: RemotePayment) -> PaymentStatus:
    if payment.granted:
        # From the refunds seen so far, which only grow: an older answer applied after a newer
        # one (two syncs racing) cannot move the status back.
        if payment.cancelled_amount == 0:
            return PaymentStatus.PAID
        if payment.cancelled_amount < payment.amount:
            return PaymentStatus.PARTIAL_CANCELLED
        return PaymentStatus.CANCELLED
    if remote.status == "CANCELLED":
        return PaymentStatus.CANCELLED
    if remote.status == "FAILED":
        return PaymentStatus.FAILED
    return PaymentStatus.PREPARED  # READY, PAY_PENDING, VIRTUAL_ACCOUNT_ISSUED at PortOne


def grant(session: Session, payment: Payment, now: datetime) -> None:
    """Give the buyer what the payment bought, once (`paid_at` records that it was)."""
    payment.paid_at = now
    if payment.kind == ProductKind.CASH:
        account = credited_account(session, payment)
        post(session, account, LedgerType.PAYMENT, payment.credit, payment.payment_id)
        collect_clawback(session, account)
    else:
        user = lock_user(session, payment.user_id)
        start = max(now, user.premium_until or now)
        user.premium_until = start + timedelta(days=payment.premium_days)
    logger.info("payment %s granted to user %d (account %d): %s", payment.payment_id,
                payment.user_id, payment.account_id, payment.product_id)


def credited_account(session: Session, payment: Payment) -> Account:
    """The locked account a cash payment is credited to: the portfolio chosen at prepare while
    it is live; the payer's default portfolio (his own account) if it was deleted since, so that
    cash paid for with real money lands where he sees it rather than in a portfolio that
    answers 404 everywhere. `account_id` is moved with it, and a later refund takes back from
    there.

    Deletion is checked under the chosen account's lock, the lock deleting a portfolio takes:
    either the credit commits first (and the portfolio is then deleted holding it, as any
    portfolio with cash may be), or the deletion does and is seen here (READ COMMITTED on
    MariaDB, one writer at a time on SQLite)."""
    account = take_user_lock(session, payment.account_id)
    if payment.account_id == payment.user_id:
        return account  # the default portfolio, which is never deleted
    deleted_at = session.scalar(select(Portfolio.deleted_at)
                                .where(Portfolio.account_id == payment.account_id))
    if deleted_at is None:
        return account
    logger.warning("payment %s: portfolio account %d was deleted at %s; crediting user %d's "
                   "default portfolio instead", payment.payment_id, payment.account_id,
                   deleted_at.isoformat(), payment.user_id)
    payment.account_id = payment.user_id
    return take_user_lock(session, payment.user_id)


def take_back(session: Session, payment: Payment, cancelled: int, now: datetime) -> None:
    """Take back the share of a granted payment that PortOne reports refunded, beyond what was
    already taken: cash through the ledger (what is not available is owed), premium time from
    the end of the user's premium period (never before now: time used is used)."""
    cancelled = min(cancelled, payment.amount)
    if cancelled <= payment.cancelled_amount:
        return
    payment.cancelled_amount = cancelled
    if payment.kind == ProductKind.CASH:
        target = payment.credit * cancelled // payment.amount
        delta, payment.clawed_back = target - payment.clawed_back, target
        # From the account it credited, even a portfolio deleted since: its cash stayed there
        # (deleting moves no cash), and what is owed there is owed by nobody who can spend it.
        account = take_user_lock(session, payment.account_id)
        owed = claw_back(session, account, delta,
                         reference=f"{payment.payment_id}@{cancelled}")
        logger.warning("payment %s refunded %d of %d %s: %d virtual KRW taken back from user "
                       "%d's account %d (%d of it owed)", payment.payment_id, cancelled,
                       payment.amount, payment.currency, delta, payment.user_id,
                       payment.account_id, owed)
    else:
        target_s = payment.premium_days * DAY_S * cancelled // payment.amount
        delta_s, payment.premium_revoked_s = target_s - payment.premium_revoked_s, target_s
        user = lock_user(session, payment.user_id)
        if user.premium_until is not None:
            user.premium_until = max(now, user.premium_until - timedelta(seconds=delta_s))
        logger.warning("payment %s refunded %d of %d %s: %d s of premium taken back from user "
                       "%d", payment.payment_id, cancelled, payment.amount, payment.currency,
                       delta_s, payment.user_id)


def lock_user(session: Session, user_id: int) -> User:
    user = session.scalar(select(User).where(User.id == user_id).with_for_update()
                          .execution_options(populate_existing=True))
    if user is None:
        raise NotFound("this user does not exist", code="user_not_found")
    return user
