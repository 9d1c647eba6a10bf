"""Orders as SQL units of work, run with `Database.run_retrying` after the market snapshot has
been read (api.orders.snapshot). Every function locks the account first (the fixed lock order:
account, then order, then position), so one user's order requests are serialised and a check
of available cash or shares stays true until the commit. A refused request raises before
anything is written, or rolls back with its transaction: a refusal changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound, Unprocessable
from api.ledger.service import lock_account
from api.market.rules import Costs, PriceBand, session_close_after
from api.models import (
    LIVE_ORDER_STATUSES,
    Account,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
    utc_now,
)
from api.orders.checks import (
    OrderRequest,
    check_limit_price,
    check_quantity,
    marketable,
    require_quote,
)
from api.orders.execution import (
    PricingTick,
    apply_fill,
    hold,
    lock_or_open_position,
    lock_position,
    release,
)
from api.orders.snapshot import MarketSnapshot
from api.pagination import DEFAULT_PAGE_SIZE, Page, check_limit, decode_cursor, page_of

CURSOR_KIND = "ord"


@dataclass(frozen=True, slots=True)
class TradingRules:
    """The settings an order transaction needs, taken from ApiSettings once per request."""

    costs: Costs
    market_close_kst: time
    max_quantity: int
    max_open_orders: int


def _check_available(account: Account, position: Position | None, side: Side, quantity: int,
                     cash_needed: int) -> None:
    if side is Side.BUY:
        if cash_needed > account.available_cash:
            raise Unprocessable(
                f"not enough available cash: this order reserves {cash_needed} KRW "
                f"(value plus commission), {account.available_cash} KRW available",
                code="insufficient_funds", required=cash_needed,
                available_cash=account.available_cash)
    else:
        available = 0 if position is None else position.available_quantity
        if quantity > available:
            raise Unprocessable(
                f"not enough shares: selling {quantity}, {available} available (shares held "
                "by other open sell orders are not available)",
                code="insufficient_shares", available_quantity=available)


def _check_room_for_open_order(session: Session, user_id: int, max_open: int) -> None:
    """409 `too_many_open_orders` when the user already has `max_open` live orders. Only a
    resting order can add one (the others end in their request), so only it pays for this
    count; under the account lock the caller holds, the count stays true until the commit."""
    live = session.scalar(select(func.count()).select_from(Order).where(
        Order.user_id == user_id, Order.status.in_(LIVE_ORDER_STATUSES))) or 0
    if live >= max_open:
        raise Conflict(f"you have {live} open orders, the most allowed: cancel one, or wait for "
                       "one to fill or expire", code="too_many_open_orders",
                       max_open_orders=max_open)


def _quote_tick(snapshot: MarketSnapshot) -> PricingTick:
    quote = require_quote(snapshot)
    return PricingTick(tick_id=f"quote:{quote.seq}", price=quote.price, volume=quote.volume,
                       seq=quote.seq, ts=quote.ts)


def place(session: Session, account: Account, request: OrderRequest, snapshot: MarketSnapshot,
          band: PriceBand, rules: TradingRules) -> tuple[Order, list[Fill]]:
    """Accept an order (already checked by api.orders.checks.validate) for the owner of the
    locked `account`: reserve what it needs, then execute it at once (market, IOC, FOK) or
    leave it resting (DAY, GTC). Returns the order and the fills made now."""
    user_id = account.user_id
    if request.client_order_id is not None and session.scalar(
            select(Order.id).where(Order.user_id == user_id,
                                   Order.client_order_id == request.client_order_id)):
        raise Conflict(f"an order with client_order_id {request.client_order_id!r} exists",
                       code="duplicate_client_order_id")
    resting = request.type is OrderType.LIMIT and request.time_in_force in (TimeInForce.DAY,
                                                                            TimeInForce.GTC)
    if resting:
        _check_room_for_open_order(session, user_id, rules.max_open_orders)
    # Locked before the order is written, so that its lock read flushes nothing (two UPDATEs
    # fewer per order executed at once); a new order row is no one else's to wait on.
    position = (lock_position(session, user_id, request.code) if request.side is Side.SELL
                else None if resting else lock_or_open_position(session, user_id, request.code))
    quote = require_quote(snapshot)
    # A market buy reserves at the upper limit: the most it could cost.
    reserve_at = request.price if request.price is not None else max(band.upper, quote.price)
    cash_needed = (rules.costs.buy_reservation(request.quantity, reserve_at)
                   if request.side is Side.BUY else 0)
    _check_available(account, position, request.side, request.quantity, cash_needed)

    now = utc_now()
    order = Order(
        user_id=user_id, client_order_id=request.client_order_id, code=request.code,
        side=request.side.value, type=request.type.value,
        time_in_force=request.time_in_force.value, quantity=request.quantity,
        price=request.price, status=OrderStatus.OPEN.value, filled_quantity=0,
        filled_value=0, held_cash=0,
        rests_after=snapshot.stream_last_id if resting else None,
        expires_at=(session_close_after(now, rules.market_close_kst).astimezone(UTC)
                    if resting and request.time_in_force is TimeInForce.DAY else None),
        created_at=now, updated_at=now)
    session.add(order)
    session.flush()  # the order's id, which its fills refer to
    hold(account, order, position, rules.costs, reserve_at)
    fills: list[Fill] = []
    if not resting:
        assert position is not None
        fills = _execute_at_once(session, account, order, position, snapshot, reserve_at,
                                 rules.costs)
    session.flush()
    return order, fills


def _execute_at_once(session: Session, account: Account, order: Order, position: Position,
                     snapshot: MarketSnapshot, reserve_at: int, costs: Costs) -> list[Fill]:
    """A market order fills completely at the last trade price. An IOC or FOK limit order
    fills at its limit price if the last trade is at or through it, for at most the last
    trade's volume (FOK: all or nothing); what does not fill is cancelled."""
    tick = _quote_tick(snapshot)
    side = Side(order.side)
    if order.type == OrderType.MARKET:
        return [apply_fill(session, account, order, position, tick, order.quantity, tick.price,
                           costs, reserve_at)]
    assert order.price is not None
    quantity = 0
    if marketable(side, order.price, tick.price):
        quantity = min(order.quantity, tick.volume)
        if order.time_in_force == TimeInForce.FOK and quantity < order.quantity:
            quantity = 0
    fills = [apply_fill(session, account, order, position, tick, quantity, order.price, costs,
                        reserve_at)] if quantity > 0 else []
    if order.remaining_quantity > 0:
        _end(session, account, order, position, OrderStatus.CANCELLED,
             "fok_not_fillable" if order.time_in_force == TimeInForce.FOK else "ioc_remainder")
    return fills


# --- one order -----------------------------------------------------------------------------------


def _own_order(session: Session, user_id: int, order_id: int, *, lock: bool) -> Order:
    """The user's order; 404 for an order that does not exist or belongs to someone else."""
    query = select(Order).where(Order.id == order_id, Order.user_id == user_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    order = session.scalar(query)
    if order is None:
        raise NotFound(f"no order {order_id}", code="order_not_found")
    return order


def fills_of(session: Session, order_id: int) -> list[Fill]:
    return list(session.scalars(select(Fill).where(Fill.order_id == order_id)
                                .order_by(Fill.id)))


def get(session: Session, user_id: int, order_id: int) -> Order:
    """The user's order; 404 `order_not_found` if it is not theirs."""
    return _own_order(session, user_id, order_id, lock=False)


def _require_live(order: Order, action: str) -> None:
    if not order.is_live:
        raise Conflict(f"order {order.id} is {order.status}: only open or partially filled "
                       f"orders can be {action}", code="order_not_live", order_status=order.status)


def _end(session: Session, account: Account, order: Order, position: Position | None,
         status: OrderStatus, reason: str) -> None:
    """A live order stops for good: what it holds goes back."""
    release(account, order, position)
    order.status = status.value
    order.reason = reason
    session.flush()


def cancel(session: Session, user_id: int, order_id: int) -> Order:
    """Cancel what is left of a live order and release what it holds."""
    account = lock_account(session, user_id)
    order = _own_order(session, user_id, order_id, lock=True)
    _require_live(order, "cancelled")
    position = (lock_position(session, user_id, order.code) if order.side == Side.SELL
                else None)
    _end(session, account, order, position, OrderStatus.CANCELLED, "user")
    return order


def modify(session: Session, user_id: int, order_id: int, *, price: int | None,
           quantity: int | None, snapshot: MarketSnapshot, rules: TradingRules) -> Order:
    """Change a resting limit order's price and/or total quantity (which stays above what
    has filled). Holds follow: a buy reserves cash for its new rest at its new price, a sell
    holds its new rest of shares. A new price or a larger quantity loses time priority: the
    order then rests from now (only later ticks can fill it); a smaller quantity keeps it."""
    account = lock_account(session, user_id)
    order = _own_order(session, user_id, order_id, lock=True)
    _require_live(order, "modified")
    if order.type != OrderType.LIMIT or order.rests_after is None:
        raise Conflict("only resting LIMIT orders (DAY or GTC) can be modified",
                       code="order_not_modifiable")
    assert order.price is not None
    new_price = order.price if price is None else price
    new_quantity = order.quantity if quantity is None else quantity
    if price is not None:
        check_limit_price(price, PriceBand.around(require_quote(snapshot).base))
    check_quantity(new_quantity, rules.max_quantity)
    if new_quantity <= order.filled_quantity:
        raise Unprocessable(
            f"the new quantity must exceed the {order.filled_quantity} shares already filled "
            "(cancel the order to stop it)", code="quantity_not_above_filled",
            filled_quantity=order.filled_quantity)
    position = (lock_position(session, user_id, order.code) if order.side == Side.SELL
                else None)
    new_rest = new_quantity - order.filled_quantity
    if order.side == Side.BUY:
        extra_cash = rules.costs.buy_reservation(new_rest, new_price) - order.held_cash
        _check_available(account, None, Side.BUY, 0, extra_cash)
    else:
        _check_available(account, position, Side.SELL, new_rest - order.remaining_quantity, 0)
    loses_priority = new_price != order.price or new_quantity > order.quantity
    release(account, order, position)
    order.price, order.quantity = new_price, new_quantity
    hold(account, order, position, rules.costs, new_price)
    if loses_priority:
        order.rests_after, order.checked_upto = snapshot.stream_last_id, None
    session.flush()
    return order


# --- listing -------------------------------------------------------------------------------------


def list_orders(session: Session, user_id: int, *, statuses: tuple[str, ...] | None = None,
                code: str | None = None, cursor: str | None = None,
                limit: int = DEFAULT_PAGE_SIZE) -> Page[Order]:
    """The user's orders, newest first."""
    check_limit(limit)
    query = select(Order).where(Order.user_id == user_id)
    if statuses:
        query = query.where(Order.status.in_(statuses))
    if code is not None:
        query = query.where(Order.code == code)
    if cursor is not None:
        query = query.where(Order.id < decode_cursor(CURSOR_KIND, cursor))
    rows = list(session.scalars(query.order_by(Order.id.desc()).limit(limit + 1)))
    return page_of(CURSOR_KIND, rows, limit, lambda order: order.id)


def expire(session: Session, order_id: int, user_id: int, now: datetime) -> bool:
    """Expire a DAY order whose session has closed; False if it is no longer live (filled or
    cancelled meanwhile) or not yet due."""
    account = lock_account(session, user_id)
    order = _own_order(session, user_id, order_id, lock=True)
    if not order.is_live or order.expires_at is None or order.expires_at > now:
        return False
    position = (lock_position(session, user_id, order.code) if order.side == Side.SELL
                else None)
    _end(session, account, order, position, OrderStatus.EXPIRED, "session_close")
    return True
