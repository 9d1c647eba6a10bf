"""The KRX price grid and daily price limits, by market and security type: the one definition
shared by the exchange simulator (which must never print a price off them) and the API's order
checks (which refuse one). docs/TRADING.md states each rule and its source.

A grid (호가가격단위) is a list of (band lower bound, tick), highest first. Every bound is a
multiple of the tick of its band and of the band below, which is what keeps snapping and
single-tick steps on the grid across band boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Market(StrEnum):
    KOSPI = "KOSPI"  # 유가증권시장
    KOSDAQ = "KOSDAQ"
    KONEX = "KONEX"


class SecurityKind(StrEnum):
    """What an instrument is, from the KRX security group of the broker master files."""

    STOCK = "STOCK"  # 보통주
    PREFERRED = "PREFERRED"  # 우선주
    ETF = "ETF"
    ETN = "ETN"
    ELW = "ELW"
    REIT = "REIT"  # 부동산투자회사
    INFRA_FUND = "INFRA_FUND"  # 사회간접자본투융자회사
    SPAC = "SPAC"
    DR = "DR"  # 주식예탁증서
    FOREIGN_STOCK = "FOREIGN_STOCK"  # 외국주권
    FUND = "FUND"  # 투자회사, 선박투자회사, 수익증권
    RIGHTS = "RIGHTS"  # 신주인수권증권, 신주인수권증서


Grid = tuple[tuple[int, int], ...]

# Stocks (and every exchange-traded security that is not a fund or a note), the same on KOSPI,
# KOSDAQ and KONEX since 2023-01-25.
STOCK_GRID: Grid = (
    (500_000, 1_000),
    (200_000, 500),
    (50_000, 100),
    (20_000, 50),
    (5_000, 10),
    (2_000, 5),
    (0, 1),
)
# ETF and ETN: 5 won from 2,000 up, 1 won below (since 2023-12-18; 5 won throughout before).
FUND_GRID: Grid = ((2_000, 5), (0, 1))
# ELW: 5 won at every price (the 2023 reforms left it alone).
ELW_GRID: Grid = ((0, 5),)


@dataclass(frozen=True, slots=True)
class PriceRules:
    """The grid an instrument's prices lie on and its daily limit, as a percentage of the base
    price (기준가격, normally the previous close)."""

    grid: Grid
    limit_percent: int

    def tick_size(self, price: int) -> int:
        """The tick at a price level."""
        for bound, tick in self.grid:
            if price >= bound:
                return tick
        return 1

    def is_on_grid(self, price: int) -> bool:
        return price > 0 and price % self.tick_size(price) == 0

    def snap_down(self, price: int) -> int:
        """The highest grid price <= price."""
        return price - price % self.tick_size(price)

    def snap_up(self, price: int) -> int:
        """The lowest grid price >= price."""
        remainder = price % self.tick_size(price)
        return price + self.tick_size(price) - remainder if remainder else price

    def price_limits(self, base: int) -> tuple[int, int]:
        """(하한가, 상한가) for a base price. The width is `limit_percent` of the base,
        truncated to the tick of the base's own price level; 상한가 is base + width, moved
        down onto the grid where it lands in a coarser level, and 하한가 base - width (a finer
        level, whose grid it is already on). So a stock at base 70,500 (tick 100): width 21,150
        -> 21,100, limits 49,400 and 91,600; not 49,350, which rounding 0.7 x base to its own
        grid would give (docs/TRADING.md)."""
        tick = self.tick_size(base)
        width = base * self.limit_percent // 100 // tick * tick
        # snap_up: on the grid even for a base that is not (the simulator's synthetic ones are).
        return self.snap_up(base - width), self.snap_down(base + width)


STOCK = PriceRules(STOCK_GRID, limit_percent=30)
FUNDS = PriceRules(FUND_GRID, limit_percent=30)
KONEX = PriceRules(STOCK_GRID, limit_percent=15)
# An ELW's real limits follow its underlying's; ELWs are not traded here (docs/TRADING.md), so
# this only places their prices on the grid.
ELW = PriceRules(ELW_GRID, limit_percent=30)

_FUND_GRID_KINDS = frozenset({SecurityKind.ETF, SecurityKind.ETN})


def price_rules(market: Market, kind: SecurityKind) -> PriceRules:
    """The grid and limit of an instrument. Leveraged ETFs' limits scale with their leverage
    on the KRX; the master files do not give the leverage, so they get the plain 30%
    (docs/TRADING.md)."""
    if kind is SecurityKind.ELW:
        return ELW
    if kind in _FUND_GRID_KINDS:
        return FUNDS
    return KONEX if market is Market.KONEX else STOCK


# The stock rules as plain functions: the simulator's synthetic instruments are stocks.
tick_size = STOCK.tick_size
is_on_grid = STOCK.is_on_grid
snap_down = STOCK.snap_down
snap_up = STOCK.snap_up
price_limits = STOCK.price_limits
