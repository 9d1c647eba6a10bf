"""HTTP routes of api.orders: place, list, read, cancel and modify orders. Each parses the
request and calls one function of api.orders.service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import ResourcesDep
from api.idempotency import IdempotencyKeyHeader
from api.ids import RowId
from api.models import OrderStatus
from api.openapi import problems
from api.orders import service
from api.orders.schemas import OrderCreate, OrderDetailOut, OrderModify, OrdersPage
from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from api.portfolios.deps import AccountId

router = APIRouter(tags=["orders"])

JSON = "application/json"

_REFUSALS = ("`validation_error`, `invalid_code`, `price_required`, `price_not_allowed`, "
             "`quantity_over_limit`, `invalid_tick_size`, `price_out_of_band`, `no_quote`, "
             "`stale_quote`, `insufficient_funds`, `insufficient_shares`")


# The answer is the JSON the service built (and recorded for the Idempotency-Key) once;
# `response_model` documents it.
@router.post("/orders", status_code=201, response_model=OrderDetailOut, responses=problems({
    404: "`account_not_found`",
    409: "`duplicate_client_order_id`, `too_many_open_orders` (ORDERS_MAX_OPEN_PER_USER live "
         "orders already), `market_closed` (with `next_open`; send `reserve: true` for a "
         "reservation order), `market_open` (a reservation while the market is open), "
         "`auction_in_progress` (IOC or FOK during a call auction)",
    422: _REFUSALS + ", `reserve_not_allowed`, `idempotency_key_reused`",
}))
async def place_order(body: OrderCreate, account_id: AccountId, resources: ResourcesDep,
                      key: IdempotencyKeyHeader = None) -> Response:
    """Place an order. In the continuous session, MARKET orders, and IOC/FOK LIMIT orders,
    execute in the request at the last trade's price; a DAY or GTC LIMIT order that the last
    trade already reaches does too, for what that trade can fill; the rest rests until a trade
    prints at or through its price. In a call auction every order rests for the auction's
    price; while the market is closed only a reservation order (`reserve: true`) is accepted
    (docs/TRADING.md, "Sessions and orders")."""
    return Response(await service.place_order(resources, account_id, body, key),
                    status_code=201, media_type=JSON)


@router.get("/orders", responses=problems({
    422: "`validation_error`, `invalid_code`, `invalid_cursor`",
}))
async def list_orders(
    account_id: AccountId,
    resources: ResourcesDep,
    status: Annotated[list[OrderStatus] | None,
                      Query(description="only orders in these states (repeatable)")] = None,
    code: Annotated[str | None, Query(max_length=16)] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> OrdersPage:
    """The portfolio's orders, newest first, with cursor pagination."""
    return await service.orders_page(resources, account_id,
                                     statuses=tuple(s.value for s in status or ()), code=code,
                                     cursor=cursor, limit=limit)


@router.get("/orders/{order_id}", responses=problems({404: "`order_not_found`"}))
async def get_order(order_id: RowId, account_id: AccountId,
                    resources: ResourcesDep) -> OrderDetailOut:
    """One order with its fills (each with what priced it)."""
    return await service.get_order(resources, account_id, order_id)


@router.delete("/orders/{order_id}", responses=problems({
    404: "`order_not_found`", 409: "`order_not_live`",
}))
async def cancel_order(order_id: RowId, account_id: AccountId,
                       resources: ResourcesDep) -> OrderDetailOut:
    """Cancel what is left of an open or partially filled order; its holds are released.
    Fills that already happened stay."""
    return await service.cancel_order(resources, account_id, order_id)


@router.patch("/orders/{order_id}", responses=problems({
    404: "`order_not_found`",
    409: "`order_not_live`, `order_not_modifiable`",
    422: "`validation_error`, `invalid_tick_size`, `price_out_of_band`, `no_quote`, "
         "`quantity_over_limit`, `quantity_not_above_filled`, `insufficient_funds`, "
         "`insufficient_shares`",
}))
async def modify_order(order_id: RowId, body: OrderModify, account_id: AccountId,
                       resources: ResourcesDep) -> OrderDetailOut:
    """Change a resting LIMIT order's price and/or total quantity. A new price or a larger
    quantity loses time priority (the order rests from now); a smaller quantity keeps it."""
    return await service.modify_order(resources, account_id, order_id, body)
