"""The rules of the virtual market (docs/TRADING.md), as pure functions of integers. The
KRX price grid and limits themselves are relayer.krx, shared with the simulator.

Prices and amounts are whole KRW. Rates are `Decimal`, so that 0.015% is exactly 0.00015 and no
float ever touches money. Every rounding rule lives here, and docs/TRADING.md states each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal

from relayer.krx import price_limits

# Korea has no daylight saving time: KST is always UTC+9.
KST = timezone(timedelta(hours=9), "KST")

@dataclass(frozen=True, slots=True)
class PriceBand:
    """The prices an order may carry today: within 30% of the reference price, on the grid
    (relayer.krx: the simulator prints within the same limits)."""

    lower: int
    upper: int

    @classmethod
    def around(cls, base: int) -> PriceBand:
        if base <= 0:
            raise ValueError(f"a reference price is positive: {base}")
        lower, upper = price_limits(base)
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
