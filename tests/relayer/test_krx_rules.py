"""The price rules by market and security kind (relayer.krx.price_rules) against published
examples: the grid each kind trades on and the daily limits around a base."""

from __future__ import annotations

import pytest

from relayer.krx import Market, PriceRules, SecurityKind, price_rules

STOCK = price_rules(Market.KOSPI, SecurityKind.STOCK)
ETF = price_rules(Market.KOSPI, SecurityKind.ETF)
ETN = price_rules(Market.KOSPI, SecurityKind.ETN)
ELW = price_rules(Market.KOSPI, SecurityKind.ELW)
KONEX = price_rules(Market.KONEX, SecurityKind.STOCK)


@pytest.mark.parametrize(("rules", "price", "tick"), [
    (ETF, 1_999, 1), (ETF, 2_000, 5), (ETF, 34_615, 5), (ETF, 612_345, 5),
    (ETN, 1_500, 1), (ETN, 25_000, 5),
    (ELW, 15, 5), (ELW, 2_500, 5),
    (STOCK, 34_615, 50), (KONEX, 3_330, 5),
])
def test_each_kind_has_its_grid(rules: PriceRules, price: int, tick: int) -> None:
    assert rules.tick_size(price) == tick


@pytest.mark.parametrize(("market", "kind", "base", "limits"), [
    # KOSPI and KOSDAQ stocks: 30% truncated to the base's tick.
    (Market.KOSPI, SecurityKind.STOCK, 70_500, (49_400, 91_600)),
    (Market.KOSDAQ, SecurityKind.STOCK, 24_250, (17_000, 31_500)),
    (Market.KOSPI, SecurityKind.PREFERRED, 239_000, (167_500, 310_500)),
    # KONEX: 15%.
    (Market.KONEX, SecurityKind.STOCK, 10_000, (8_500, 11_500)),
    (Market.KONEX, SecurityKind.STOCK, 3_330, (2_835, 3_825)),
    # ETF: 30% on the 5-won grid (a stock at 34,610 would be off its 50-won grid).
    (Market.KOSPI, SecurityKind.ETF, 34_610, (24_230, 44_990)),
    (Market.KOSPI, SecurityKind.ETF, 1_990, (1_393, 2_585)),
])
def test_limits_by_market_and_kind(market: Market, kind: SecurityKind, base: int,
                                   limits: tuple[int, int]) -> None:
    rules = price_rules(market, kind)
    assert rules.price_limits(base) == limits
    assert all(rules.is_on_grid(limit) for limit in limits)
