"""Filling several resting orders from one print in one transaction: the fills worker's fast
path (issue 16). One tick crossing 25 orders used to cost 25 transactions of ~16 statements
each through the ORM (api.fills.store.fill_from_tick); here it is one transaction of about 15
statements whatever the number of orders, with SQLAlchemy Core and multi-row writes.

Same rules, same rows, same guarantees as one order at a time:
- Locks in the one global order (docs/TRADING.md, "Money: the ledger and the invariants"):
  every account of the batch (ascending user id, one `SELECT ... FOR UPDATE`), then every
  order (ascending id), then their
  positions in the code, then the print's `trade_prints` row, last, once. Other transactions
  lock one user's account before anything else of that user, so none can hold a row of ours
  while waiting for an account we hold: no cycle.
- Everything is checked again on the locked rows, as `fill_from_tick` does (status, resting
  after the tick, the price, the expiry, a fill of this order by this tick already recorded),
  so processing a tick again gives nothing twice; UNIQUE(order_id, tick_id) stays the guard.
- The print's volume goes to the orders in the priority order they are given (market orders
  waiting for an auction's price first, drawing on nothing).
- Each fill's money moves as `api.orders.execution.apply_fill` moves it (the commission, the
  taxes, the holds, the position, `sell_from` for a sale's book cost and P&L), and its cash as
  `api.ledger.service.post` would record it: one ledger row per amount with the balance before
  and after, never below the held cash. Each fill records its two user events (the fill, then
  its order as `GET /api/v1/orders/{id}` answers it), under the user's account lock, in the
  same transaction (api.streams.events.record_many).
- One transaction: a crash at any point leaves nothing of it, and the worker processes the
  stream entry again (it is acknowledged only after all its fills committed).

What this path does not do, it refuses before writing anything (`NotBatchable`): a sale by an
account that owes a clawback (its proceeds pay that first, api.ledger.service.collect_clawback).
Any failure rolls the whole batch back; the worker then fills its orders one transaction each
(api.fills.worker), so one order's problem never costs the others their fills.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Executable, Table, bindparam, case, insert, inspect, select, update
from sqlalchemy.orm import Session

from api.fills.matching import RestingOrder, after
from api.fills.store import last_fill_time, tick_time
from api.market.rules import Costs
from api.market.taxes import NO_TAX
from api.models import (
    ACTIVE_ORDER_STATUSES,
    Account,
    Fill,
    FillRule,
    LedgerEntry,
    LedgerType,
    Order,
    OrderStatus,
    Position,
    Side,
    utc_now,
)
from api.orders.checks import marketable
from api.orders.execution import Tick, reservation, sell_from
from api.orders.prints import lock_print
from api.orders.schemas import OrderDetailOut
from api.streams.events import FILL_EXECUTED, EventType, FillEventOut, OrderEvent, record_many
from relayer.krx import Market, SecurityKind

_STATUS_EVENTS = {OrderStatus.FILLED.value: OrderEvent.FILLED,
                  OrderStatus.PARTIALLY_FILLED.value: OrderEvent.PARTIALLY_FILLED}


class NotBatchable(Exception):
    """An order of the batch needs what only the one-order path does; nothing was written."""


@dataclass(frozen=True, slots=True)
class Filled:
    """One order's fill from the batch."""

    order_id: int
    quantity: int
    price: int


@dataclass(frozen=True, slots=True)
class BatchResult:
    filled: list[Filled]
    volume_left: int  # what the print has left for this side after the batch


# --- the rows, as plain objects ------------------------------------------------------------------
# Read with Core and changed in memory: the ORM's instances cost more to build and track than the
# whole transaction's SQL. They carry the attributes the shared money code reads and writes
# (api.orders.execution: `reservation`, `sell_from`) and the answers read (OrderDetailOut).


@dataclass(slots=True)
class _Account:
    user_id: int
    cash: int
    held_cash: int
    clawback_due: int
    fees_paid: int
    taxes_paid: int


@dataclass(slots=True)
class _Order:
    id: int
    user_id: int
    client_order_id: str | None
    code: str
    market: str
    security_kind: str
    side: str
    type: str
    time_in_force: str
    quantity: int
    price: int | None
    status: str
    reason: str | None
    filled_quantity: int
    filled_value: int
    held_cash: int
    rests_after: str | None
    expires_at: datetime | None
    activates_at: datetime | None
    market_session: str
    created_at: datetime
    updated_at: datetime

    @property
    def remaining_quantity(self) -> int:
        return self.quantity - self.filled_quantity


@dataclass(slots=True)
class _Position:
    user_id: int
    code: str
    quantity: int
    held_quantity: int
    cost_basis: int
    purchase_value: int
    realized_pnl: int


@dataclass(slots=True)
class _Fill:
    id: int
    order_id: int
    user_id: int
    code: str
    side: str
    quantity: int
    price: int
    value: int
    commission: int
    tax: int
    securities_transaction_tax: int
    rural_special_tax: int
    tick_id: str
    tick_seq: int | None
    tick_ts: str | None
    rule: str
    cost_basis_sold: int | None
    realized_pnl: int | None
    created_at: datetime


Row = TypeVar("Row", _Account, _Order, _Position, _Fill)
_MODELS: dict[type[Any], type[Any]] = {_Account: Account, _Order: Order, _Position: Position,
                                       _Fill: Fill}


def fill_batch(session: Session, resting: list[RestingOrder], tick: Tick, side: Side,
               costs: Costs, volume_hint: int) -> BatchResult:
    """Fill these orders of one side (best priority first) from one tick, in this one
    transaction; what each got, and what the print has left (`volume_hint`, the worker's
    unlocked read, when the batch did not lock it)."""
    now = utc_now()
    accounts = {a.user_id: a for a in _read(session, _Account, "user_id",
                                           sorted({order.user_id for order in resting}))}
    orders = {o.id: o for o in _read(session, _Order, "id",
                                     sorted(order.id for order in resting))}
    already = set(session.execute(_ALREADY_FILLED, {"tick_id": tick.id,
                                                    "ids": list(orders)}).scalars())
    fillable = [orders[r.id] for r in resting
                if r.id in orders and r.id not in already and _may_fill(orders[r.id], tick)]
    if not fillable:
        return BatchResult([], volume_hint)
    for order in fillable:
        if order.user_id not in accounts:
            # The one-order path says why (404 or `user_not_found`): leave it to it.
            raise NotBatchable(f"order {order.id}: no account for user {order.user_id}")
        if order.side == Side.SELL.value and accounts[order.user_id].clawback_due:
            raise NotBatchable(f"order {order.id}: its account owes a clawback")
    positions = {p.user_id: p for p in _read(session, _Position, "user_id",
                                             sorted({order.user_id for order in fillable}),
                                             code=tick.code)}
    # The print last, once, and only if a limit order draws on it (market orders waiting for
    # an auction's price fill in full from nothing, as in `fill_from_tick`).
    takes_volume = any(order.price is not None for order in fillable)
    printed = lock_print(session, tick, side) if takes_volume else None
    left = printed.volume - printed.consumed if printed is not None else volume_hint

    writes = _Writes(now)
    for order in fillable:
        if order.price is None:
            quantity = order.remaining_quantity  # draws on nothing
        else:
            quantity = min(order.remaining_quantity, max(left, 0))
            left -= quantity
        if quantity == 0:
            continue
        position = positions.get(order.user_id)
        if position is None:
            position = _Position(order.user_id, order.code, 0, 0, 0, 0, 0)
            positions[order.user_id] = position
            writes.new_positions.append(position)
        if tick.is_auction:
            # A market order fills in full: its rest needs nothing afterwards (apply_fill).
            price, rule = tick.price, FillRule.AUCTION_PRICE
            reserve_at = tick.price if order.price is None else order.price
        else:
            assert order.price is not None
            price, rule, reserve_at = order.price, FillRule.RESTING_LIMIT, order.price
        writes.fill(accounts[order.user_id], order, position, tick, quantity, price, costs,
                    reserve_at, rule)
    if printed is not None:
        printed.consumed = printed.volume - left  # written at the flush before the commit
    writes.write(session, tick)
    return BatchResult(writes.filled, max(left, 0))


def _may_fill(order: _Order, tick: Tick) -> bool:
    """The checks `fill_from_tick` makes on the locked order."""
    if (order.status not in ACTIVE_ORDER_STATUSES or order.rests_after is None
            or not after(tick.id, order.rests_after)):
        return False
    if order.price is None:
        if not tick.is_auction:
            return False
    elif not marketable(Side(order.side), order.price, tick.price):
        return False
    return order.expires_at is None or tick_time(tick) < last_fill_time(order.expires_at, tick)


# --- reading -------------------------------------------------------------------------------------


def _select(row: type[Any], key: str, by_code: bool, lock: bool) -> Executable:
    """`SELECT` the columns of `row` by a list of keys (`:keys`), ascending, optionally of one
    code (`:code`) and locked; built once (building a statement costs more than running it)."""
    shape = (row, key, by_code, lock)
    statement = _SELECTS.get(shape)
    if statement is None:
        columns = inspect(_MODELS[row]).columns
        table = _table(_MODELS[row])
        built = (select(*(columns[field.name].label(field.name) for field in fields(row)))
                 .where(table.c[key].in_(bindparam("keys", expanding=True)))
                 .order_by(table.c[key]))
        if by_code:
            built = built.where(table.c.code == bindparam("code"))
        statement = _SELECTS[shape] = built.with_for_update() if lock else built
    return statement


_SELECTS: dict[tuple[type[Any], str, bool, bool], Executable] = {}


def _read(session: Session, row: type[Row], key: str, keys: list[Any], *,
          code: str | None = None, lock: bool = True) -> list[Row]:
    """These rows, locked (`SELECT ... FOR UPDATE`, in ascending key order) unless `lock` is
    false, as plain objects."""
    if not keys:
        return []
    parameters: dict[str, Any] = {"keys": keys}
    if code is not None:
        parameters["code"] = code
    result = session.execute(_select(row, key, code is not None, lock), parameters)
    return [row(**values) for values in result.mappings()]


_ALREADY_FILLED = (select(Fill.order_id)
                   .where(Fill.tick_id == bindparam("tick_id"),
                          Fill.order_id.in_(bindparam("ids", expanding=True))))


# --- writing -------------------------------------------------------------------------------------


class _Writes:
    """The batch's changes, settled in memory fill by fill (in priority order: one user's
    orders see each other's effects), then written with a few multi-row statements."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.filled: list[Filled] = []
        self.fills: list[_Fill] = []
        self.ledger: list[dict[str, Any]] = []
        self.new_positions: list[_Position] = []
        self.accounts: dict[int, _Account] = {}
        self.orders: dict[int, _Order] = {}
        self.positions: dict[int, _Position] = {}

    def fill(self, account: _Account, order: _Order, position: _Position, tick: Tick,
             quantity: int, price: int, costs: Costs, reserve_at: int,
             rule: FillRule) -> None:
        """`api.orders.execution.apply_fill`, on plain rows."""
        if not 0 < quantity <= order.remaining_quantity:
            raise ValueError(f"cannot fill {quantity} of order {order.id} "
                             f"({order.remaining_quantity} unfilled)")
        sell = order.side == Side.SELL.value
        value = quantity * price
        commission = costs.commission(value, first_fill=order.filled_quantity == 0)
        taxes = (costs.sale_taxes(Market(order.market), SecurityKind(order.security_kind),
                                  value, self.now) if sell else NO_TAX)
        fill = _Fill(id=0, order_id=order.id, user_id=order.user_id, code=order.code,
                     side=order.side, quantity=quantity, price=price, value=value,
                     commission=commission, tax=taxes.total,
                     securities_transaction_tax=taxes.securities_transaction_tax,
                     rural_special_tax=taxes.rural_special_tax, tick_id=tick.id,
                     tick_seq=tick.seq, tick_ts=tick.ts, rule=rule.value,
                     cost_basis_sold=None, realized_pnl=None, created_at=self.now)
        reference = f"{order.id}@{tick.id}"
        order.filled_quantity += quantity
        order.filled_value += value
        order.status = (OrderStatus.FILLED if order.remaining_quantity == 0
                        else OrderStatus.PARTIALLY_FILLED).value
        if sell:
            # The shared code reads and writes these attributes only (duck-typed rows).
            sale = sell_from(cast(Position, position), quantity,
                             value - commission - taxes.total)
            fill.cost_basis_sold, fill.realized_pnl = sale.cost_basis_sold, sale.realized_pnl
            self._post(account, LedgerType.SELL, value, reference)  # credit first
        else:
            still_needed = reservation(cast(Order, order), costs, reserve_at)
            account.held_cash -= order.held_cash - still_needed
            order.held_cash = still_needed
            position.quantity += quantity
            position.cost_basis += value + commission
            position.purchase_value += value
            self._post(account, LedgerType.BUY, -value, reference)
        if commission:
            self._post(account, LedgerType.FEE, -commission, reference)
        if taxes.total:
            self._post(account, LedgerType.TAX, -taxes.total, reference)
        order.updated_at = self.now
        self.fills.append(fill)
        self.filled.append(Filled(order.id, quantity, price))
        self.accounts[account.user_id] = account
        self.orders[order.id] = order
        self.positions[position.user_id] = position

    def _post(self, account: _Account, type: LedgerType, amount: int, reference: str) -> None:
        """`api.ledger.service.post` for a fill's row: its reference is new by construction
        (UNIQUE still guards it), and it is never a cash event."""
        before, after_ = account.cash, account.cash + amount
        if after_ < account.held_cash:
            raise NotBatchable(f"user {account.user_id}: not enough available cash")
        self.ledger.append({"user_id": account.user_id, "type": type.value, "amount": amount,
                            "balance_before": before, "balance_after": after_,
                            "reference": reference, "created_at": self.now})
        account.cash = after_
        if type is LedgerType.FEE:
            account.fees_paid -= amount
        elif type is LedgerType.TAX:
            account.taxes_paid -= amount

    def write(self, session: Session, tick: Tick) -> None:
        if not self.fills:
            return
        earlier = self._earlier_fills(session)
        if self.new_positions:
            session.execute(_INSERT_POSITION, [
                {"user_id": p.user_id, "code": p.code, "quantity": p.quantity,
                 "held_quantity": p.held_quantity, "cost_basis": p.cost_basis,
                 "purchase_value": p.purchase_value, "realized_pnl": p.realized_pnl,
                 "updated_at": self.now} for p in self.new_positions])
        # Each fill's id, matched by its order (one fill per order per tick): the order in
        # which RETURNING lists a multi-row INSERT's rows is not promised.
        ids: dict[int, int] = dict(session.execute(_INSERT_FILL, [
            {name: getattr(fill, name) for name in _FILL_COLUMNS} for fill in self.fills]).all())
        for fill in self.fills:
            fill.id = ids[fill.order_id]
        session.execute(_INSERT_LEDGER, self.ledger)
        self._record_events(session, earlier)
        _update_each(session, _table(Order), "id", self.orders,
                     ("filled_quantity", "filled_value", "status", "held_cash"), self.now)
        _update_each(session, _table(Account), "user_id", self.accounts,
                     ("cash", "held_cash", "fees_paid", "taxes_paid"), self.now)
        new = {p.user_id for p in self.new_positions}
        _update_each(session, _table(Position), "user_id",
                     {user_id: p for user_id, p in self.positions.items() if user_id not in new},
                     ("quantity", "held_quantity", "cost_basis", "purchase_value",
                      "realized_pnl"), self.now, code=tick.code)

    def _earlier_fills(self, session: Session) -> dict[int, list[_Fill]]:
        """The fills the batch's orders had before it, by order, oldest first (read before the
        batch's own are written); only an order filled before has any."""
        before = [fill.order_id for fill in self.fills
                  if self.orders[fill.order_id].filled_quantity > fill.quantity]
        earlier: dict[int, list[_Fill]] = {}
        for fill in sorted(_read(session, _Fill, "order_id", before, lock=False),
                           key=lambda f: f.id):
            earlier.setdefault(fill.order_id, []).append(fill)
        return earlier

    def _record_events(self, session: Session, earlier: dict[int, list[_Fill]]) -> None:
        """Per fill, as `record_order_fill`: the fill, then its order with all its fills. An
        order is filled at most once per tick, so its state now is its state after this
        fill."""
        events: list[tuple[int, EventType, str, str]] = []
        for fill in self.fills:
            order = self.orders[fill.order_id]
            fills = [*earlier.get(order.id, []), fill]
            state = OrderDetailOut.with_fills(cast(Order, order), cast(list[Fill], fills))
            events.append((fill.user_id, EventType.FILL, FILL_EXECUTED,
                           FillEventOut.model_validate(fill).model_dump_json()))
            events.append((order.user_id, EventType.ORDER,
                           _STATUS_EVENTS[order.status].value, state.model_dump_json()))
        record_many(session, events)


def _table(model: type[Any]) -> Table:
    table: Table = model.__table__
    return table


_FILL_COLUMNS = tuple(field.name for field in fields(_Fill) if field.name != "id")
_INSERT_FILL = insert(_table(Fill)).returning(_table(Fill).c.order_id, _table(Fill).c.id)
_INSERT_LEDGER = insert(_table(LedgerEntry))
_INSERT_POSITION = insert(_table(Position))


@functools.lru_cache(maxsize=64)
def _update_statement(table: Table, key: str, columns: tuple[str, ...], count: int,
                      by_code: bool) -> Executable:
    """One UPDATE of `count` rows: each column set by a CASE on the key (`:k0`..., values
    `:{column}_0`...), and `updated_at` (`:now`). Built once per shape."""
    key_column = table.c[key]
    keys = [bindparam(f"k{i}", type_=key_column.type) for i in range(count)]
    values: dict[str, Any] = {
        column: case(*((key_column == keys[i],
                        bindparam(f"{column}_{i}", type_=table.c[column].type))
                       for i in range(count)))
        for column in columns}
    values["updated_at"] = bindparam("now", type_=table.c.updated_at.type)
    statement = update(table).where(key_column.in_(keys))
    if by_code:
        statement = statement.where(table.c.code == bindparam("of_code"))
    return statement.values(**values)


def _update_each(session: Session, table: Table, key: str, rows: dict[Any, Any],
                 columns: tuple[str, ...], now: datetime, *, code: str | None = None) -> None:
    """One UPDATE for all these rows (the multi-row form of an UPDATE by key)."""
    if not rows:
        return
    # Sizes rounded up to a power of two (the last row repeated: the same key with the same
    # values changes nothing), so that a worker builds and compiles at most 8 shapes a table.
    items = list(rows.items())
    size = 1 << (len(items) - 1).bit_length()
    items += [items[-1]] * (size - len(items))
    parameters: dict[str, Any] = {"now": now}
    for i, (value, row) in enumerate(items):
        parameters[f"k{i}"] = value
        for column in columns:
            parameters[f"{column}_{i}"] = getattr(row, column)
    if code is not None:
        parameters["of_code"] = code
    session.execute(_update_statement(table, key, columns, size, code is not None),
                    parameters)
