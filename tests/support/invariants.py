"""The money invariants of docs/TRADING.md, checked against the database after tests that
move money: they must hold after any sequence of requests, concurrent or not."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.db import Database
from api.fills.worker import PRINT_PURGE_MARGIN
from api.models import (
    LIVE_ORDER_STATUSES,
    Account,
    Fill,
    LedgerEntry,
    LedgerType,
    Order,
    OrderStatus,
    OrderType,
    Payment,
    PaymentStatus,
    Position,
    Side,
    TradePrint,
    UserEvent,
    UserEventWatermark,
)

T = TypeVar("T")

TRADING = {LedgerType.BUY.value, LedgerType.SELL.value, LedgerType.FEE.value,
           LedgerType.TAX.value}


def check_ledger(session: Session, user_id: int | None = None) -> None:
    """For every account (or one user's): cash == sum of its ledger (and fees and taxes paid ==
    its FEE and TAX rows), each row continues the one before, and cash and held cash are within
    bounds."""
    for account in session.scalars(_mine(select(Account), Account, user_id)):
        rows = list(session.scalars(select(LedgerEntry).where(
            LedgerEntry.user_id == account.user_id).order_by(LedgerEntry.id)))
        assert account.cash == sum(row.amount for row in rows), account.user_id
        # The running totals of costs are the ledger's too.
        assert account.fees_paid == -sum(r.amount for r in rows if r.type == LedgerType.FEE.value)
        assert account.taxes_paid == -sum(r.amount for r in rows if r.type == LedgerType.TAX.value)
        assert 0 <= account.held_cash <= account.cash
        for row in rows:
            assert row.balance_after == row.balance_before + row.amount >= 0
        for earlier, later in pairwise(rows):
            assert later.balance_before == earlier.balance_after
        if rows:
            assert rows[0].balance_before == 0 and rows[-1].balance_after == account.cash


def check_trading(session: Session, user_id: int | None = None) -> None:
    """Holds equal what live orders reserve; positions equal the sum of their fills; an order's
    filled quantity and value equal its fills; a position's realized P&L equals the sum of its
    sales' realized P&L; trading cash flows equal realized P&L minus the book cost still held.
    For every user, or one."""
    orders = list(session.scalars(_mine(select(Order), Order, user_id)))
    fills = list(session.scalars(_mine(select(Fill), Fill, user_id)))
    held_cash: dict[int, int] = defaultdict(int)
    held_shares: dict[tuple[int, str], int] = defaultdict(int)
    for order in orders:
        mine = [f for f in fills if f.order_id == order.id]
        assert order.filled_quantity == sum(f.quantity for f in mine), order.id
        assert order.filled_value == sum(f.value for f in mine), order.id
        assert 0 <= order.filled_quantity <= order.quantity
        if order.status == OrderStatus.RESERVED:
            # Not in the market yet: nothing filled, nothing listens to ticks, due at its
            # opening auction. It holds like an active order (below).
            assert not mine and order.rests_after is None and order.activates_at, order.id
        if order.status in LIVE_ORDER_STATUSES:
            if order.side == Side.BUY:
                held_cash[order.user_id] += order.held_cash
            else:
                held_shares[(order.user_id, order.code)] += order.remaining_quantity
        else:
            assert order.held_cash == 0, order.id
    shares: dict[tuple[int, str], int] = defaultdict(int)
    purchase_values: dict[tuple[int, str], int] = defaultdict(int)
    sales_pnl: dict[tuple[int, str], int] = defaultdict(int)
    for fill in sorted(fills, key=lambda f: f.id):
        key = (fill.user_id, fill.code)
        # A sale carries its realized P&L, net of its costs and the book cost it took; a buy
        # carries neither.
        if fill.side == Side.SELL:
            assert fill.realized_pnl is not None and fill.cost_basis_sold is not None, fill.id
            assert fill.realized_pnl == (fill.value - fill.commission - fill.tax
                                         - fill.cost_basis_sold), fill.id
            sales_pnl[key] += fill.realized_pnl
        else:
            assert fill.realized_pnl is None and fill.cost_basis_sold is None, fill.id
        # A fill's tax is its two components; a buy pays none.
        assert fill.tax == fill.securities_transaction_tax + fill.rural_special_tax, fill.id
        assert fill.side == Side.SELL or fill.tax == 0, fill.id
        # 매입평균가's purchase value, replayed: a buy adds its value, a sale takes the sold
        # shares' part (rounded down; all of it with the last share).
        if fill.side == Side.BUY:
            purchase_values[key] += fill.value
        elif fill.quantity == shares[key]:
            purchase_values[key] = 0
        else:
            purchase_values[key] -= purchase_values[key] * fill.quantity // shares[key]
        shares[key] += fill.quantity if fill.side == Side.BUY else -fill.quantity
    positions = {(p.user_id, p.code): p
                 for p in session.scalars(_mine(select(Position), Position, user_id))}
    for key, quantity in shares.items():
        assert positions[key].quantity == quantity, key
    for key, position in positions.items():
        assert 0 <= position.held_quantity <= position.quantity
        assert position.held_quantity == held_shares.get(key, 0), key
        assert position.quantity == shares.get(key, 0), key
        assert position.purchase_value == purchase_values.get(key, 0), key
        assert position.purchase_value <= position.cost_basis, key
        # A position's realized P&L is the sum of its sales' (migration 0013).
        assert position.realized_pnl == sales_pnl.get(key, 0), key
        if position.quantity == 0:
            assert position.cost_basis == 0, key
    for account in session.scalars(_mine(select(Account), Account, user_id)):
        assert account.held_cash == held_cash.get(account.user_id, 0), account.user_id
        flows = sum(session.scalars(select(LedgerEntry.amount).where(
            LedgerEntry.user_id == account.user_id, LedgerEntry.type.in_(TRADING))))
        own = [p for p in positions.values() if p.user_id == account.user_id]
        assert flows == sum(p.realized_pnl - p.cost_basis for p in own), account.user_id


def check_payments(session: Session, user_id: int | None = None) -> None:
    """Every PAYMENT row credits a granted cash payment of its account (`payment.account_id`,
    the portfolio chosen at prepare), once and in full; what refunds took back from an account
    (REFUND rows, plus what is still owed) is what its payments record as clawed back; only
    granted payments are PAID or refunded. For every account, or one."""
    payments = list(session.scalars(select(Payment) if user_id is None
                                    else select(Payment).where(Payment.account_id == user_id)))
    by_id = {payment.payment_id: payment for payment in payments}
    credits = list(session.scalars(_mine(select(LedgerEntry), LedgerEntry, user_id)
                                   .where(LedgerEntry.type == LedgerType.PAYMENT.value)))
    assert len({row.reference for row in credits}) == len(credits)
    for row in credits:
        payment = by_id[str(row.reference)]
        assert payment.account_id == row.user_id and payment.granted, payment.payment_id
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
        clawed = sum(p.clawed_back for p in payments if p.account_id == account.user_id)
        assert refunded + account.clawback_due == clawed, account.user_id


def check_prints(session: Session) -> None:
    """No print gives a side more than its volume (docs/TRADING.md, "One print's volume"): what
    its `trade_prints` row counts is exactly what limit orders filled from it on that side
    (market orders, at the last trade or at an auction's price, are not limited by printed
    volume), and never above its volume. A row may be
    missing only for a print whose fills are all older than the fills worker's purge margin
    (its print has left the stream, api.orders.prints.purge_prints)."""
    given: dict[tuple[str, str], int] = defaultdict(int)
    latest: dict[tuple[str, str], datetime] = {}
    for tick_id, side, quantity, created_at in session.execute(
            select(Fill.tick_id, Fill.side, Fill.quantity, Fill.created_at)
            .join(Order, Order.id == Fill.order_id)
            .where(Order.type != OrderType.MARKET.value)):
        given[tick_id, side] += quantity
        latest[tick_id, side] = max(created_at, latest.get((tick_id, side), created_at))
    counted = {(row.print_id, row.side): row for row in session.scalars(select(TradePrint))}
    purgeable_before = datetime.now(UTC) - PRINT_PURGE_MARGIN
    for key, quantity in given.items():
        if key not in counted:
            assert latest[key] < purgeable_before, f"print {key} filled {quantity} shares " \
                                                   "without its row"
            continue
        assert counted[key].consumed == quantity, (key, counted[key].consumed, quantity)
    for key, row in counted.items():
        assert 0 <= row.consumed <= row.volume, (key, row.consumed, row.volume)
        assert row.consumed == given.get(key, 0), (key, row.consumed, given.get(key, 0))


def check_events(session: Session) -> None:
    """The event log (api.streams.events) tells the same story as the tables, for every user
    whose events were never purged: each fill has exactly one fill event, with its order, and
    each order's latest order event shows it as it is now (its status and what has filled)."""
    purged = set(session.scalars(select(UserEventWatermark.user_id)))
    fill_events: dict[int, list[int]] = defaultdict(list)
    latest_order: dict[int, dict[str, Any]] = {}
    for row in session.scalars(select(UserEvent).order_by(UserEvent.id)):
        data = json.loads(row.data)
        if row.type == "fill":
            fill_events[data["id"]].append(data["order_id"])
        elif row.type == "order":
            latest_order[data["id"]] = data
    for fill in session.scalars(select(Fill).where(Fill.user_id.not_in(purged))):
        assert fill_events.get(fill.id) == [fill.order_id], (fill.id, fill_events.get(fill.id))
    for order in session.scalars(select(Order).where(Order.user_id.not_in(purged))):
        event = latest_order.get(order.id)
        assert event is not None, f"order {order.id} has no event"
        assert (event["status"], event["filled_quantity"], event["held_cash"]) == (
            order.status, order.filled_quantity, order.held_cash), (order.id, event)


def _mine(query: Select[T], model: Any, user_id: int | None) -> Select[T]:
    return query if user_id is None else query.where(model.user_id == user_id)


def assert_invariants(db: Database) -> None:
    db.call(check_ledger)
    db.call(check_trading)
    db.call(check_payments)
    db.call(check_prints)
    db.call(check_events)
