"""Executing orders: the one place where a fill changes cash, holds and positions.

Both kinds of fill come here: a market order filled in its request (priced by the latest quote)
and a resting limit order filled by the fills worker (priced by a tick from the stream). The
caller has locked, in this order, the account, then the order, then the position (the fixed
lock order of every transaction that touches more than one of them), and commits.

Cash moves only through `api.ledger.service.post`: per fill a BUY or SELL row for the traded
value and a FEE row for the commission (and a TAX row on sells), each referencing the fill as
`{order id}@{tick id}`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.ledger.service import collect_clawback, post
from api.market.rules import Costs
from api.models import Account, Fill, LedgerType, Order, OrderStatus, Position, Side


@dataclass(frozen=True, slots=True)
class PricingTick:
    """The trade print that prices a fill: its durable id (a stream entry id, or `quote:{seq}`
    for a market order), the traded price and volume, and the relayer's seq and trade time."""

    tick_id: str
    price: int
    volume: int
    seq: int | None
    ts: str | None


def lock_position(session: Session, user_id: int, code: str) -> Position | None:
    return session.scalar(select(Position).where(Position.user_id == user_id,
                                                 Position.code == code)
                          .with_for_update().execution_options(populate_existing=True))


def lock_or_open_position(session: Session, user_id: int, code: str) -> Position:
    position = lock_position(session, user_id, code)
    if position is None:
        position = Position(user_id=user_id, code=code, quantity=0, held_quantity=0,
                            cost_basis=0, realized_pnl=0)
        session.add(position)
        session.flush()
    return position


def reservation_price(order: Order, upper_limit: int | None = None) -> int:
    """The price a buy's cash is reserved at: its limit, or for a market buy the day's upper
    price limit (the most it could cost)."""
    if order.price is not None:
        return order.price
    if upper_limit is None:
        raise ValueError("a market buy is reserved at the upper price limit")
    return upper_limit


def hold(account: Account, order: Order, position: Position | None, costs: Costs,
         reserve_at: int) -> None:
    """Reserve what a new (or grown) live order needs: cash for a buy, shares for a sell.
    The caller has checked that it is available."""
    if order.side == Side.BUY:
        needed = costs.buy_reservation(order.remaining_quantity, reserve_at)
        account.held_cash += needed - order.held_cash
        order.held_cash = needed
    else:
        assert position is not None
        position.held_quantity += order.remaining_quantity


def release(account: Account, order: Order, position: Position | None) -> None:
    """Give back everything a live order holds (on cancel or expiry)."""
    if order.side == Side.BUY:
        account.held_cash -= order.held_cash
        order.held_cash = 0
    else:
        assert position is not None
        position.held_quantity -= order.remaining_quantity


def apply_fill(session: Session, account: Account, order: Order, position: Position,
               tick: PricingTick, quantity: int, price: int, costs: Costs,
               reserve_at: int) -> Fill:
    """Execute `quantity` shares of a live order at `price`, priced by `tick`: record the fill,
    settle cash through the ledger, move the position, and shrink the order's holds to what its
    unfilled rest still needs (`reserve_at`: the price its cash is reserved at)."""
    if not 0 < quantity <= order.remaining_quantity:
        raise ValueError(f"cannot fill {quantity} of order {order.id} "
                         f"({order.remaining_quantity} unfilled)")
    sell = order.side == Side.SELL
    value = quantity * price
    commission = costs.commission(value)
    tax = costs.tax(value, sell=sell)
    fill = Fill(order_id=order.id, user_id=order.user_id, code=order.code, side=order.side,
                quantity=quantity, price=price, value=value, commission=commission, tax=tax,
                tick_id=tick.tick_id, tick_seq=tick.seq, tick_ts=tick.ts)
    session.add(fill)
    # Names the fill without waiting for its id (one flush less per fill): an order is filled
    # at most once per tick (UNIQUE), so the pair is unique, and at most 11 + 1 + 32 chars.
    reference = f"{order.id}@{tick.tick_id}"

    order.filled_quantity += quantity
    order.filled_value += value
    order.status = (OrderStatus.FILLED if order.remaining_quantity == 0
                    else OrderStatus.PARTIALLY_FILLED).value
    if sell:
        cost_sold = (position.cost_basis if quantity == position.quantity
                     else position.cost_basis * quantity // position.quantity)
        position.held_quantity -= quantity
        position.quantity -= quantity
        position.cost_basis -= cost_sold
        position.realized_pnl += value - commission - tax - cost_sold
        # Credit first, then the costs: the balance never dips on the way.
        post(session, account, LedgerType.SELL, value, reference, reference_is_new=True)
    else:
        still_needed = costs.buy_reservation(order.remaining_quantity, reserve_at)
        account.held_cash -= order.held_cash - still_needed
        order.held_cash = still_needed
        position.quantity += quantity
        position.cost_basis += value + commission
        post(session, account, LedgerType.BUY, -value, reference, reference_is_new=True)
    if commission:
        post(session, account, LedgerType.FEE, -commission, reference,
             reference_is_new=True)
    if tax:
        post(session, account, LedgerType.TAX, -tax, reference, reference_is_new=True)
    if sell and account.clawback_due:
        collect_clawback(session, account)  # sale proceeds pay a refund's clawback first
    return fill
