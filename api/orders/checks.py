"""Checks an order must pass before it touches the account (docs/TRADING.md), as pure
functions of the request and the market snapshot. Each failure is a 422 with a stable code and
a message that says what would be accepted."""

from __future__ import annotations

from dataclasses import dataclass

from api.errors import Unprocessable
from api.market.rules import PriceBand
from api.models import OrderType, Side, TimeInForce
from api.orders.snapshot import MarketSnapshot
from relayer.bus import Quote
from relayer.krx import is_on_grid, tick_size


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A new order as the client asked for it (already structurally valid)."""

    code: str
    side: Side
    type: OrderType
    quantity: int
    price: int | None
    time_in_force: TimeInForce
    client_order_id: str | None


def require_quote(snapshot: MarketSnapshot) -> Quote:
    if snapshot.quote is None:
        raise Unprocessable(
            f"no price for {snapshot.code} yet: the instrument has no quote (is it "
            "subscribed? see /api/v1/admin/websocket/subscriptions)", code="no_quote")
    return snapshot.quote


def require_fresh_quote(snapshot: MarketSnapshot, max_age_s: float) -> Quote:
    """The quote, if it is recent enough to trade on at once (QUOTE_MAX_AGE_S)."""
    quote = require_quote(snapshot)
    age = snapshot.quote_age_s
    if age is None or age > max_age_s:
        shown = "unknown" if age is None else f"{age:.1f} s"
        raise Unprocessable(
            f"the last trade of {snapshot.code} is too old to execute against (age {shown}, "
            f"at most {max_age_s:g} s): market data is not flowing for it",
            code="stale_quote", quote_age_s=age, max_age_s=max_age_s)
    return quote


def check_limit_price(price: int, band: PriceBand) -> None:
    """On the KRX tick grid and within today's +/-30% band."""
    if not is_on_grid(price):
        tick = tick_size(price)
        raise Unprocessable(
            f"{price} KRW is not a valid price: at this level prices move in steps of {tick} "
            f"KRW (nearest: {price - price % tick} or {price - price % tick + tick})",
            code="invalid_tick_size", tick_size=tick)
    if price not in band:
        raise Unprocessable(
            f"{price} KRW is outside today's price limits {band.lower}-{band.upper} KRW "
            "(the reference price +/-30%)",
            code="price_out_of_band", lower_limit=band.lower, upper_limit=band.upper)


def check_quantity(quantity: int, max_quantity: int) -> None:
    if quantity > max_quantity:
        raise Unprocessable(f"at most {max_quantity} shares per order",
                            code="quantity_over_limit", max_quantity=max_quantity)


def check_shape(request: OrderRequest) -> None:
    """A limit order names its price; a market order does not."""
    if request.type is OrderType.LIMIT and request.price is None:
        raise Unprocessable("a LIMIT order needs a price", code="price_required")
    if request.type is OrderType.MARKET and request.price is not None:
        raise Unprocessable("a MARKET order takes no price: it fills at the last trade price",
                            code="price_not_allowed")


def executes_at_once(request: OrderRequest) -> bool:
    """Market orders, and IOC/FOK limit orders, are decided in the request; DAY and GTC limit
    orders rest in the book for the fills worker."""
    return request.type is OrderType.MARKET or request.time_in_force in (TimeInForce.IOC,
                                                                          TimeInForce.FOK)


def marketable(side: Side, limit: int, trade_price: int) -> bool:
    """A trade at or through the limit: buy when trade <= limit, sell when trade >= limit."""
    return trade_price <= limit if side is Side.BUY else trade_price >= limit


def validate(request: OrderRequest, snapshot: MarketSnapshot, *, quote_max_age_s: float,
             max_quantity: int) -> PriceBand:
    """Every check that needs no account: the order's shape, quantity, price (tick and band)
    and, for orders that execute at once, a fresh quote. Returns today's band."""
    check_shape(request)
    check_quantity(request.quantity, max_quantity)
    quote = (require_fresh_quote(snapshot, quote_max_age_s) if executes_at_once(request)
             else require_quote(snapshot))
    band = PriceBand.around(quote.base)
    if request.price is not None:
        check_limit_price(request.price, band)
    return band
