"""The order requests: one async function per endpoint, and the unit of work each runs.

Each request that needs the market reads its snapshot from Redis first (api.orders.snapshot),
then does all its SQL in one transaction (retried on deadlocks, api.orders.store), so no
transaction waits on Redis. Placing an order checks it against the snapshot inside that
transaction, after the `Idempotency-Key`: a repeat answers what the first request answered
even if the market has moved since and the same order would now be refused.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from api import idempotency
from api.idempotency import KeyedRequest
from api.instruments.codes import checked_code
from api.ledger.service import take_user_lock
from api.market.rules import TradingRules
from api.models import Order
from api.orders import store
from api.orders.checks import OrderRequest, accept
from api.orders.schemas import OrderCreate, OrderDetailOut, OrderModify, OrderOut, OrdersPage
from api.orders.snapshot import MarketSnapshot, market_snapshot
from api.resources import Resources
from relayer.market_calendar import MarketCalendar

ORDERS_PATH = "/api/v1/orders"


async def place_order(resources: Resources, user_id: int, body: OrderCreate,
                      key: str | None) -> str:
    """The JSON answer (201) to placing `body`: the order with the fills made now."""
    fields = body.model_dump(mode="json")
    if not body.reserve:
        # A body without a reservation fingerprints as it did before `reserve` existed, so a
        # key sent again across that upgrade still answers its first answer.
        del fields["reserve"]
    keyed = KeyedRequest.of(user_id, key, "POST", ORDERS_PATH, fields)
    request = OrderRequest(
        code=checked_code(body.code), side=body.side, type=body.type, quantity=body.quantity,
        price=body.price, time_in_force=body.time_in_force,
        client_order_id=body.client_order_id, reserve=body.reserve)
    snapshot = await market_snapshot(resources, request.code)
    return await resources.db.run_retrying(_place, keyed, request, snapshot,
                                           resources.trading_rules,
                                           resources.settings.quote_max_age_s,
                                           resources.calendar, resources.clock())


async def orders_page(resources: Resources, user_id: int, *, statuses: tuple[str, ...],
                      code: str | None, cursor: str | None, limit: int) -> OrdersPage:
    return await resources.db.read(_page, user_id, statuses,
                                   None if code is None else checked_code(code), cursor, limit)


async def get_order(resources: Resources, user_id: int, order_id: int) -> OrderDetailOut:
    return await resources.db.read(_get, user_id, order_id)


async def cancel_order(resources: Resources, user_id: int, order_id: int) -> OrderDetailOut:
    return await resources.db.run_retrying(_cancel, user_id, order_id)


async def modify_order(resources: Resources, user_id: int, order_id: int,
                       body: OrderModify) -> OrderDetailOut:
    # The order's code names the quote to read, before the transaction that changes it.
    code = await resources.db.read(_code_of, user_id, order_id)
    snapshot = await market_snapshot(resources, code)
    return await resources.db.run_retrying(_modify, user_id, order_id, body, snapshot,
                                           resources.trading_rules,
                                           resources.settings.quote_max_age_s,
                                           resources.calendar, resources.clock())


# --- units of work -------------------------------------------------------------------------------


def _detail(session: Session, order: Order) -> OrderDetailOut:
    return OrderDetailOut.with_fills(order, store.fills_of(session, order.id))


def _place(session: Session, keyed: KeyedRequest, request: OrderRequest,
           snapshot: MarketSnapshot, rules: TradingRules, quote_max_age_s: float,
           calendar: MarketCalendar, now: datetime) -> str:
    account = take_user_lock(session, keyed.user_id)

    def answer() -> OrderDetailOut:
        accepted = accept(request, snapshot, quote_max_age_s=quote_max_age_s,
                          max_quantity=rules.max_quantity,
                          calendar=calendar, now=now)
        return OrderDetailOut.with_fills(*store.place(session, account, accepted, rules))

    return idempotency.answer_once(session, keyed, answer)


def _page(session: Session, user_id: int, statuses: tuple[str, ...], code: str | None,
          cursor: str | None, limit: int) -> OrdersPage:
    page = store.list_orders(session, user_id, statuses=statuses, code=code, cursor=cursor,
                             limit=limit)
    return OrdersPage(items=[OrderOut.of(order) for order in page.items],
                      next_cursor=page.next_cursor)


def _get(session: Session, user_id: int, order_id: int) -> OrderDetailOut:
    return _detail(session, store.get(session, user_id, order_id))


def _cancel(session: Session, user_id: int, order_id: int) -> OrderDetailOut:
    return _detail(session, store.cancel(session, user_id, order_id))


def _code_of(session: Session, user_id: int, order_id: int) -> str:
    return store.get(session, user_id, order_id).code


def _modify(session: Session, user_id: int, order_id: int, body: OrderModify,
            snapshot: MarketSnapshot, rules: TradingRules, quote_max_age_s: float,
            calendar: MarketCalendar, now: datetime) -> OrderDetailOut:
    return _detail(session, store.modify(session, user_id, order_id, price=body.price,
                                         quantity=body.quantity, snapshot=snapshot, rules=rules,
                                         quote_max_age_s=quote_max_age_s, calendar=calendar,
                                         now=now))
