"""The rules of the virtual market (DESIGN.md section 4), as pure functions of integers.

Prices and amounts are whole KRW. Rates are `Decimal`, so that 0.015% is exactly 0.00015 and no
float ever touches money. Every rounding rule lives here, and docs/TRADING.md states each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal

# Korea has no daylight saving time: KST is always UTC+9.
KST = timezone(timedelta(hours=9), "KST")

# KRX tick sizes: (price from which the tick applies, tick), highest band first.
_TICKS: tuple[tuple[int, int], ...] = (
    (500_000, 1_000),
    (200_000, 500),
    (50_000, 100),
    (20_000, 50),
    (5_000, 10),
    (2_000, 5),
    (0, 1),
)
# Daily price limits: the reference price (`base`) plus or minus 30%.
LIMIT_NUMERATOR, LIMIT_DENOMINATOR = 3, 10


def tick_size(price: int) -> int:
    """The KRX tick for a price: 1 below 2,000 ... 1,000 from 500,000 up."""
    for floor, tick in _TICKS:
        if price >= floor:
            return tick
    raise ValueError(f"a price is not negative: {price}")


def is_on_tick(price: int) -> bool:
    return price > 0 and price % tick_size(price) == 0


def floor_to_tick(price: int) -> int:
    """The highest valid price at or below `price`."""
    return price - price % tick_size(price)


def ceil_to_tick(price: int) -> int:
    """The lowest valid price at or above `price`. The band boundaries (2,000, 5,000, ...) are
    multiples of every smaller tick, so rounding up never lands off the grid."""
    remainder = price % tick_size(price)
    return price if remainder == 0 else price + tick_size(price) - remainder


@dataclass(frozen=True, slots=True)
class PriceBand:
    """The prices an order may carry today: within 30% of the reference price, on the grid.
    The upper limit rounds down and the lower limit rounds up, so both stay inside 30%."""

    lower: int
    upper: int

    @classmethod
    def around(cls, base: int) -> PriceBand:
        if base <= 0:
            raise ValueError(f"a reference price is positive: {base}")
        swing = base * LIMIT_NUMERATOR
        upper = floor_to_tick(base + swing // LIMIT_DENOMINATOR)
        lower = ceil_to_tick(max(base - swing // LIMIT_DENOMINATOR, 1))
        return cls(lower=lower, upper=upper)

    def __contains__(self, price: object) -> bool:
        return isinstance(price, int) and self.lower <= price <= self.upper


@dataclass(frozen=True, slots=True)
class Costs:
    """Commission on both sides and tax on sells, each rounded down to the whole won (as
    Korean brokers and the securities transaction tax do: amounts under 1 KRW are dropped)."""

    commission_rate: Decimal
    sell_tax_rate: Decimal

    def commission(self, value: int) -> int:
        return _floor(value * self.commission_rate)

    def tax(self, value: int, *, sell: bool) -> int:
        return _floor(value * self.sell_tax_rate) if sell else 0

    def buy_reservation(self, quantity: int, price: int) -> int:
        """Cash a buy of `quantity` at `price` holds: its value plus its commission. Because
        rounding down is superadditive (floor(a) + floor(b) <= floor(a + b)), releasing the
        reservation of a filled part always covers that part's cost."""
        value = quantity * price
        return value + self.commission(value)


def _floor(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_FLOOR))


def session_close_after(moment: datetime, close: time) -> datetime:
    """The first session close (KST wall clock `close`) strictly after `moment`: when a DAY
    order accepted at `moment` expires. Every calendar day has a close; the simulator trades
    around the clock, and holidays are not modelled (docs/TRADING.md)."""
    local = moment.astimezone(KST)
    today_close = datetime.combine(local.date(), close, tzinfo=KST)
    if local < today_close:
        return today_close
    return datetime.combine(local.date() + timedelta(days=1), close, tzinfo=KST)
