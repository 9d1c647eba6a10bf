"""The KRX price grid and daily price limits: the one definition shared by the exchange simulator
(which must never print a price off them) and the API's order checks (which refuse one).

Tick sizes (호가가격단위, KOSPI/KOSDAQ since 2023) are (band lower bound, tick), highest first.
Every bound is a multiple of the tick of its band and of the band below, which is what keeps
snapping and single-tick steps on the grid across band boundaries.
"""

from __future__ import annotations

_TICK_BANDS: tuple[tuple[int, int], ...] = (
    (500_000, 1_000),
    (200_000, 500),
    (50_000, 100),
    (20_000, 50),
    (5_000, 10),
    (2_000, 5),
    (0, 1),
)

# Daily price limits: the reference price (the previous close) plus or minus this percentage.
LIMIT_PERCENT = 30


def tick_size(price: int) -> int:
    """The KRX tick size for a price level."""
    for bound, tick in _TICK_BANDS:
        if price >= bound:
            return tick
    return 1


def is_on_grid(price: int) -> bool:
    return price > 0 and price % tick_size(price) == 0


def snap_down(price: int) -> int:
    """The highest grid price <= price."""
    return price - price % tick_size(price)


def snap_up(price: int) -> int:
    """The lowest grid price >= price."""
    remainder = price % tick_size(price)
    return price + tick_size(price) - remainder if remainder else price


def price_limits(base: int) -> tuple[int, int]:
    """(lower, upper) daily limit for a reference price: +/-30%, rounded inwards to the grid
    (so both stay within 30%)."""
    upper = snap_down(base * (100 + LIMIT_PERCENT) // 100)
    lower = snap_up(-(-base * (100 - LIMIT_PERCENT) // 100))  # ceil without floats
    return lower, upper
