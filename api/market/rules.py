"""The rules of the virtual market (docs/TRADING.md), as pure functions of integers. The
KRX price grid and limits themselves are relayer.krx, shared with the simulator.

Prices and amounts are whole KRW. Rates are `Decimal`, so that 0.015% is exactly 0.00015 and no
float ever touches money. Every rounding rule lives here, and docs/TRADING.md states each one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

from api.market.taxes import SaleTaxes, TaxSchedule
from relayer.krx import STOCK, Market, PriceRules, SecurityKind
from relayer.market_calendar import MarketCalendar

if TYPE_CHECKING:
    from api.settings import ApiSettings

# Korea has no daylight saving time: KST is always UTC+9.
KST = timezone(timedelta(hours=9), "KST")


@dataclass(frozen=True, slots=True)
class PriceBand:
    """The prices an order may carry today: on the instrument's grid, within its limits around
    the base price (relayer.krx: the simulator prints within the same limits)."""

    lower: int
    upper: int
    rules: PriceRules = STOCK

    @classmethod
    def around(cls, base: int, rules: PriceRules = STOCK) -> PriceBand:
        if base <= 0:
            raise ValueError(f"a reference price is positive: {base}")
        lower, upper = rules.price_limits(base)
        return cls(lower=lower, upper=upper, rules=rules)

    def __contains__(self, price: object) -> bool:
        return isinstance(price, int) and self.lower <= price <= self.upper


@dataclass(frozen=True, slots=True)
class Costs:
    """Commission on both sides and taxes on sells (docs/TRADING.md, "Costs"), each rounded
    down to the whole won (as Korean brokers and the taxes do: amounts under 1 KRW are
    dropped).

    Commission is `commission_rate` of each fill's value; an order's first fill pays at least
    `commission_min` (a minimum per order, as brokers that have one charge it). Taxes follow
    the schedule by the instrument's market and kind and the trade date (api.market.taxes)."""

    commission_rate: Decimal
    commission_min: int = 0
    taxes: TaxSchedule = field(default_factory=TaxSchedule.load)

    @classmethod
    def none(cls) -> Costs:
        """No commission and no tax: the closing sales of a portfolio reset
        (api.portfolios.reset). Every kind is exempt, so no tax period is ever looked up."""
        return cls(Decimal(0), 0, TaxSchedule(periods=(), exempt_kinds=frozenset(SecurityKind)))

    def commission(self, value: int, *, first_fill: bool = False) -> int:
        commission = _floor(value * self.commission_rate)
        return max(commission, self.commission_min) if first_fill else commission

    def sale_taxes(self, market: Market, kind: SecurityKind, value: int,
                   at: datetime) -> SaleTaxes:
        """The taxes on a sale of `value` won traded at `at` (its KST date picks the rates)."""
        return self.taxes.on_sale(market, kind, at.astimezone(KST).date(), value)

    def buy_reservation(self, quantity: int, price: int, *, first_fill_pending: bool) -> int:
        """Cash a buy of `quantity` at `price` holds: its value plus the most commission its
        fills can cost. Because rounding down is superadditive (floor(a) + floor(b) <=
        floor(a + b)), the fills of `value` in parts pay at most floor(value x rate) in all,
        plus, while the order's first fill is still to come, the minimum it may pay on top: so
        releasing the reservation of a filled part always covers that part's cost."""
        value = quantity * price
        return (value + _floor(value * self.commission_rate)
                + (self.commission_min if first_fill_pending else 0))


@dataclass(frozen=True, slots=True)
class TradingRules:
    """The settings an order transaction needs, built once per process (api.resources)."""

    costs: Costs
    max_quantity: int
    max_open_orders: int

    @classmethod
    def of(cls, settings: ApiSettings) -> TradingRules:
        costs = Costs(settings.commission_rate, settings.commission_min_krw,
                      TaxSchedule.load(settings.sell_tax_schedule_file))
        return cls(costs,
                   max_quantity=settings.order_max_quantity,
                   max_open_orders=settings.orders_max_open_per_user)


def _floor(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_FLOOR))


def day_start(calendar: MarketCalendar, now: datetime) -> datetime:
    """When the trading day that `now` belongs to began, for its base price: the opening
    auction of `calendar.day_of(now)`. Every trade before it belongs to an earlier day.

    Why not `calendar.previous_close(now)`: on a calendar with closed hours the closing
    auction's print lands at the close itself, or a moment after it (its trade time in whole
    seconds, the relayer's delay); it is the previous day's last trade, the next day's base,
    and nothing else trades until the next opening auction. On `always_open` the two are the
    same moment (a day begins at the previous close). The one place that decides which day it
    is: orders, the fills worker, quotes and instrument details ask it."""
    return calendar.day_of(now).auction_start


def day_base(price: int, base: int, traded_at: datetime, day_start: datetime) -> int:
    """The day's base price (기준가, the previous close) from the last trade: a trade printed
    before the day began (`day_start`) is the previous session's last, so its price is
    today's base, while the `base` it carries is yesterday's; a trade of this day carries the
    day's base. Orders and the quotes' limits both use it, so a quote shows the band an order
    is checked against."""
    return price if traded_at < day_start else base
