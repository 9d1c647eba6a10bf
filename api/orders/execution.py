"""Executing orders: the one place where a fill changes cash, holds and positions.

Both kinds of fill come here: a market order filled in its request (priced by the latest quote)
and a resting limit order filled by the fills worker (priced by a tick from the stream). The
caller has locked, in this order, the account, then the order, then the position, then (for a
limit order) the trade print it takes volume from (the fixed lock order of every transaction
that touches more than one of them; api.orders.prints), and commits.

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
from api.market.taxes import NO_TAX
from api.models import (
    Account,
    Fill,
    FillRule,
    LedgerType,
    Order,
    OrderStatus,
    Position,
    Side,
    utc_now,
)
from api.streams.events import record_order_fill
from relayer.bus import Quote
from relayer.krx import Market, SecurityKind
from relayer.market_calendar import Session as MarketSession

# The sessions whose print is a call auction's single price (the quote's `session`).
AUCTION_PRINTS = frozenset({MarketSession.OPENING_AUCTION.value,
                            MarketSession.CLOSING_AUCTION.value})


@dataclass(frozen=True, slots=True)
class Tick:
    """A trade print that prices fills: its durable id (a stream entry id, or `quote:{seq}`
    for an order filled in its request), the instrument, the traded price and volume, the
    relayer's seq and trade time, and the session it printed in (a call auction's single
    price says OPENING_AUCTION or CLOSING_AUCTION; the relayer's quotes say REGULAR
    otherwise)."""

    id: str
    code: str
    price: int
    volume: int
    seq: int | None
    ts: str | None
    session: str | None = None

    @property
    def is_auction(self) -> bool:
        return self.session in AUCTION_PRINTS

    @classmethod
    def of_quote(cls, quote: Quote) -> Tick:
        """The latest trade, as it prices an order filled in its request: named by its stream
        entry id, as the fills worker names it, so that both count one print's volume once;
        `quote:{seq}` for a quote that does not carry the id (not written by the relayer's
        script)."""
        return cls(quote.tick_id or f"quote:{quote.seq}", quote.code, quote.price,
                   quote.volume, quote.seq, quote.ts, quote.session)


def lock_position(session: Session, user_id: int, code: str) -> Position | None:
    return session.scalar(select(Position).where(Position.user_id == user_id,
                                                 Position.code == code)
                          .with_for_update().execution_options(populate_existing=True))


def lock_or_open_position(session: Session, user_id: int, code: str) -> Position:
    position = lock_position(session, user_id, code)
    if position is None:
        position = Position(user_id=user_id, code=code, quantity=0, held_quantity=0,
                            cost_basis=0, purchase_value=0, realized_pnl=0)
        session.add(position)
        session.flush()
    return position


def reservation(order: Order, costs: Costs, reserve_at: int) -> int:
    """The cash a live buy's unfilled rest holds, at `reserve_at` a share."""
    return costs.buy_reservation(order.remaining_quantity, reserve_at,
                                 first_fill_pending=order.filled_quantity == 0)


def hold(account: Account, order: Order, position: Position | None, costs: Costs,
         reserve_at: int) -> None:
    """Reserve what a new (or grown) live order needs: cash for a buy, shares for a sell.
    The caller has checked that it is available."""
    if order.side == Side.BUY:
        needed = reservation(order, costs, reserve_at)
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
               tick: Tick, quantity: int, price: int, costs: Costs,
               reserve_at: int, rule: FillRule) -> Fill:
    """Execute `quantity` shares of a live order at `price`, priced by `tick` under `rule`
    (a limit order's shares were taken from the print first, api.orders.prints): record the fill,
    settle cash through the ledger, move the position, and shrink the order's holds to what its
    unfilled rest still needs (`reserve_at`: the price its cash is reserved at)."""
    if not 0 < quantity <= order.remaining_quantity:
        raise ValueError(f"cannot fill {quantity} of order {order.id} "
                         f"({order.remaining_quantity} unfilled)")
    sell = order.side == Side.SELL
    value = quantity * price
    commission = costs.commission(value, first_fill=order.filled_quantity == 0)
    taxes = (costs.sale_taxes(Market(order.market), SecurityKind(order.security_kind), value,
                              utc_now()) if sell else NO_TAX)
    tax = taxes.total
    fill = Fill(order_id=order.id, user_id=order.user_id, code=order.code, side=order.side,
                quantity=quantity, price=price, value=value, commission=commission, tax=tax,
                securities_transaction_tax=taxes.securities_transaction_tax,
                rural_special_tax=taxes.rural_special_tax,
                tick_id=tick.id, tick_seq=tick.seq, tick_ts=tick.ts, rule=rule.value)
    session.add(fill)
    # Names the fill without waiting for its id (one flush less per fill): an order is filled
    # at most once per tick (UNIQUE), so the pair is unique, and at most 11 + 1 + 32 chars.
    reference = f"{order.id}@{tick.id}"

    order.filled_quantity += quantity
    order.filled_value += value
    order.status = (OrderStatus.FILLED if order.remaining_quantity == 0
                    else OrderStatus.PARTIALLY_FILLED).value
    if sell:
        sale = sell_from(position, quantity, value - commission - tax)
        fill.cost_basis_sold, fill.realized_pnl = sale.cost_basis_sold, sale.realized_pnl
        # Credit first, then the costs: the balance never dips on the way.
        post(session, account, LedgerType.SELL, value, reference, reference_is_new=True)
    else:
        still_needed = reservation(order, costs, reserve_at)
        account.held_cash -= order.held_cash - still_needed
        order.held_cash = still_needed
        position.quantity += quantity
        position.cost_basis += value + commission
        position.purchase_value += value
        post(session, account, LedgerType.BUY, -value, reference, reference_is_new=True)
    if commission:
        post(session, account, LedgerType.FEE, -commission, reference,
             reference_is_new=True)
    if tax:
        post(session, account, LedgerType.TAX, -tax, reference, reference_is_new=True)
    record_order_fill(session, order, fill)
    if sell and account.clawback_due:
        collect_clawback(session, account)  # sale proceeds pay a refund's clawback first
    return fill


@dataclass(frozen=True, slots=True)
class Sale:
    """What one sale took from its position: the sold shares' part of the book cost, and the
    realized P&L (the net proceeds minus that part), recorded on the sale's fill too."""

    cost_basis_sold: int
    realized_pnl: int


def sell_from(position: Position, quantity: int, net_proceeds: int) -> Sale:
    """Take `quantity` sold shares (held by their sell order) out of a position, with their
    part of its book cost and purchase value, and add the sale's P&L to the position's: the one
    place a sale's realized P&L is computed. `net_proceeds`: value - commission - tax."""
    cost_sold = _share_of(position.cost_basis, quantity, position.quantity)
    position.purchase_value -= _share_of(position.purchase_value, quantity, position.quantity)
    position.held_quantity -= quantity
    position.quantity -= quantity
    position.cost_basis -= cost_sold
    sale = Sale(cost_basis_sold=cost_sold, realized_pnl=net_proceeds - cost_sold)
    position.realized_pnl += sale.realized_pnl
    return sale


def _share_of(amount: int, part: int, whole: int) -> int:
    """The part of `amount` that `part` of `whole` shares carry, rounded down (all of it for
    all the shares, so nothing is left on a closed position)."""
    return amount if part == whole else amount * part // whole
