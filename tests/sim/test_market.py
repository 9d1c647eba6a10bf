"""The simulator's market: each instrument's KRX grid and limits, Toss tick JSON with consistent
totals, and instruments (base prices, grids, limits) taken from the shipped KRX master files."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import pairwise
from typing import Any

import pytest

from relayer.krx import (
    FUNDS,
    KONEX,
    STOCK,
    PriceRules,
    SecurityKind,
    is_on_grid,
    price_limits,
    price_rules,
    snap_down,
    snap_up,
    tick_size,
)
from relayer.krx import Market as Exchange
from relayer.master import MasterRecord, by_code, read_master, shipped_paths
from relayer.sim.instruments import instruments_of
from relayer.sim.market import (
    SYNTHETIC,
    Instrument,
    Market,
    reference_price,
    step_down,
    step_up,
    synthetic_price,
)

NOW = datetime(2025, 7, 24, 6, 56, 4, tzinfo=UTC)
TOSS_KEYS = {
    "code", "dt", "session", "exchange", "currency", "base", "close", "volume", "tradeType",
    "changeType", "tradingStrength", "cumulativeVolume", "cumulativeAmount",
}  # fmt: skip




@cache
def shipped() -> dict[str, MasterRecord]:
    """The records of the master files shipped with the code, by code (read once per worker)."""
    return by_code([read_master(path) for path in shipped_paths()])


def first_record(why: str, fits: Callable[[MasterRecord], bool]) -> MasterRecord:
    """The first shipped record that fits, by code: the tests find their instruments in the
    files rather than naming codes, so that they hold whatever the files list."""
    found = sorted((r for r in shipped().values() if fits(r)), key=lambda r: r.code)
    assert found, f"the shipped master files hold no {why}"
    return found[0]


def master_market(seed: int) -> Market:
    return Market(seed, instruments_of(shipped().values()))


def etf() -> MasterRecord:
    # From 5,000 up, where the stock grid's ticks are 10 or more: a 5-won step is the ETF grid's.
    return first_record("ETF priced at 5,000 or more", lambda r: r.kind is SecurityKind.ETF
                        and (r.base_price or 0) >= 5_000)


def konex_stock() -> MasterRecord:
    # From 1,000 up, so that 15% of the base spans many ticks.
    return first_record("KONEX stock priced at 1,000 or more", lambda r: r.market is Exchange.KONEX
                        and r.kind is SecurityKind.STOCK and (r.base_price or 0) >= 1_000)


def cheap_stock() -> MasterRecord:
    return first_record("stock priced below 2,000", lambda r: r.kind is SecurityKind.STOCK
                        and r.market is not Exchange.KONEX and 0 < (r.base_price or 0) < 2_000)


def missing_code() -> str:
    """A code the shipped master does not list: it trades as a synthetic stock."""
    return next(code for n in range(1_000_000) if (code := f"A{n:06d}") not in shipped())


def walk(market: Market, code: str, steps: int) -> list[dict[str, Any]]:
    return [market.next_tick(code, NOW + timedelta(seconds=step)) for step in range(steps)]


@pytest.mark.parametrize(
    ("price", "tick"),
    [
        (1, 1), (1_999, 1), (2_000, 5), (4_999, 5), (5_000, 10), (19_999, 10), (20_000, 50),
        (49_999, 50), (50_000, 100), (199_999, 100), (200_000, 500), (499_999, 500),
        (500_000, 1_000), (3_000_000, 1_000),
    ],
)  # fmt: skip
def test_tick_size_at_every_boundary(price: int, tick: int) -> None:
    assert tick_size(price) == tick


@pytest.mark.parametrize(
    ("price", "down", "up"),
    [
        (2_000, 1_999, 2_005),
        (5_000, 4_995, 5_010),
        (20_000, 19_990, 20_050),
        (50_000, 49_950, 50_100),
        (200_000, 199_900, 200_500),
        (500_000, 499_500, 501_000),
        (1_999, 1_998, 2_000),
        (70_000, 69_900, 70_100),
    ],
)
def test_single_tick_steps_cross_band_boundaries(price: int, down: int, up: int) -> None:
    assert step_down(price, STOCK) == down
    assert step_up(price, STOCK) == up
    assert is_on_grid(down) and is_on_grid(up)


@pytest.mark.parametrize(
    ("price", "down", "up"),
    [(1_500, 1_499, 1_501), (1_999, 1_998, 2_000), (2_000, 1_999, 2_005), (34_610, 34_605, 34_615),
     (500_000, 499_995, 500_005)],
)
def test_etf_steps_are_five_won_from_2000_and_one_won_below(price: int, down: int,
                                                             up: int) -> None:
    assert (step_down(price, FUNDS), step_up(price, FUNDS)) == (down, up)
    assert FUNDS.is_on_grid(down) and FUNDS.is_on_grid(up)


def test_snapping() -> None:
    assert (snap_down(2_003), snap_up(2_003)) == (2_000, 2_005)
    assert (snap_down(1_999), snap_up(1_999)) == (1_999, 1_999)
    assert snap_up(499_501) == 500_000
    assert snap_down(70_050) == 70_000
    assert not is_on_grid(70_050)


@pytest.mark.parametrize(
    ("base", "lower", "upper"),
    [
        (70_000, 49_000, 91_000),
        (1_695, 1_187, 2_200),  # width 508; 2,203 lands on the 5-won grid: down to 2,200
        (42_050, 29_450, 54_600),  # width 12,615 -> 12,600 (ticks of 50); 54,650 -> 54,600
        (1_020_000, 714_000, 1_326_000),
        # Published limits (docs/TRADING.md): the width is truncated to the base's own tick.
        (70_500, 49_400, 91_600),  # not 49,350 (0.7 x base rounded to the 50-won grid)
        (239_000, 167_500, 310_500),
        (24_250, 17_000, 31_500),
    ],
)
def test_price_limits_take_thirty_percent_truncated_to_the_tick_of_the_base(
        base: int, lower: int, upper: int) -> None:
    assert price_limits(base) == (lower, upper)


def test_every_shipped_record_becomes_an_instrument_with_its_own_rules() -> None:
    records = shipped()
    instruments = instruments_of(records.values())
    assert instruments.keys() == records.keys()
    market = Market(0, instruments)
    for code, record in records.items():
        base, rules = market.instrument(code)
        assert (base, rules) == (record.base_price, price_rules(record.market, record.kind))
        reference = reference_price(code, market.instrument(code))
        assert rules.is_on_grid(reference), (code, reference)
        if record.base_price:
            assert reference == rules.snap_down(record.base_price)
    assert market.instrument(etf().code).rules == FUNDS
    assert market.instrument(konex_stock().code).rules == KONEX
    assert market.instrument(cheap_stock().code).rules == STOCK


def test_the_reference_price_is_the_master_base_snapped_onto_the_instrument_grid() -> None:
    assert reference_price("A069500", Instrument(34_610, FUNDS)) == 34_610  # not the stock grid's
    assert reference_price("A069500", Instrument(34_612, FUNDS)) == 34_610
    assert reference_price("A005930", Instrument(54_750, STOCK)) == 54_700
    # No base (0 in the file reads as None): the synthetic derivation, on the instrument's grid.
    assert reference_price("A069500", Instrument(None, FUNDS)) == synthetic_price("A069500", FUNDS)
    assert FUNDS.is_on_grid(synthetic_price("A069500", FUNDS))
    assert reference_price("A069500", Instrument(0, FUNDS)) == synthetic_price("A069500", FUNDS)
    with pytest.raises(ValueError, match="not an instrument code"):
        reference_price("069500", Instrument(34_610, FUNDS))


def test_synthetic_reference_price_is_stable_and_on_grid() -> None:
    price = synthetic_price("A123456")
    assert price == synthetic_price("A123456") == reference_price("A123456")
    assert 1_000 <= price <= 300_000 and is_on_grid(price)
    assert synthetic_price("A0080G0") != price
    with pytest.raises(ValueError, match="not an instrument code"):
        synthetic_price("005930")


def check_walk(ticks: list[dict[str, Any]], code: str, base: int, rules: PriceRules) -> None:
    """Every print on the instrument's grid, within its limits, in small steps, with totals
    that add up."""
    lower, upper = rules.price_limits(base)
    previous = base
    cum_volume = cum_amount = buy = sell = 0
    for tick in ticks:
        price, volume = tick["close"], tick["volume"]
        assert isinstance(price, int) and isinstance(volume, int)
        assert set(tick) == TOSS_KEYS
        assert tick["code"] == code and tick["base"] == base
        assert rules.is_on_grid(price), price
        assert lower <= price <= upper
        # A few ticks at most per trade (the tick size can change on the way across a band).
        assert abs(price - previous) <= 3 * rules.tick_size(max(price, previous))
        assert volume >= 1
        expected_change = "UP" if price > base else "DOWN" if price < base else "FLAT"
        assert tick["changeType"] == expected_change
        cum_volume += volume
        cum_amount += price * volume
        if tick["tradeType"] == "BUY":
            buy += volume
        else:
            assert tick["tradeType"] == "SELL"
            sell += volume
        assert tick["cumulativeVolume"] == cum_volume
        assert tick["cumulativeAmount"] == cum_amount
        if sell:
            assert tick["tradingStrength"] == round(buy * 100 / sell, 2)
        previous = price


@pytest.mark.parametrize("code", ["A005930", "A207940", "A003280", "A316140", "A123456"])
def test_long_walk_of_a_synthetic_stock_stays_on_grid_within_limits(code: str) -> None:
    ticks = walk(Market(seed=11), code, 20_000)
    check_walk(ticks, code, synthetic_price(code), STOCK)
    assert ticks[-1]["dt"] == "2025-07-24T12:29:23Z"  # NOW + 19,999 s, UTC with Z


def test_an_etf_prints_only_on_the_five_won_grid_within_its_limits() -> None:
    record = etf()
    assert record.base_price is not None
    market = master_market(seed=5)
    ticks = walk(market, record.code, 20_000)
    assert ticks[0]["base"] == FUNDS.snap_down(record.base_price) == record.base_price
    check_walk(ticks, record.code, record.base_price, FUNDS)
    closes = {tick["close"] for tick in ticks}
    assert all(close % 5 == 0 for close in closes)
    # Prices the stock grid (10 won and up from 5,000) would never print: the ETF grid is used.
    assert any(close % 10 == 5 for close in closes)


def test_a_konex_stock_stays_within_fifteen_percent_of_its_base() -> None:
    record = konex_stock()
    assert record.base_price is not None
    market = master_market(seed=9)
    ticks = walk(market, record.code, 20_000)
    check_walk(ticks, record.code, record.base_price, KONEX)
    lower, upper = KONEX.price_limits(record.base_price)
    assert record.base_price * 85 <= lower * 100 and upper * 100 <= record.base_price * 115
    assert (market.state(record.code).lower, market.state(record.code).upper) == (lower, upper)


def test_a_stock_below_2000_walks_the_one_won_grid() -> None:
    record = cheap_stock()
    assert record.base_price is not None
    ticks = walk(master_market(seed=13), record.code, 5_000)
    check_walk(ticks, record.code, record.base_price, STOCK)
    assert any(abs(a["close"] - b["close"]) == 1 for a, b in pairwise(ticks))


def test_a_code_the_master_lacks_trades_as_a_synthetic_stock() -> None:
    code = missing_code()
    market = master_market(seed=2)
    assert market.instrument(code) == SYNTHETIC
    ticks = walk(market, code, 2_000)
    check_walk(ticks, code, synthetic_price(code), STOCK)


@pytest.mark.parametrize(
    ("instrument", "lower", "upper"),
    [
        (Instrument(70_000, STOCK), 49_000, 91_000),
        (Instrument(10_000, KONEX), 8_500, 11_500),
        (Instrument(34_610, FUNDS), 24_230, 44_990),  # width 10,383 -> 10,380 (ticks of 5)
    ],
)
def test_the_limits_clamp_a_walk_started_at_them(instrument: Instrument, lower: int,
                                                 upper: int) -> None:
    market = Market(seed=3, instruments={"A000001": instrument})
    state = market.state("A000001")
    assert (state.lower, state.upper) == (lower, upper)
    state.price = upper
    closes = [market.next_tick("A000001", NOW)["close"] for _ in range(200)]
    assert max(closes) == upper
    state.price = lower
    closes = [market.next_tick("A000001", NOW)["close"] for _ in range(200)]
    assert min(closes) == lower


def test_the_first_trade_has_plausible_values() -> None:
    market = Market(seed=1, instruments={"A000660": Instrument(200_000, STOCK)})
    tick = market.next_tick("A000660", NOW)
    assert tick["dt"] == "2025-07-24T06:56:04Z"
    assert (tick["session"], tick["exchange"], tick["currency"]) == ("REGULAR", "KRX", "KRW")
    assert tick["base"] == 200_000
    assert abs(tick["close"] - 200_000) <= 3 * 500
    assert tick["cumulativeVolume"] == tick["volume"]
    assert tick["cumulativeAmount"] == tick["close"] * tick["volume"]
    assert isinstance(tick["tradingStrength"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", tick["dt"])


def test_same_seed_same_calls_same_ticks() -> None:
    codes = [etf().code, konex_stock().code, missing_code()] * 300

    def run(seed: int) -> list[dict[str, Any]]:
        market = master_market(seed)
        return [market.next_tick(code, NOW) for code in codes]

    first = run(42)
    assert first == run(42)
    assert [t["close"] for t in first] != [t["close"] for t in run(43)]
