"""The fills worker's SQL: reading resting orders, filling one order from one tick, expiring DAY
orders, purging old idempotency keys. Each function is one unit of work for `Database`."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from api.fills.matching import RestingOrder, Tick, after
from api.ledger.service import lock_account
from api.market.rules import Costs
from api.models import (
    LIVE_ORDER_STATUSES,
    Fill,
    Order,
    OrderType,
    Side,
)
from api.orders.checks import marketable
from api.orders.execution import PricingTick, apply_fill, lock_or_open_position


def resting_orders(session: Session, codes: set[str]) -> list[RestingOrder]:
    """Live resting limit orders on these codes, and every one the worker has not checked yet
    (on any code: it may need ticks from earlier batches)."""
    rows = session.execute(
        select(Order.id, Order.user_id, Order.code, Order.side, Order.price, Order.rests_after,
               Order.checked_upto)
        .where(Order.status.in_(LIVE_ORDER_STATUSES), Order.type == OrderType.LIMIT.value,
               Order.rests_after.is_not(None),
               or_(Order.code.in_(codes), Order.checked_upto.is_(None)))
    ).all()
    return [RestingOrder(id=row.id, user_id=row.user_id, code=row.code, side=Side(row.side),
                         price=row.price, rests_after=row.rests_after,
                         checked=row.checked_upto is not None) for row in rows]


def volume_taken(session: Session, tick_id: str, side: Side) -> int:
    """Shares of this tick already filled on this side (non-zero when a tick is processed
    again, after a restart)."""
    return int(session.scalar(select(func.coalesce(func.sum(Fill.quantity), 0))
                              .where(Fill.tick_id == tick_id, Fill.side == side.value)) or 0)


def fill_from_tick(session: Session, resting: RestingOrder, tick: Tick, volume_left: int,
                   costs: Costs) -> int:
    """Fill one order from one tick, for at most `volume_left` shares, at its limit price.
    Everything is checked again on the locked rows (the order may have been cancelled,
    modified or filled since it was read); returns the shares filled (0: none)."""
    account = lock_account(session, resting.user_id)
    order = session.scalar(select(Order).where(Order.id == resting.id).with_for_update()
                           .execution_options(populate_existing=True))
    if (order is None or not order.is_live or order.price is None or order.rests_after is None
            or not after(tick.id, order.rests_after)
            or not marketable(Side(order.side), order.price, tick.price)):
        return 0
    if order.expires_at is not None and _tick_time(tick) >= order.expires_at:
        return 0  # printed after the session close: the order is due to expire instead
    if session.scalar(select(Fill.id).where(Fill.order_id == order.id,
                                            Fill.tick_id == tick.id)) is not None:
        return 0  # this tick already filled this order (the tick is being processed again)
    quantity = min(order.remaining_quantity, volume_left)
    if quantity <= 0:
        return 0
    position = lock_or_open_position(session, order.user_id, order.code)
    apply_fill(session, account, order, position,
               PricingTick(tick.id, tick.price, tick.volume, tick.seq, tick.ts),
               quantity, order.price, costs, order.price)
    return quantity


def _tick_time(tick: Tick) -> datetime:
    """When the tick printed: the stream entry id's milliseconds (Redis's clock when the relayer
    wrote it), which every tick has, unlike a readable upstream time."""
    return datetime.fromtimestamp(int(tick.id.partition("-")[0]) / 1000, UTC)


def mark_checked(session: Session, order_ids: list[int], upto: str) -> None:
    """Record that these orders have been looked at up to this stream entry."""
    if order_ids:
        session.execute(update(Order).where(Order.id.in_(order_ids),
                                            Order.checked_upto.is_(None))
                        .values(checked_upto=upto))


def due_for_expiry(session: Session, now: datetime, limit: int = 200) -> list[tuple[int, int]]:
    """(order id, user id) of live orders whose session has closed."""
    rows = session.execute(select(Order.id, Order.user_id)
                           .where(Order.status.in_(LIVE_ORDER_STATUSES),
                                  Order.expires_at <= now)
                           .order_by(Order.expires_at).limit(limit)).all()
    return [(row.id, row.user_id) for row in rows]
