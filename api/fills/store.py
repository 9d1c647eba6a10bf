"""The fills worker's SQL: reading resting orders, filling one order from one tick, expiring DAY
orders, finding the reservation orders to activate and the GTC orders to check against a new
day's band. Each function is one unit of work for `Database`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from api.fills.matching import RestingOrder, after
from api.ledger.service import take_user_lock
from api.market.rules import Costs
from api.models import (
    ACTIVE_ORDER_STATUSES,
    LIVE_ORDER_STATUSES,
    Fill,
    FillRule,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    TradePrint,
)
from api.orders import prints
from api.orders.checks import marketable
from api.orders.execution import Tick, apply_fill, lock_or_open_position, lock_position
from api.orders.prints import take_volume
from relayer.krx import Market, PriceRules, SecurityKind, price_rules
from relayer.market_calendar import Session as MarketSession

# A closing auction's price prints at the close, or a moment after it (the simulator's and
# relayer's delays): it still fills the DAY orders of the day it closes, and they expire only
# once this has passed after their close (api.fills.worker), so that the print finds them live.
CLOSING_PRINT_GRACE = timedelta(seconds=60)


def resting_orders(session: Session, codes: set[str]) -> list[RestingOrder]:
    """Live resting orders on these codes, and every one the worker has not checked yet (on any
    code: it may need ticks from earlier batches). Only a resting order has a `rests_after`
    (api.orders.checks.rests)."""
    rows = session.execute(
        select(Order.id, Order.user_id, Order.code, Order.side, Order.price, Order.rests_after,
               Order.checked_upto, Order.quantity, Order.filled_quantity)
        .where(Order.status.in_(ACTIVE_ORDER_STATUSES), Order.rests_after.is_not(None),
               or_(Order.code.in_(codes), Order.checked_upto.is_(None)))
    ).all()
    return [RestingOrder(id=row.id, user_id=row.user_id, code=row.code, side=Side(row.side),
                         price=row.price, rests_after=row.rests_after,
                         checked=row.checked_upto is not None,
                         remaining=row.quantity - row.filled_quantity) for row in rows]


def volume_left(session: Session, tick: Tick, side: Side) -> int:
    """What the tick has left for this side, read without a lock (less than its volume when
    orders arriving in the API took from it, or when the tick is processed again)."""
    return prints.volume_left(session, tick, side)


def volumes_left(session: Session, ticks: list[Tick]) -> dict[tuple[str, Side], int]:
    """`volume_left` of every tick and side, in one query (a batch's hints)."""
    left = {(tick.id, side): tick.volume for tick in ticks for side in Side}
    if ticks:
        for row in session.execute(select(TradePrint.print_id, TradePrint.side,
                                          TradePrint.volume, TradePrint.consumed)
                                   .where(TradePrint.print_id.in_([t.id for t in ticks]))):
            left[(row.print_id, Side(row.side))] = row.volume - row.consumed
    return left


def batch_start(session: Session,
                ticks: list[Tick]) -> tuple[list[RestingOrder], dict[tuple[str, Side], int]]:
    """What a batch of ticks starts from, in one transaction: the resting orders on their codes
    (`resting_orders`) and what each print has left (`volumes_left`)."""
    return resting_orders(session, {tick.code for tick in ticks}), volumes_left(session, ticks)


def fill_from_tick(session: Session, resting: RestingOrder, tick: Tick, costs: Costs) -> int:
    """Fill one order from one tick: a resting limit order at its limit price from a trade in
    the continuous session, for at most what the print has left (taken from its locked row,
    api.orders.prints); from a call auction's print, at that single price (rule
    `auction_price`), a limit order that crosses it for what the print has left, a market
    order waiting for it in full (market orders do not draw on a print's volume, as in the
    continuous session). Everything is checked again on the locked rows (the order may have
    been cancelled, modified or filled since it was read); returns the shares filled (0:
    none)."""
    account = take_user_lock(session, resting.user_id)
    order = session.scalar(select(Order).where(Order.id == resting.id).with_for_update()
                           .execution_options(populate_existing=True))
    if (order is None or order.status not in ACTIVE_ORDER_STATUSES
            or order.rests_after is None or not after(tick.id, order.rests_after)):
        return 0
    if order.price is None:
        if not tick.is_auction:
            return 0  # a market order that waits for an auction's price takes no other
    elif not marketable(Side(order.side), order.price, tick.price):
        return 0
    if order.expires_at is not None and tick_time(tick) >= last_fill_time(order.expires_at,
                                                                        tick):
        return 0  # printed after the session close: the order is due to expire instead
    if session.scalar(select(Fill.id).where(Fill.order_id == order.id,
                                            Fill.tick_id == tick.id)) is not None:
        return 0  # this tick already filled this order (the tick is being processed again)
    side = Side(order.side)
    # The position before the print (the lock order); a buy's position is opened only once
    # the print has given something, so that an exhausted print leaves no empty row.
    position = lock_position(session, order.user_id, order.code)
    quantity = (order.remaining_quantity if order.price is None
                else take_volume(session, tick, side, order.remaining_quantity))
    if quantity == 0:
        return 0
    if position is None:
        position = lock_or_open_position(session, order.user_id, order.code)
    if tick.is_auction:
        # A market order fills in full: what its rest still needs afterwards is nothing,
        # whatever price it was reserved at.
        reserve_at = tick.price if order.price is None else order.price
        apply_fill(session, account, order, position, tick, quantity, tick.price, costs,
                   reserve_at, FillRule.AUCTION_PRICE)
    else:
        assert order.price is not None
        apply_fill(session, account, order, position, tick, quantity, order.price, costs,
                   order.price, FillRule.RESTING_LIMIT)
    return quantity


def last_fill_time(expires_at: datetime, tick: Tick) -> datetime:
    """Until when a print may fill an order expiring at `expires_at`: its close, or, for the
    closing auction's print, a grace after it (CLOSING_PRINT_GRACE)."""
    if tick.session == MarketSession.CLOSING_AUCTION.value:
        return expires_at + CLOSING_PRINT_GRACE
    return expires_at


def tick_time(tick: Tick) -> datetime:
    """When the tick printed: the stream entry id's milliseconds (Redis's clock when the relayer
    wrote it), which every tick has, unlike a readable upstream time."""
    return datetime.fromtimestamp(int(tick.id.partition("-")[0]) / 1000, UTC)


def mark_checked(session: Session, order_ids: list[int], upto: str) -> None:
    """Record that these orders have been looked at up to this stream entry."""
    if order_ids:
        session.execute(update(Order).where(Order.id.in_(order_ids),
                                            Order.checked_upto.is_(None))
                        .values(checked_upto=upto))


def due_for_expiry(session: Session, now: datetime,
                   limit: int = 200) -> list[tuple[int, int, datetime]]:
    """(order id, user id, expiry) of active orders whose session has closed. A reservation
    order is not among them: it is activated first, then expires with its day."""
    rows = session.execute(select(Order.id, Order.user_id, Order.expires_at)
                           .where(Order.status.in_(ACTIVE_ORDER_STATUSES),
                                  Order.expires_at <= now)
                           .order_by(Order.expires_at).limit(limit)).all()
    return [(row.id, row.user_id, row.expires_at) for row in rows]


@dataclass(frozen=True, slots=True)
class DueReservation:
    """A reservation order whose opening auction has come (checked again when locked)."""

    id: int
    user_id: int
    code: str
    price: int | None
    activates_at: datetime
    rules: PriceRules  # the instrument's grid and limits, from the order's market and kind


def due_for_activation(session: Session, now: datetime,
                       limit: int = 500) -> list[DueReservation]:
    """The reservation orders to activate at `now`, the earliest placed first (they rest in
    that time priority)."""
    rows = session.execute(select(Order.id, Order.user_id, Order.code, Order.price,
                                  Order.activates_at, Order.market, Order.security_kind)
                           .where(Order.status == OrderStatus.RESERVED.value,
                                  Order.activates_at <= now)
                           .order_by(Order.id).limit(limit)).all()
    return [DueReservation(row.id, row.user_id, row.code, row.price, row.activates_at,
                           price_rules(Market(row.market), SecurityKind(row.security_kind)))
            for row in rows]


@dataclass(frozen=True, slots=True)
class LiveGtc:
    """A live GTC order as the new day's band check reads it (checked again when locked)."""

    id: int
    user_id: int
    code: str
    price: int
    rules: PriceRules  # the instrument's grid and limits, from the order's market and kind


def live_gtc_orders(session: Session, after_id: int = 0, limit: int = 500) -> list[LiveGtc]:
    """Live GTC orders by id, from `after_id`: the ones to check against a new day's band."""
    rows = session.execute(select(Order.id, Order.user_id, Order.code, Order.price,
                                  Order.market, Order.security_kind)
                           .where(Order.status.in_(LIVE_ORDER_STATUSES),
                                  Order.time_in_force == TimeInForce.GTC.value,
                                  Order.type == OrderType.LIMIT.value, Order.id > after_id)
                           .order_by(Order.id).limit(limit)).all()
    return [LiveGtc(row.id, row.user_id, row.code, row.price,
                    price_rules(Market(row.market), SecurityKind(row.security_kind)))
            for row in rows if row.price is not None]
