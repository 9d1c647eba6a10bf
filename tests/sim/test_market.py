"""The simulator's market: KRX tick grid, price limits, Toss tick JSON with consistent totals."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from relayer.krx import is_on_grid, price_limits, snap_down, snap_up, tick_size
from relayer.sim.market import REFERENCE_PRICES, Market, reference_price, step_down, step_up

NOW = datetime(2025, 7, 24, 6, 56, 4, tzinfo=UTC)
TOSS_KEYS = {
    "code", "dt", "session", "exchange", "currency", "base", "close", "volume", "tradeType",
    "changeType", "tradingStrength", "cumulativeVolume", "cumulativeAmount",
}  # fmt: skip


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
    assert step_down(price) == down
    assert step_up(price) == up
    assert is_on_grid(down) and is_on_grid(up)


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
        (1_695, 1_187, 2_200),  # 2,203.5 floors to 2,203, snapped down to the 5-won grid
        (42_050, 29_450, 54_600),  # 29,435 snapped up to the 50-won grid
        (1_020_000, 714_000, 1_326_000),
    ],
)
def test_price_limits_are_thirty_percent_rounded_inwards(base: int, lower: int, upper: int) -> None:
    assert price_limits(base) == (lower, upper)


def test_reference_prices_are_on_the_grid() -> None:
    assert len(REFERENCE_PRICES) >= 30
    assert REFERENCE_PRICES["A005930"] == 70_000
    off_grid = {code: price for code, price in REFERENCE_PRICES.items() if not is_on_grid(price)}
    assert off_grid == {}


def test_synthetic_reference_price_is_stable_and_on_grid() -> None:
    price = reference_price("A123456")
    assert price == reference_price("A123456")
    assert 1_000 <= price <= 300_000 and is_on_grid(price)
    assert reference_price("A0080G0") != price
    with pytest.raises(ValueError, match="not an instrument code"):
        reference_price("005930")


@pytest.mark.parametrize("code", ["A005930", "A207940", "A003280", "A316140", "A123456"])
def test_long_walk_stays_on_grid_within_limits_with_consistent_totals(code: str) -> None:
    market = Market(seed=11)
    base = reference_price(code)
    lower, upper = price_limits(base)
    previous = base
    cum_volume = cum_amount = buy = sell = 0
    for step in range(20_000):
        tick = market.next_tick(code, NOW + timedelta(seconds=step))
        price, volume = tick["close"], tick["volume"]
        assert set(tick) == TOSS_KEYS
        assert tick["code"] == code and tick["base"] == base
        assert is_on_grid(price), price
        assert lower <= price <= upper
        # A few ticks at most per trade (the tick size can change on the way across a band).
        assert abs(price - previous) <= 3 * tick_size(max(price, previous))
        assert isinstance(volume, int) and volume >= 1
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
    assert tick["dt"] == "2025-07-24T12:29:23Z"  # NOW + 19,999 s, UTC with Z


def test_the_limits_clamp_a_walk_started_at_them() -> None:
    market = Market(seed=3)
    state = market.state("A005930")
    lower, upper = price_limits(70_000)
    state.price = upper
    closes = [market.next_tick("A005930", NOW)["close"] for _ in range(200)]
    assert max(closes) == upper
    state.price = lower
    closes = [market.next_tick("A005930", NOW)["close"] for _ in range(200)]
    assert min(closes) == lower


def test_the_first_trade_has_plausible_values() -> None:
    tick = Market(seed=1).next_tick("A000660", NOW)
    assert tick["dt"] == "2025-07-24T06:56:04Z"
    assert (tick["session"], tick["exchange"], tick["currency"]) == ("REGULAR", "KRX", "KRW")
    assert abs(tick["close"] - 200_000) <= 3 * 500
    assert tick["cumulativeVolume"] == tick["volume"]
    assert tick["cumulativeAmount"] == tick["close"] * tick["volume"]
    assert isinstance(tick["tradingStrength"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", tick["dt"])


def test_same_seed_same_calls_same_ticks() -> None:
    codes = ["A005930", "A035720", "A999999"] * 300

    def run(seed: int) -> list[dict[str, object]]:
        market = Market(seed)
        return [market.next_tick(code, NOW) for code in codes]

    first = run(42)
    assert first == run(42)
    assert [t["close"] for t in first] != [t["close"] for t in run(43)]
