"""Orders in SQL: the units of work that place, cancel, modify and expire an order, and the
reads of orders and fills. Every write locks the account first (the fixed lock order: account,
then order, then position, then the trade print a limit order takes volume from), so one
user's order requests are serialised and a check of
available cash or shares stays true until the commit. A refused request raises before anything
is written, or rolls back with its transaction: a refusal changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound, Unprocessable
from api.ledger.service import take_user_lock
from api.market.rules import Costs, PriceBand, TradingRules
from api.models import (
    ACTIVE_ORDER_STATUSES,
    LIVE_ORDER_STATUSES,
    RESET_CLOSING_REASON,
    Account,
    Fill,
    FillRule,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
    utc_now,
)
from api.orders.checks import (
    AcceptedOrder,
    check_limit_price,
    check_quantity,
    day_band,
    is_fresh,
    marketable,
    require_quote,
)
from api.orders.execution import (
    Tick,
    apply_fill,
    hold,
    lock_or_open_position,
    lock_position,
    release,
)
from api.orders.prints import take_volume
from api.orders.snapshot import MarketSnapshot
from api.pagination import DEFAULT_PAGE_SIZE, Page, check_limit, decode_cursor, page_of
from api.streams.events import OrderEvent, record_order, record_order_end
from relayer.market_calendar import MarketCalendar
from relayer.market_calendar import Session as MarketSession

CURSOR_KIND = "ord"


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


def place(session: Session, account: Account, accepted: AcceptedOrder,
          rules: TradingRules) -> tuple[Order, list[Fill]]:
    """Place an accepted order (api.orders.checks.accept) for the owner of the locked
    `account`: reserve what it needs, then execute it at once (market, IOC, FOK in the
    continuous session) or leave it resting (DAY, GTC; any order in a call auction), or
    reserved for its trading day (a reservation order). Returns the order and the fills made
    now."""
    request = accepted.request
    user_id = account.user_id
    if request.client_order_id is not None and session.scalar(
            select(Order.id).where(Order.user_id == user_id,
                                   Order.client_order_id == request.client_order_id)):
        raise Conflict(f"an order with client_order_id {request.client_order_id!r} exists",
                       code="duplicate_client_order_id")
    resting = accepted.rests
    trades_now = accepted.trades_on_arrival
    if accepted.stays_live:
        _check_room_for_open_order(session, user_id, rules.max_open_orders)
    # Locked before the order is written, so that its lock read flushes nothing (two UPDATEs
    # fewer per order executed at once); a new order row is no one else's to wait on.
    position = (lock_position(session, user_id, request.code) if request.side is Side.SELL
                else lock_or_open_position(session, user_id, request.code) if trades_now
                else None)
    reserve_at = accepted.reserve_at
    cash_needed = (rules.costs.buy_reservation(request.quantity, reserve_at,
                                                  first_fill_pending=True)
                   if request.side is Side.BUY else 0)
    _check_available(account, position, request.side, request.quantity, cash_needed)

    now = utc_now()
    day = accepted.day
    order = Order(
        user_id=user_id, client_order_id=request.client_order_id, code=request.code,
        market=accepted.market.value, security_kind=accepted.kind.value,
        side=request.side.value, type=request.type.value,
        time_in_force=request.time_in_force.value, quantity=request.quantity,
        price=request.price,
        status=(OrderStatus.RESERVED if accepted.reserved else OrderStatus.OPEN).value,
        filled_quantity=0, filled_value=0, held_cash=0,
        rests_after=accepted.stream_last_id if resting else None,
        expires_at=day.close.astimezone(UTC) if accepted.expires else None,
        activates_at=day.auction_start.astimezone(UTC) if accepted.reserved else None,
        market_session=accepted.session.value,
        created_at=now, updated_at=now)
    session.add(order)
    session.flush()  # the order's id, which its fills refer to
    hold(account, order, position, rules.costs, reserve_at)
    record_order(session, order, OrderEvent.RESERVED if accepted.reserved
                 else OrderEvent.CREATED, fills=[])
    fills: list[Fill] = []
    if trades_now:
        assert position is not None
        fills = _execute_at_once(session, account, order, position, Tick.of_quote(accepted.quote),
                                 reserve_at, rules.costs, resting=resting)
    session.flush()
    return order, fills


def _execute_at_once(session: Session, account: Account, order: Order, position: Position,
                     tick: Tick, reserve_at: int, costs: Costs, *, resting: bool) -> list[Fill]:
    """A market order fills completely at the last trade price (liquidity assumed: it does not
    draw on the print's volume). A limit order that the last trade reaches (at or through its
    limit) is an aggressor, as on the exchange: it takes the market's price, the last
    trade's, which is never worse than its limit, for at most what that print has left (FOK:
    all or nothing). What does not fill is cancelled (IOC, FOK) or rests (DAY, GTC)."""
    if order.type == OrderType.MARKET:
        return [apply_fill(session, account, order, position, tick, order.quantity, tick.price,
                           costs, reserve_at, FillRule.MARKET_ORDER_LAST_TRADE)]
    fills = _trade_as_aggressor(session, account, order, position, tick, reserve_at, costs)
    if order.remaining_quantity > 0 and not resting:
        _end(session, account, order, position, OrderStatus.CANCELLED,
             "fok_not_fillable" if order.time_in_force == TimeInForce.FOK else "ioc_remainder")
    return fills


def _trade_as_aggressor(session: Session, account: Account, order: Order, position: Position,
                        tick: Tick, reserve_at: int, costs: Costs) -> list[Fill]:
    """Fill what the print `tick` has left for a limit order that arrives (or arrives again, by
    a modification) at or through it, at the print's price. The print's row is locked last
    (api.orders.prints): the caller holds the account, the order and the position."""
    assert order.price is not None
    side = Side(order.side)
    if not marketable(side, order.price, tick.price):
        return []
    if session.scalar(select(Fill.id).where(Fill.order_id == order.id,
                                            Fill.tick_id == tick.id)) is not None:
        return []  # this print already filled this order (before a modification)
    taken = take_volume(session, tick, side, order.remaining_quantity,
                        all_or_nothing=order.time_in_force == TimeInForce.FOK)
    if taken == 0:
        return []
    return [apply_fill(session, account, order, position, tick, taken, tick.price, costs,
                       reserve_at, FillRule.AGGRESSOR_LAST_TRADE)]


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
        raise Conflict(f"order {order.id} is {order.status}: only open, partially filled or "
                       f"reserved orders can be {action}", code="order_not_live",
                       order_status=order.status)


def _end(session: Session, account: Account, order: Order, position: Position | None,
         status: OrderStatus, reason: str) -> None:
    """A live order stops for good: what it holds goes back."""
    release(account, order, position)
    order.status = status.value
    order.reason = reason
    session.flush()
    record_order_end(session, order)


def cancel(session: Session, user_id: int, order_id: int) -> Order:
    """Cancel what is left of a live order and release what it holds."""
    account = take_user_lock(session, user_id)
    order = _own_order(session, user_id, order_id, lock=True)
    _require_live(order, "cancelled")
    position = (lock_position(session, user_id, order.code) if order.side == Side.SELL
                else None)
    _end(session, account, order, position, OrderStatus.CANCELLED, "user")
    return order


def cancel_every_live_order(session: Session, account: Account, reason: str) -> int:
    """Cancel every live order (open, partially filled, reserved) of a locked account, oldest
    first, releasing what each holds; how many there were."""
    orders = list(session.scalars(
        select(Order).where(Order.user_id == account.user_id,
                            Order.status.in_(LIVE_ORDER_STATUSES))
        .order_by(Order.id).with_for_update()))
    for order in orders:
        position = (lock_position(session, account.user_id, order.code)
                    if order.side == Side.SELL else None)
        _end(session, account, order, position, OrderStatus.CANCELLED, reason)
    return len(orders)


def close_at_no_cost(session: Session, account: Account, position: Position, price: int,
                     tick_id: str) -> Fill:
    """Sell all of a locked position without live orders at `price`, with no commission and
    no tax, as a filled market order of reason RESET_CLOSING_REASON (a portfolio reset): the
    order, its fill and the ledger rows are those of any sale, so every invariant holds as for
    one. The order's market and kind are those of the account's latest order of the code."""
    market, kind = session.execute(
        select(Order.market, Order.security_kind)
        .where(Order.user_id == account.user_id, Order.code == position.code)
        .order_by(Order.id.desc()).limit(1)).one()
    now = utc_now()
    order = Order(user_id=account.user_id, code=position.code, market=market,
                  security_kind=kind, side=Side.SELL.value, type=OrderType.MARKET.value,
                  time_in_force=TimeInForce.IOC.value, quantity=position.quantity,
                  status=OrderStatus.OPEN.value, reason=RESET_CLOSING_REASON, filled_quantity=0,
                  filled_value=0, held_cash=0, created_at=now, updated_at=now)
    session.add(order)
    session.flush()
    free = Costs.none()
    hold(account, order, position, free, price)
    record_order(session, order, OrderEvent.CREATED, fills=[])
    tick = Tick(tick_id, position.code, price, order.quantity, seq=None, ts=None)
    return apply_fill(session, account, order, position, tick, order.quantity, price, free,
                      reserve_at=price, rule=FillRule.PORTFOLIO_RESET)


def modify(session: Session, user_id: int, order_id: int, *, price: int | None,
           quantity: int | None, snapshot: MarketSnapshot, rules: TradingRules,
           quote_max_age_s: float, calendar: MarketCalendar,
           now: datetime | None = None) -> Order:
    """Change a resting limit order's price and/or total quantity (which stays above what
    has filled). Holds follow: a buy reserves cash for its new rest at its new price, a sell
    holds its new rest of shares. A new price or a larger quantity loses time priority: the
    order arrives again, from now (only later ticks can fill it as a resting order), and if
    the last trade, fresh enough to trade on, reaches its price, it trades at once as an
    aggressor like a new order (api.orders.checks.AcceptedOrder.trades_on_arrival), in the
    continuous session only (in a call auction or while the market is closed it rests); a
    smaller quantity keeps its place. A market order waiting for an auction's price and a
    reservation order are not modifiable: cancel and place another."""
    now = utc_now() if now is None else now
    account = take_user_lock(session, user_id)
    order = _own_order(session, user_id, order_id, lock=True)
    _require_live(order, "modified")
    # Not a resting order (api.orders.checks.rests; a reservation rests only once activated),
    # or a market order waiting for an auction's price.
    if order.rests_after is None or order.price is None:
        raise Conflict("only resting LIMIT orders (DAY or GTC) can be modified",
                       code="order_not_modifiable")
    assert order.price is not None
    new_price = order.price if price is None else price
    new_quantity = order.quantity if quantity is None else quantity
    if price is not None:
        check_limit_price(price, day_band(require_quote(snapshot), snapshot.price_rules, now,
                                          calendar))
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
        extra_cash = rules.costs.buy_reservation(
            new_rest, new_price, first_fill_pending=order.filled_quantity == 0) - order.held_cash
        _check_available(account, None, Side.BUY, 0, extra_cash)
    else:
        _check_available(account, position, Side.SELL, new_rest - order.remaining_quantity, 0)
    loses_priority = new_price != order.price or new_quantity > order.quantity
    release(account, order, position)
    order.price, order.quantity = new_price, new_quantity
    hold(account, order, position, rules.costs, new_price)
    record_order(session, order, OrderEvent.MODIFIED)  # before any trade it makes on arrival
    if loses_priority:
        # The snapshot's stream id is at or after the quote's own entry (the relayer's script
        # writes both at once, and the snapshot reads the quote first): the fills worker never
        # fills the order again from the print it may trade on here.
        order.rests_after, order.checked_upto = snapshot.stream_last_id, None
        quote = snapshot.quote
        due = order.expires_at is not None and order.expires_at <= now  # a DAY order's close
        continuous = calendar.session_at(now) is MarketSession.CONTINUOUS
        if quote is not None and is_fresh(snapshot, quote_max_age_s) and continuous and not due:
            position = (position if order.side == Side.SELL
                        else lock_or_open_position(session, user_id, order.code))
            assert position is not None  # a live sell holds shares of a position
            _trade_as_aggressor(session, account, order, position, Tick.of_quote(quote),
                                new_price, rules.costs)
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


def cancel_outside_band(session: Session, order_id: int, user_id: int,
                        band: PriceBand) -> bool:
    """Cancel a live GTC order whose price lies outside the new day's band (reason
    `outside_price_limits`) and release its hold; False if it is no longer live, or was
    re-priced into the band meanwhile (checked again on the locked row)."""
    account = take_user_lock(session, user_id)
    order = _own_order(session, user_id, order_id, lock=True)
    if (not order.is_live or order.time_in_force != TimeInForce.GTC or order.price is None
            or order.price in band):
        return False
    position = (lock_position(session, user_id, order.code) if order.side == Side.SELL
                else None)
    _end(session, account, order, position, OrderStatus.CANCELLED, "outside_price_limits")
    return True


def activate(session: Session, order_id: int, user_id: int, band: PriceBand | None,
             rests_after: str, now: datetime) -> OrderStatus | None:
    """Activate a reservation order whose opening auction has come: it becomes an ordinary
    order of its type, resting (its hold unchanged) and filled by ticks after `rests_after`.
    A limit order whose price lies outside its day's `band` (checked again: the base is the
    latest close, which may have printed after the order was placed) is cancelled instead
    (reason `outside_price_limits`) and releases its hold. Everything is checked on the
    locked rows, so a user's cancel racing it wins or loses whole. Returns the new status, or
    None if the order is no longer reserved (cancelled meanwhile, or activated already) or
    not yet due."""
    account = take_user_lock(session, user_id)
    order = _own_order(session, user_id, order_id, lock=True)
    if (order.status != OrderStatus.RESERVED or order.activates_at is None
            or order.activates_at > now):
        return None
    if band is not None and order.price is not None and order.price not in band:
        position = (lock_position(session, user_id, order.code) if order.side == Side.SELL
                    else None)
        _end(session, account, order, position, OrderStatus.CANCELLED, "outside_price_limits")
        return OrderStatus.CANCELLED
    order.status = OrderStatus.OPEN.value
    # Unchecked: the fills worker looks back from `rests_after` for ticks it already read
    # (a worker that was down past the opening auction still fills it from that print).
    order.rests_after, order.checked_upto = rests_after, None
    session.flush()
    record_order(session, order, OrderEvent.ACTIVATED)
    return OrderStatus.OPEN


def expire(session: Session, order_id: int, user_id: int, now: datetime) -> bool:
    """Expire a DAY order whose session has closed; False if it is no longer live (filled or
    cancelled meanwhile) or not yet due."""
    account = take_user_lock(session, user_id)
    order = _own_order(session, user_id, order_id, lock=True)
    # A reservation is activated first (it expires with the day it trades, once activated).
    if (order.status not in ACTIVE_ORDER_STATUSES or order.expires_at is None
            or order.expires_at > now):
        return False
    position = (lock_position(session, user_id, order.code) if order.side == Side.SELL
                else None)
    _end(session, account, order, position, OrderStatus.EXPIRED, "session_close")
    return True
