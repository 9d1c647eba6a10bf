"""주문가능 조회: how many shares of one instrument the user could order now, answered by the
order path's own rules so that the numbers are exactly what an order would accept.

- The price is checked as an order's would be (api.orders.checks.accept: a tradable
  instrument, a quote, the tick grid and the day's band), by a one-share order of the same
  shape, so a refusal here carries the order's problem code. While the market is closed the
  probe is a reservation order (the only order accepted then), checked against the band of the
  day it would trade in.
- The price a buy reserves at is the accepted order's `reserve_at`: the limit, or for a market
  buy the upper price limit (the most it could fill at).
- A buy may hold at most the available cash (`cash - held_cash`), and holds
  `Costs.buy_reservation` (value plus the most commission its fills can cost): the largest
  quantity whose reservation fits is found by bisection over that same function, never by an
  inverted formula that could round differently.
- A sell may hold at most the position's shares not held by live sell orders.
- Both are capped by ORDER_MAX_QUANTITY, the most one order may ask for.

It reads the account without locking it: the answer is a snapshot, and an order placed after
it is checked again under the account lock.
"""

from __future__ import annotations

from bisect import bisect_right

from sqlalchemy.orm import Session

from api.instruments.codes import checked_code
from api.ledger.service import get_account
from api.market.rules import Costs
from api.models import OrderType, Position, Side, TimeInForce
from api.orders.checks import AcceptedOrder, OrderRequest, accept
from api.orders.snapshot import market_snapshot
from api.portfolio.schemas import BuyingPowerOut, PricedAt
from api.resources import Resources
from relayer.market_calendar import Session as MarketSession


async def buying_power_of(resources: Resources, user_id: int, code: str,
                          price: int | None) -> BuyingPowerOut:
    """What the user could buy and sell of `code` in one order at `price` (None: at market),
    checked and priced as that order would be."""
    code = checked_code(code)
    snapshot = await market_snapshot(resources, code)
    now = resources.clock()
    closed = resources.calendar.session_at(now) is MarketSession.CLOSED
    probe = OrderRequest(code=code, side=Side.BUY,
                         type=OrderType.MARKET if price is None else OrderType.LIMIT,
                         quantity=1, price=price, time_in_force=TimeInForce.DAY,
                         client_order_id=None, reserve=closed)
    rules = resources.trading_rules
    accepted = accept(probe, snapshot, quote_max_age_s=resources.settings.quote_max_age_s,
                      max_quantity=rules.max_quantity, calendar=resources.calendar, now=now)
    assert snapshot.instrument is not None  # accept refuses a code the master lacks
    cash, shares = await resources.db.read(_available, user_id, code)
    reserve_at = accepted.reserve_at
    quantity = affordable_quantity(rules.costs, reserve_at, cash, rules.max_quantity)
    return BuyingPowerOut(
        code=code, name=snapshot.instrument.name, price=reserve_at,
        priced_at=_priced_at(accepted), cash_available=cash, max_buy_quantity=quantity,
        buy_cost=(rules.costs.buy_reservation(quantity, reserve_at, first_fill_pending=True)
                  if quantity else 0),
        max_sell_quantity=min(shares, rules.max_quantity))


def _priced_at(accepted: AcceptedOrder) -> PricedAt:
    if accepted.request.price is not None:
        return PricedAt.LIMIT_PRICE
    return (PricedAt.UPPER_LIMIT if accepted.reserve_at == accepted.band.upper
            else PricedAt.LAST_TRADE)


def affordable_quantity(costs: Costs, price: int, cash: int, max_quantity: int) -> int:
    """The most shares, up to `max_quantity`, that a new buy at `price` may order with `cash`
    available: the largest q whose reservation (`Costs.buy_reservation`, what placing it
    would hold) is at most `cash`. The reservation never falls as q grows, so bisection over
    0..max_quantity finds it in ~20 steps."""
    fitting = bisect_right(range(max_quantity + 1), cash, key=lambda quantity: (
        costs.buy_reservation(quantity, price, first_fill_pending=True)))
    return max(fitting - 1, 0)


def _available(session: Session, user_id: int, code: str) -> tuple[int, int]:
    """Unit of work: the account's available cash and the shares of `code` not held by live
    sell orders (404 `account_not_found` without an account)."""
    account = get_account(session, user_id)
    position = session.get(Position, (user_id, code))
    return account.available_cash, 0 if position is None else position.available_quantity
