"""Request and response bodies of the order endpoints."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from api.models import Fill, FillRule, Order, OrderStatus, OrderType, Side, TimeInForce
from api.text import ClientId
from relayer.market_calendar import Session as MarketSession


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=16, examples=["A005930"])
    side: Side
    type: OrderType
    quantity: StrictInt = Field(gt=0, description="whole shares")
    price: StrictInt | None = Field(None, gt=0, description="limit price, KRW (LIMIT only)")
    time_in_force: TimeInForce = TimeInForce.DAY
    client_order_id: ClientId | None = Field(None, description="your own id, unique among "
                                                               "your orders")
    reserve: StrictBool = Field(False, description="a reservation order (예약주문), only while "
                                                   "the market is closed: it holds at once "
                                                   "and trades from the next opening auction "
                                                   "(status RESERVED until then)")


class OrderModify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price: StrictInt | None = Field(None, gt=0, description="new limit price, KRW")
    quantity: StrictInt | None = Field(None, gt=0,
                                       description="new total quantity (filled shares count)")

    @model_validator(mode="after")
    def _something_changes(self) -> OrderModify:
        if self.price is None and self.quantity is None:
            raise ValueError("give a new price, a new quantity, or both")
        return self


class FillOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    quantity: int
    price: int = Field(description="KRW per share")
    value: int = Field(description="quantity * price, KRW")
    commission: int
    tax: int = Field(description="sell taxes, KRW: the sum of the two below (0 on a buy)")
    securities_transaction_tax: int = Field(description="증권거래세, KRW, rounded down")
    rural_special_tax: int = Field(description="농어촌특별세 (KOSPI sales), KRW, rounded down")
    tick_id: str = Field(description="the trade print that priced it: its stream entry id "
                                     "(a quote's `tick_id`), or `quote:{seq}` when the quote "
                                     "that priced it carried none")
    tick_seq: int | None
    tick_ts: str | None = Field(description="the trade time of that tick, as upstream sent it")
    rule: FillRule = Field(description="how the price was set: `market_order_last_trade` (a "
                                       "market order, at the last trade), "
                                       "`aggressor_last_trade` (a limit order that the last "
                                       "trade reached when it arrived, at that trade's price), "
                                       "`resting_limit` (a resting limit order reached by a "
                                       "later trade, at its limit), `auction_price` (an "
                                       "order filled by a call auction's single price)")
    created_at: datetime


class OrderOut(BaseModel):
    id: int
    client_order_id: str | None
    code: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    quantity: int
    price: int | None
    status: OrderStatus
    reason: str | None = Field(description="why it ended, if not by filling: user, "
                                           "ioc_remainder, fok_not_fillable, session_close, "
                                           "outside_price_limits (a GTC order outside a new "
                                           "day's band, or a reservation outside its day's "
                                           "band when activated)")
    session: MarketSession = Field(description="the market session it was accepted in: CONTINUOUS, "
                                     "OPENING_AUCTION, CLOSING_AUCTION, or CLOSED (a "
                                     "reservation order)")
    filled_quantity: int
    remaining_quantity: int
    avg_fill_price: Decimal | None = Field(description="value-weighted, 2 decimals; a string")
    held_cash: int = Field(description="cash this order still reserves")
    expires_at: datetime | None
    activates_at: datetime | None = Field(description="a reservation order: when it enters "
                                                      "the market (its day's opening auction)")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls(**_order_fields(order))


class OrderDetailOut(OrderOut):
    fills: list[FillOut]

    @classmethod
    def with_fills(cls, order: Order, fills: list[Fill]) -> OrderDetailOut:
        return cls(**_order_fields(order), fills=[FillOut.model_validate(f) for f in fills])


def _order_fields(order: Order) -> dict[str, object]:
    average = (None if order.filled_quantity == 0 else
               (Decimal(order.filled_value) / order.filled_quantity)
               .quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))
    return {
        "id": order.id, "client_order_id": order.client_order_id, "code": order.code,
        "side": order.side, "type": order.type, "time_in_force": order.time_in_force,
        "quantity": order.quantity, "price": order.price, "status": order.status,
        "reason": order.reason, "filled_quantity": order.filled_quantity,
        "remaining_quantity": order.remaining_quantity, "avg_fill_price": average,
        "held_cash": order.held_cash, "expires_at": order.expires_at,
        "activates_at": order.activates_at, "session": order.market_session,
        "created_at": order.created_at, "updated_at": order.updated_at,
    }


class OrdersPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at "
                                                "the end")
