"""HTTP routes of api.orders: place, list, read, cancel and modify orders.

Each request reads the market snapshot from Redis first, then does all its SQL in one
transaction (retried on deadlocks), so no transaction waits on Redis.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from api import idempotency
from api.auth.deps import CurrentUser
from api.deps import ResourcesDep
from api.idempotency import IdempotencyKeyHeader
from api.ids import RowId
from api.ledger.service import lock_account
from api.market.rules import Costs, PriceBand
from api.models import Order, OrderStatus
from api.openapi import problems
from api.orders import checks, service
from api.orders.checks import OrderRequest
from api.orders.schemas import (
    OrderCreate,
    OrderDetailOut,
    OrderModify,
    OrderOut,
    OrdersPage,
)
from api.orders.snapshot import MarketSnapshot, market_snapshot
from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from api.quotes.service import checked_code
from api.resources import Resources

router = APIRouter(tags=["orders"])

ORDERS_PATH = "/api/v1/orders"


_REFUSALS = ("`validation_error`, `invalid_code`, `price_required`, `price_not_allowed`, "
             "`quantity_over_limit`, `invalid_tick_size`, `price_out_of_band`, `no_quote`, "
             "`stale_quote`, `insufficient_funds`, `insufficient_shares`")


def trading_rules(resources: Resources) -> service.TradingRules:
    settings = resources.settings
    return service.TradingRules(
        costs=Costs(settings.commission_rate, settings.sell_tax_rate),
        market_close_kst=settings.market_close_kst,
        max_quantity=settings.order_max_quantity,
        max_open_orders=settings.orders_max_open_per_user)


def _detail(session: Session, order: Order) -> OrderDetailOut:
    return OrderDetailOut.with_fills(order, service.fills_of(session, order.id))


def _place(session: Session, user_id: int, request: OrderRequest, snapshot: MarketSnapshot,
           band: PriceBand, rules: service.TradingRules, key: str | None,
           fingerprint: str) -> dict[str, Any]:
    account = lock_account(session, user_id)
    return idempotency.once(session, user_id, key, fingerprint, lambda: OrderDetailOut.with_fills(
        *service.place(session, account, request, snapshot, band, rules)).model_dump(mode="json"))


@router.post("/orders", status_code=201, responses=problems({
    404: "`account_not_found`",
    409: "`duplicate_client_order_id`, `too_many_open_orders` (ORDERS_MAX_OPEN_PER_USER live "
         "orders already)",
    422: _REFUSALS + ", `idempotency_key_reused`",
}))
async def place_order(body: OrderCreate, principal: CurrentUser, resources: ResourcesDep,
                      key: IdempotencyKeyHeader = None) -> OrderDetailOut:
    """Place an order. MARKET orders, and IOC/FOK LIMIT orders, execute in the request; DAY
    and GTC LIMIT orders rest until a trade prints at or through their price (docs/TRADING.md).
    """
    user_id = principal.user_id
    fingerprint = idempotency.fingerprint("POST", ORDERS_PATH, body.model_dump(mode="json"))
    if key is not None:
        # A repeat answers what the first request answered, even if the market has moved
        # since and the same order would now be refused.
        stored = await resources.db.read(idempotency.replay, user_id, key, fingerprint)
        if stored is not None:
            return OrderDetailOut.model_validate(stored)
    request = OrderRequest(
        code=checked_code(body.code), side=body.side, type=body.type, quantity=body.quantity,
        price=body.price, time_in_force=body.time_in_force,
        client_order_id=body.client_order_id)
    snapshot = await market_snapshot(resources, request.code)
    settings = resources.settings
    band = checks.validate(request, snapshot, quote_max_age_s=settings.quote_max_age_s,
                           max_quantity=settings.order_max_quantity)
    answer = await resources.db.run_retrying(_place, user_id, request, snapshot, band,
                                             trading_rules(resources), key, fingerprint)
    return OrderDetailOut.model_validate(answer)


def _list(session: Session, user_id: int, statuses: tuple[str, ...], code: str | None,
          cursor: str | None, limit: int) -> OrdersPage:
    page = service.list_orders(session, user_id, statuses=statuses, code=code, cursor=cursor,
                               limit=limit)
    return OrdersPage(items=[OrderOut.of(order) for order in page.items],
                      next_cursor=page.next_cursor)


@router.get("/orders", responses=problems({
    422: "`validation_error`, `invalid_code`, `invalid_cursor`",
}))
async def list_orders(
    principal: CurrentUser,
    resources: ResourcesDep,
    status: Annotated[list[OrderStatus] | None,
                      Query(description="only orders in these states (repeatable)")] = None,
    code: Annotated[str | None, Query(max_length=16)] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> OrdersPage:
    """The signed-in user's orders, newest first, with cursor pagination."""
    statuses = tuple(s.value for s in status or ())
    return await resources.db.read(_list, principal.user_id, statuses,
                                  None if code is None else checked_code(code), cursor, limit)


def _get(session: Session, user_id: int, order_id: int) -> OrderDetailOut:
    return _detail(session, service.get(session, user_id, order_id))


@router.get("/orders/{order_id}", responses=problems({404: "`order_not_found`"}))
async def get_order(order_id: RowId, principal: CurrentUser,
                    resources: ResourcesDep) -> OrderDetailOut:
    """One order with its fills (each with what priced it)."""
    return await resources.db.read(_get, principal.user_id, order_id)


def _cancel(session: Session, user_id: int, order_id: int) -> OrderDetailOut:
    return _detail(session, service.cancel(session, user_id, order_id))


@router.delete("/orders/{order_id}", responses=problems({
    404: "`order_not_found`", 409: "`order_not_live`",
}))
async def cancel_order(order_id: RowId, principal: CurrentUser,
                       resources: ResourcesDep) -> OrderDetailOut:
    """Cancel what is left of an open or partially filled order; its holds are released.
    Fills that already happened stay."""
    return await resources.db.run_retrying(_cancel, principal.user_id, order_id)


def _modify(session: Session, user_id: int, order_id: int, body: OrderModify,
            snapshot: MarketSnapshot, rules: service.TradingRules) -> OrderDetailOut:
    return _detail(session, service.modify(session, user_id, order_id, price=body.price,
                                           quantity=body.quantity, snapshot=snapshot,
                                           rules=rules))


def _code_of(session: Session, user_id: int, order_id: int) -> str:
    return service.get(session, user_id, order_id).code


@router.patch("/orders/{order_id}", responses=problems({
    404: "`order_not_found`",
    409: "`order_not_live`, `order_not_modifiable`",
    422: "`validation_error`, `invalid_tick_size`, `price_out_of_band`, `no_quote`, "
         "`quantity_over_limit`, `quantity_not_above_filled`, `insufficient_funds`, "
         "`insufficient_shares`",
}))
async def modify_order(order_id: RowId, body: OrderModify, principal: CurrentUser,
                       resources: ResourcesDep) -> OrderDetailOut:
    """Change a resting LIMIT order's price and/or total quantity. A new price or a larger
    quantity loses time priority (the order rests from now); a smaller quantity keeps it."""
    code = await resources.db.read(_code_of, principal.user_id, order_id)
    snapshot = await market_snapshot(resources, code)
    return await resources.db.run_retrying(_modify, principal.user_id, order_id, body,
                                           snapshot, trading_rules(resources))
