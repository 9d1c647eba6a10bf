"""From trade prints to bus quotes: day statistics, change rate, seq and received_at."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from relayer.bus import Quote
from relayer.quotes import (
    MalformedTick,
    QuoteBuilder,
    TradePrint,
    change_rate,
    change_type,
    decimal_text,
    exact_int,
    normalize_timestamp,
    trading_day_of,
)
from relayer.toss import parse_toss_tick

SAMPLE = (
    b'{"code":"A005930","dt":"2025-07-24T06:56:04Z","session":"...","exchange":"...",'
    b'"currency":"KRW","base":70500,"close":71200,"volume":10,"tradeType":"BUY",'
    b'"changeType":"UP","tradingStrength":112.3,"cumulativeVolume":1234567,'
    b'"cumulativeAmount":87900000000}'
)
# 2025-07-24T06:56:04.004Z: a tick read 4 ms after it printed.
RECEIVED = datetime(2025, 7, 24, 6, 56, 4, 4000, tzinfo=UTC).timestamp()


class Clock:
    """A settable wall clock (seconds since the epoch, like time.time)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def trade(price: int, ts: str = "2025-07-24T01:00:00Z", code: str = "A005930",
          **extra: Any) -> TradePrint:
    ts_utc, day = normalize_timestamp(ts)
    return TradePrint(code=code, price=price, base=70500, volume=1, cum_volume=1, cum_amount=price,
                      ts=ts_utc, trading_day=day, **extra)


def ohlc(quote: Quote) -> tuple[int, int, int]:
    return quote.open, quote.high, quote.low


# --------------------------------------------------------------------------------------------
# The recorded sample, end to end


def test_sample_becomes_the_expected_quote() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    quote = builder.build(parse_toss_tick(SAMPLE))
    assert quote == Quote(
        code="A005930",
        price=71200,
        base=70500,
        change=700,
        change_rate="0.99",
        change_type="UP",
        volume=10,
        cum_volume=1234567,
        cum_amount=87900000000,
        trade_type="BUY",
        trading_strength="112.30",
        open=71200,
        high=71200,
        low=71200,
        session="...",
        exchange="...",
        currency="KRW",
        ts="2025-07-24T06:56:04Z",
        received_at="2025-07-24T06:56:04.004Z",
        seq=quote.seq,
    )
    assert orjson.loads(quote.to_json())["received_at"] == "2025-07-24T06:56:04.004Z"


def test_seq_starts_at_the_clock_in_microseconds_and_counts_by_one() -> None:
    clock = Clock(1753340164.25)  # exactly representable: 1753340164250000 us
    builder = QuoteBuilder(clock=clock)
    seqs = [builder.build(parse_toss_tick(SAMPLE)).seq for _ in range(3)]
    clock.now += 3600  # seq does not follow the clock after start: it counts ticks
    seqs.append(builder.build(trade(71000, code="A000660")).seq)
    assert seqs == [1753340164250001, 1753340164250002, 1753340164250003, 1753340164250004]


def test_seq_keeps_increasing_across_a_restart() -> None:
    first = QuoteBuilder(clock=Clock(1753340164.0))
    last = [first.build(parse_toss_tick(SAMPLE)).seq for _ in range(1000)][-1]
    restarted = QuoteBuilder(clock=Clock(1753340165.0))  # one second later
    assert restarted.build(parse_toss_tick(SAMPLE)).seq > last


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2025, 7, 24, 6, 56, 4, tzinfo=UTC).timestamp(), "2025-07-24T06:56:04.000Z"),
        (RECEIVED, "2025-07-24T06:56:04.004Z"),
        (datetime(2025, 7, 24, 6, 56, 4, 250_000, tzinfo=UTC).timestamp(),
         "2025-07-24T06:56:04.250Z"),
        (datetime(2025, 7, 24, 6, 56, 4, 999_000, tzinfo=UTC).timestamp(),
         "2025-07-24T06:56:04.999Z"),
        (datetime(2026, 11, 20, 0, 0, 1, 4_000, tzinfo=UTC).timestamp(),
         "2026-11-20T00:00:01.004Z"),  # the docs/ARCHITECTURE.md example
    ],
)
def test_received_at_has_milliseconds(now: float, expected: str) -> None:
    builder = QuoteBuilder(clock=Clock(now))
    assert builder.build(parse_toss_tick(SAMPLE)).received_at == expected


def test_received_at_follows_the_clock_across_seconds() -> None:
    clock = Clock(datetime(2025, 7, 24, 23, 59, 59, 998_000, tzinfo=UTC).timestamp())
    builder = QuoteBuilder(clock=clock)
    stamps = [builder.build(trade(71000)).received_at]
    clock.now = datetime(2025, 7, 25, 0, 0, 0, 1_000, tzinfo=UTC).timestamp()
    stamps.append(builder.build(trade(71000)).received_at)
    clock.now = datetime(2025, 7, 25, 0, 0, 0, 500_000, tzinfo=UTC).timestamp()
    stamps.append(builder.build(trade(71000)).received_at)
    assert stamps == [
        "2025-07-24T23:59:59.998Z",
        "2025-07-25T00:00:00.001Z",
        "2025-07-25T00:00:00.500Z",
    ]


# --------------------------------------------------------------------------------------------
# Day open/high/low


def test_day_open_high_low_are_maintained_across_ticks() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    quotes = [builder.build(trade(p)) for p in (71200, 71500, 70600, 71000, 71600)]
    assert [ohlc(q) for q in quotes] == [
        (71200, 71200, 71200),
        (71200, 71500, 71200),
        (71200, 71500, 70600),
        (71200, 71500, 70600),
        (71200, 71600, 70600),
    ]


def test_day_statistics_are_per_instrument() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    builder.build(trade(71200))
    builder.build(trade(72000))
    hynix = builder.build(trade(199500, code="A000660"))
    samsung = builder.build(trade(70000))
    assert ohlc(hynix) == (199500, 199500, 199500)
    assert ohlc(samsung) == (71200, 72000, 70000)


def test_day_statistics_reset_on_a_new_trading_day() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    builder.build(trade(71200, ts="2025-07-24T01:00:00Z"))
    builder.build(trade(73000, ts="2025-07-24T06:00:00Z"))
    # 15:00Z is midnight in Seoul: same UTC date, new trading day.
    quote = builder.build(trade(72000, ts="2025-07-24T15:00:00Z"))
    assert ohlc(quote) == (72000, 72000, 72000)


def test_utc_midnight_inside_one_kst_day_does_not_reset() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    builder.build(trade(71200, ts="2025-07-24T23:30:00Z"))  # 08:30 KST on the 25th
    quote = builder.build(trade(70900, ts="2025-07-25T01:00:00Z"))  # 10:00 KST on the 25th
    assert ohlc(quote) == (71200, 71200, 70900)


def test_upstream_open_high_low_win_and_are_continued() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    builder.build(trade(71200))
    sent = builder.build(trade(71000, open=70800, high=71500, low=70600))
    assert ohlc(sent) == (70800, 71500, 70600)
    later = [builder.build(trade(p)) for p in (71400, 71700, 70500)]
    assert [ohlc(q) for q in later] == [
        (70800, 71500, 70600),
        (70800, 71700, 70600),
        (70800, 71700, 70500),
    ]


def test_upstream_figures_win_even_when_the_print_is_outside_them() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    quote = builder.build(trade(72000, high=71500))
    assert ohlc(quote) == (72000, 71500, 72000)


def test_upstream_sent_open_on_the_first_tick_of_a_day() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    builder.build(trade(80000, ts="2025-07-23T06:00:00Z"))
    quote = builder.build(trade(71000, ts="2025-07-24T01:00:00Z", open=70800))
    assert ohlc(quote) == (70800, 71000, 71000)


def stored_quote(ts: str, open_: int, high: int, low: int) -> Quote:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    quote = builder.build(trade(71000, ts=ts))
    return replace(quote, open=open_, high=high, low=low)


def test_seed_day_from_the_same_day_continues_high_and_low() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    builder.seed_day(stored_quote("2025-07-24T01:00:00Z", 70800, 71500, 70600))
    quotes = [builder.build(trade(p, ts="2025-07-24T05:00:00Z")) for p in (71000, 71700, 70400)]
    assert [ohlc(q) for q in quotes] == [
        (70800, 71500, 70600),
        (70800, 71700, 70600),
        (70800, 71700, 70400),
    ]


def test_seed_day_matches_on_the_kst_day_not_the_utc_date() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    # 23:30Z on the 24th is the 25th in Seoul, as is 01:00Z on the 25th.
    builder.seed_day(stored_quote("2025-07-24T23:30:00Z", 70800, 71500, 70600))
    quote = builder.build(trade(71000, ts="2025-07-25T01:00:00Z"))
    assert ohlc(quote) == (70800, 71500, 70600)


def test_seed_day_from_an_older_day_does_not_continue() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    builder.seed_day(stored_quote("2025-07-23T06:00:00Z", 70800, 90000, 50000))
    quote = builder.build(trade(71000, ts="2025-07-24T01:00:00Z"))
    assert ohlc(quote) == (71000, 71000, 71000)


def test_seed_day_does_not_override_live_statistics() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    builder.build(trade(71200, ts="2025-07-24T01:00:00Z"))
    builder.seed_day(stored_quote("2025-07-24T00:30:00Z", 60000, 90000, 50000))
    quote = builder.build(trade(71300, ts="2025-07-24T02:00:00Z"))
    assert ohlc(quote) == (71200, 71300, 71200)


# --------------------------------------------------------------------------------------------
# Change, change rate, change type


def test_quote_change_from_base() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    down = builder.build(trade(69800))
    assert (down.change, down.change_rate, down.change_type) == (-700, "-0.99", "DOWN")
    flat = builder.build(trade(70500))
    assert (flat.change, flat.change_rate, flat.change_type) == (0, "0.00", "FLAT")
    up = builder.build(trade(71200))
    assert (up.change, up.change_rate, up.change_type) == (700, "0.99", "UP")


def test_upstream_change_type_wins() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    assert builder.build(trade(70500, change_type="UP")).change_type == "UP"


def test_base_zero_gives_zero_rate() -> None:
    builder = QuoteBuilder(clock=Clock(RECEIVED))
    quote = builder.build(replace(trade(1000), base=0))
    assert (quote.change, quote.change_rate, quote.change_type) == (1000, "0.00", "UP")


@pytest.mark.parametrize(
    ("change", "base", "expected"),
    [
        (700, 70500, "0.99"),  # 0.99290...
        (-700, 70500, "-0.99"),
        (1, 800, "0.13"),  # 0.125: half up
        (-1, 800, "-0.13"),  # half away from zero for losses too
        (1, 1600, "0.06"),  # 0.0625
        (3, 1600, "0.19"),  # 0.1875
        (1, 20000, "0.01"),  # 0.005
        (-1, 20000, "-0.01"),
        (1, 20001, "0.00"),  # 0.00499...
        (21150, 70500, "30.00"),  # upper limit
        (-21150, 70500, "-30.00"),  # lower limit
        (70500, 70500, "100.00"),
        (0, 70500, "0.00"),
        (100, 0, "0.00"),
        (-100, 0, "0.00"),
        (100, -5, "0.00"),
    ],
)
def test_change_rate(change: int, base: int, expected: str) -> None:
    assert change_rate(change, base) == expected


def test_change_type() -> None:
    assert [change_type(c) for c in (1, 0, -1)] == ["UP", "FLAT", "DOWN"]


# --------------------------------------------------------------------------------------------
# Exact numbers and timestamps


@pytest.mark.parametrize(
    ("value", "expected"),
    [(71200, 71200), (71200.0, 71200), ("71200", 71200), (0, 0), (-5, -5), (8.79e10, 87900000000)],
)
def test_exact_int(value: object, expected: int) -> None:
    result = exact_int(value, "close")
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value", [71200.5, "71200.0", "abc", "", None, True, False, [1], {}])
def test_exact_int_rejects(value: object) -> None:
    with pytest.raises(MalformedTick):
        exact_int(value, "close")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (112.3, "112.30"),
        (112.345, "112.35"),  # repr keeps 112.345; the binary float is 112.34499...
        (99.995, "100.00"),
        (100, "100.00"),
        ("87.5", "87.50"),
        ("87.504", "87.50"),
        (0, "0.00"),
        (None, None),
    ],
)
def test_decimal_text(value: object, expected: str | None) -> None:
    assert decimal_text(value, "tradingStrength") == expected


@pytest.mark.parametrize("value", ["fast", "", True, [112.3], "NaN", "-Infinity", "sNaN"])
def test_decimal_text_rejects(value: object) -> None:
    with pytest.raises(MalformedTick):
        decimal_text(value, "tradingStrength")


def test_normalize_timestamp_and_trading_day() -> None:
    assert normalize_timestamp("2025-07-24T15:56:04+09:00") == (
        "2025-07-24T06:56:04Z",
        "2025-07-24",
    )
    assert normalize_timestamp("2025-07-24T23:30:00Z") == ("2025-07-24T23:30:00Z", "2025-07-25")
    # the cache must give the same answer the second time
    assert normalize_timestamp("2025-07-24T23:30:00Z") == ("2025-07-24T23:30:00Z", "2025-07-25")
    assert trading_day_of("2025-07-24T14:59:59Z") == "2025-07-24"
    assert trading_day_of("2025-07-24T15:00:00Z") == "2025-07-25"


@pytest.mark.parametrize(
    "raw",
    ["2025-07-24T06:56:04", "not a time", 1753340164, None,
     "0001-01-01T00:00:00+09:00", "9999-12-31T23:00:00Z"],
)
def test_normalize_timestamp_rejects(raw: object) -> None:
    with pytest.raises(MalformedTick):
        normalize_timestamp(raw)
