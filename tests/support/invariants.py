"""The money invariants of docs/TRADING.md, checked against the database after tests that
move money: they must hold after any sequence of requests, concurrent or not."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.db import Database
from api.models import (
    LIVE_ORDER_STATUSES,
    Account,
    Fill,
    LedgerEntry,
    LedgerType,
    Order,
    Payment,
    PaymentStatus,
    Position,
    Side,
)

T = TypeVar("T")

TRADING = {LedgerType.BUY.value, LedgerType.SELL.value, LedgerType.FEE.value,
           LedgerType.TAX.value}


def check_ledger(session: Session, user_id: int | None = None) -> None:
    """For every account (or one user's): cash == sum of its ledger, each row continues the one
    before, and cash and held cash are within bounds."""
    for account in session.scalars(_mine(select(Account), Account, user_id)):
        rows = list(session.scalars(select(LedgerEntry).where(
            LedgerEntry.user_id == account.user_id).order_by(LedgerEntry.id)))
        assert account.cash == sum(row.amount for row in rows), account.user_id
        assert 0 <= account.held_cash <= account.cash
        for row in rows:
            assert row.balance_after == row.balance_before + row.amount >= 0
        for earlier, later in pairwise(rows):
            assert later.balance_before == earlier.balance_after
        if rows:
            assert rows[0].balance_before == 0 and rows[-1].balance_after == account.cash


def check_trading(session: Session, user_id: int | None = None) -> None:
    """Holds equal what live orders reserve; positions equal the sum of their fills; an order's
    filled quantity and value equal its fills; trading cash flows equal realized P&L minus the
    book cost still held. For every user, or one."""
    orders = list(session.scalars(_mine(select(Order), Order, user_id)))
    fills = list(session.scalars(_mine(select(Fill), Fill, user_id)))
    held_cash: dict[int, int] = defaultdict(int)
    held_shares: dict[tuple[int, str], int] = defaultdict(int)
    for order in orders:
        mine = [f for f in fills if f.order_id == order.id]
        assert order.filled_quantity == sum(f.quantity for f in mine), order.id
        assert order.filled_value == sum(f.value for f in mine), order.id
        assert 0 <= order.filled_quantity <= order.quantity
        if order.status in LIVE_ORDER_STATUSES:
            if order.side == Side.BUY:
                held_cash[order.user_id] += order.held_cash
            else:
                held_shares[(order.user_id, order.code)] += order.remaining_quantity
        else:
            assert order.held_cash == 0, order.id
    shares: dict[tuple[int, str], int] = defaultdict(int)
    for fill in fills:
        shares[(fill.user_id, fill.code)] += fill.quantity if fill.side == Side.BUY \
            else -fill.quantity
    positions = {(p.user_id, p.code): p
                 for p in session.scalars(_mine(select(Position), Position, user_id))}
    for key, quantity in shares.items():
        assert positions[key].quantity == quantity, key
    for key, position in positions.items():
        assert 0 <= position.held_quantity <= position.quantity
        assert position.held_quantity == held_shares.get(key, 0), key
        assert position.quantity == shares.get(key, 0), key
        if position.quantity == 0:
            assert position.cost_basis == 0, key
    for account in session.scalars(_mine(select(Account), Account, user_id)):
        assert account.held_cash == held_cash.get(account.user_id, 0), account.user_id
        flows = sum(session.scalars(select(LedgerEntry.amount).where(
            LedgerEntry.user_id == account.user_id, LedgerEntry.type.in_(TRADING))))
        own = [p for p in positions.values() if p.user_id == account.user_id]
        assert flows == sum(p.realized_pnl - p.cost_basis for p in own), account.user_id


def check_payments(session: Session, user_id: int | None = None) -> None:
    """Every PAYMENT row credits a granted cash payment of its user, once and in full; what
    refunds took back (REFUND rows, plus what is still owed) is what the payments record as
    clawed back; only granted payments are PAID or refunded."""
    payments = list(session.scalars(_mine(select(Payment), Payment, user_id)))
    by_id = {payment.payment_id: payment for payment in payments}
    credits = list(session.scalars(_mine(select(LedgerEntry), LedgerEntry, user_id)
                                   .where(LedgerEntry.type == LedgerType.PAYMENT.value)))
    assert len({row.reference for row in credits}) == len(credits)
    for row in credits:
        payment = by_id[str(row.reference)]
        assert payment.user_id == row.user_id and payment.granted, payment.payment_id
        assert row.amount == payment.credit, payment.payment_id
    credited = {str(row.reference) for row in credits}
    for payment in payments:
        granted_cash = payment.granted and payment.kind == "CASH"
        assert (payment.payment_id in credited) == granted_cash, payment.payment_id
        if payment.status in (PaymentStatus.PAID, PaymentStatus.PARTIAL_CANCELLED):
            assert payment.granted, payment.payment_id
        if payment.status in (PaymentStatus.PREPARED, PaymentStatus.FAILED,
                              PaymentStatus.MISMATCH):
            assert not payment.granted and payment.clawed_back == 0, payment.payment_id
        if payment.kind == "CASH":
            assert payment.clawed_back == (payment.credit * payment.cancelled_amount
                                           // payment.amount), payment.payment_id
    for account in session.scalars(_mine(select(Account), Account, user_id)):
        refunded = -sum(session.scalars(select(LedgerEntry.amount).where(
            LedgerEntry.user_id == account.user_id,
            LedgerEntry.type == LedgerType.REFUND.value)))
        clawed = sum(p.clawed_back for p in payments if p.user_id == account.user_id)
        assert refunded + account.clawback_due == clawed, account.user_id


def _mine(query: Select[T], model: Any, user_id: int | None) -> Select[T]:
    return query if user_id is None else query.where(model.user_id == user_id)


def assert_invariants(db: Database) -> None:
    db.call(check_ledger)
    db.call(check_trading)
    db.call(check_payments)
