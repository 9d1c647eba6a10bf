"""Checks an order must pass before it touches the account (docs/TRADING.md), as pure
functions of the request and the market snapshot: `accept` runs them all once and gives the
`AcceptedOrder` that placement works from. Each failure is a 422 with a stable code and a
message that says what would be accepted. `rests` is the one definition of which orders rest on
the book."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from api.errors import Conflict, Unprocessable
from api.instruments.gate import require_tradable
from api.market.rules import PriceBand, day_start
from api.market.rules import day_base as base_of_day
from api.models import OrderType, Side, TimeInForce
from api.orders.snapshot import MarketSnapshot
from relayer.bus import Quote
from relayer.krx import Market, PriceRules, SecurityKind
from relayer.market_calendar import KST, MarketCalendar, Session, TradingDay

# The call auctions: orders are collected and trade at one price when it prints.
AUCTIONS = (Session.OPENING_AUCTION, Session.CLOSING_AUCTION)


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
    reserve: bool = False  # a reservation order (예약주문), for the next trading day


def rests(type: OrderType, time_in_force: TimeInForce) -> bool:
    """DAY and GTC limit orders rest on the book, for the fills worker; the others (MARKET,
    IOC, FOK) are decided in their request. A stored order rests exactly when it has a
    `rests_after` (the stream position it listens from)."""
    return type is OrderType.LIMIT and time_in_force in (TimeInForce.DAY, TimeInForce.GTC)


@dataclass(frozen=True, slots=True)
class AcceptedOrder:
    """An order that passed every check that needs no account, with what it was checked
    against: the quote (present, and fresh if the order executes now), the band of its trading
    day, the session it arrives in and that day (its DAY expiry, a reservation's activation)."""

    request: OrderRequest
    quote: Quote
    band: PriceBand
    stream_last_id: str  # where a resting order starts listening
    quote_fresh: bool  # recent enough to trade on at once (QUOTE_MAX_AGE_S)
    market: Market
    kind: SecurityKind
    session: Session
    day: TradingDay  # the trading day it belongs to

    @property
    def reserved(self) -> bool:
        """A reservation order: it holds at once and waits, not in the market, until the
        fills worker activates it at its day's opening auction."""
        return self.request.reserve

    @property
    def rests(self) -> bool:
        """It rests on the book from its request: a DAY or GTC limit order, and, during a call
        auction, a market order too (it waits for the auction's price)."""
        if self.reserved:
            return False
        return (rests(self.request.type, self.request.time_in_force)
                or self.session in AUCTIONS)

    @property
    def stays_live(self) -> bool:
        """It may outlive its request (so it counts against the open-order limit)."""
        return self.reserved or self.rests

    @property
    def expires(self) -> bool:
        """It expires at its day's close: a DAY limit order, and a market order that waits
        for an auction's price (if none prints, it ends with the day)."""
        return self.stays_live and (self.request.type is OrderType.MARKET
                                    or self.request.time_in_force is TimeInForce.DAY)

    @property
    def trades_on_arrival(self) -> bool:
        """Whether it executes in its request: in the continuous session only, MARKET, IOC
        and FOK always; a DAY or GTC limit order when the last trade, fresh enough to trade
        on, already reaches its limit. Such an order is an aggressor, as on the exchange: what
        the last trade cannot fill rests. During a call auction nothing trades before the
        auction's price."""
        if self.reserved or self.session is not Session.CONTINUOUS:
            return False
        if not self.rests:
            return True
        assert self.request.price is not None  # a resting order is a limit order
        return self.quote_fresh and marketable(self.request.side, self.request.price,
                                               self.quote.price)

    @property
    def reserve_at(self) -> int:
        """The price a buy's cash is reserved at: its limit, or for a market buy the upper
        price limit (the most it could cost)."""
        if self.request.price is not None:
            return self.request.price
        return max(self.band.upper, self.quote.price)


def require_quote(snapshot: MarketSnapshot) -> Quote:
    if snapshot.quote is None:
        raise Unprocessable(
            f"no price for {snapshot.code} yet: the instrument has no quote (is it "
            "subscribed? see /api/v1/admin/websocket/subscriptions)", code="no_quote")
    return snapshot.quote


def is_fresh(snapshot: MarketSnapshot, max_age_s: float) -> bool:
    """Whether the quote is recent enough to trade on at once (QUOTE_MAX_AGE_S)."""
    age = snapshot.quote_age_s
    return age is not None and age <= max_age_s


def require_fresh_quote(snapshot: MarketSnapshot, max_age_s: float) -> Quote:
    """The quote, if it is recent enough to trade on at once (QUOTE_MAX_AGE_S)."""
    quote = require_quote(snapshot)
    age = snapshot.quote_age_s
    if not is_fresh(snapshot, max_age_s):
        shown = "unknown" if age is None else f"{age:.1f} s"
        raise Unprocessable(
            f"the last trade of {snapshot.code} is too old to execute against (age {shown}, "
            f"at most {max_age_s:g} s): market data is not flowing for it",
            code="stale_quote", quote_age_s=age, max_age_s=max_age_s)
    return quote


def check_limit_price(price: int, band: PriceBand) -> None:
    """On the instrument's tick grid and within today's band."""
    if not band.rules.is_on_grid(price):
        tick = band.rules.tick_size(price)
        raise Unprocessable(
            f"{price} KRW is not a valid price: at this level prices move in steps of {tick} "
            f"KRW (nearest: {price - price % tick} or {price - price % tick + tick})",
            code="invalid_tick_size", tick_size=tick)
    if price not in band:
        raise Unprocessable(
            f"{price} KRW is outside today's price limits {band.lower}-{band.upper} KRW "
            f"(the base price +/-{band.rules.limit_percent}%)",
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


def trade_time(quote: Quote) -> datetime:
    """When the quote's trade printed (its `ts`, which the bus codec checked)."""
    return datetime.strptime(quote.ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def day_base(quote: Quote, now: datetime, calendar: MarketCalendar) -> int:
    """The base price of the trading day of `now` (api.market.rules.day_base)."""
    return base_of_day(quote.price, quote.base, trade_time(quote), day_start(calendar, now))


def day_band(quote: Quote, rules: PriceRules, now: datetime,
             calendar: MarketCalendar) -> PriceBand:
    """The prices an order may carry in the trading day of `now` (docs/TRADING.md, "Daily price
    limits"): the instrument's limits around the day's base. After the close that is the next
    trading day, whose base is the closing price: the band a reservation order will trade in."""
    return PriceBand.around(day_base(quote, now, calendar), rules)


def marketable(side: Side, limit: int, trade_price: int) -> bool:
    """A trade at or through the limit: buy when trade <= limit, sell when trade >= limit."""
    return trade_price <= limit if side is Side.BUY else trade_price >= limit


def check_session(request: OrderRequest, session: Session, day: TradingDay) -> None:
    """What the market's session allows (docs/TRADING.md, "Sessions and orders"): no order
    while the market is closed unless it is a reservation; reservations only while it is
    closed; no IOC or FOK in a call auction or as a reservation (nothing trades at once then,
    and these have no later)."""
    immediate = request.time_in_force in (TimeInForce.IOC, TimeInForce.FOK)
    if request.reserve:
        if session is not Session.CLOSED:
            raise Conflict(f"the market is open ({session}): place the order itself, a "
                           "reservation is for when the market is closed",
                           code="market_open", session=session.value)
        if immediate and request.type is OrderType.LIMIT:
            raise Unprocessable(f"a reservation order cannot be {request.time_in_force}: it "
                                "trades from the next opening auction on (DAY or GTC)",
                                code="reserve_not_allowed")
        return
    if session is Session.CLOSED:
        # `next_open` is when continuous trading begins, as the market clock says it
        # (GET /api/v1/market/clock); orders are accepted again from the opening auction
        # before it, `orders_accepted_from`.
        next_open = day.open.astimezone(KST).isoformat()
        accepted_from = day.auction_start.astimezone(KST).isoformat()
        raise Conflict(f"the market is closed: orders are accepted again from the opening "
                       f"auction at {accepted_from} (trading opens at {next_open}); send "
                       '"reserve": true to place a reservation order for that day',
                       code="market_closed", next_open=next_open,
                       orders_accepted_from=accepted_from)
    if session in AUCTIONS and immediate and request.type is OrderType.LIMIT:
        raise Conflict(f"a call auction is in progress ({session}): orders wait for its "
                       f"single price, so an {request.time_in_force} order cannot be "
                       "decided now (send a DAY or GTC order, or wait for the continuous "
                       "session)", code="auction_in_progress", session=session.value)


def accept(request: OrderRequest, snapshot: MarketSnapshot, *, quote_max_age_s: float,
           max_quantity: int, calendar: MarketCalendar, now: datetime) -> AcceptedOrder:
    """Every check that needs no account: a tradable instrument, the order's shape, quantity,
    what the session at `now` allows, price (tick and the band of the day of `now`) and a
    quote, fresh for an order that executes now."""
    instrument = require_tradable(request.code, snapshot.instrument)
    check_shape(request)
    check_quantity(request.quantity, max_quantity)
    session = calendar.session_at(now)
    day = calendar.day_of(now)
    check_session(request, session, day)
    executes_now = (session is Session.CONTINUOUS and not request.reserve
                    and not rests(request.type, request.time_in_force))
    quote = (require_fresh_quote(snapshot, quote_max_age_s) if executes_now
             else require_quote(snapshot))
    band = day_band(quote, snapshot.price_rules, now, calendar)
    if request.price is not None:
        check_limit_price(request.price, band)
    return AcceptedOrder(request, quote, band, snapshot.stream_last_id,
                         quote_fresh=is_fresh(snapshot, quote_max_age_s),
                         market=instrument.market, kind=instrument.kind,
                         session=session, day=day)
