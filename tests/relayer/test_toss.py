"""The Toss trade-tick format (docs/UPSTREAM.md) parsed into exact `TradePrint`s."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from relayer.quotes import MalformedTick, TradePrint
from relayer.toss import parse_toss_tick

# The recorded sample in docs/UPSTREAM.md ("Toss Securities"), byte for byte.
SAMPLE = (
    b'{"code":"A005930","dt":"2025-07-24T06:56:04Z","session":"...","exchange":"...",'
    b'"currency":"KRW","base":70500,"close":71200,"volume":10,"tradeType":"BUY",'
    b'"changeType":"UP","tradingStrength":112.3,"cumulativeVolume":1234567,'
    b'"cumulativeAmount":87900000000}'
)
SAMPLE_PRINT = TradePrint(
    code="A005930",
    price=71200,
    base=70500,
    volume=10,
    cum_volume=1234567,
    cum_amount=87900000000,
    ts="2025-07-24T06:56:04Z",
    trading_day="2025-07-24",  # 15:56 in Seoul
    trade_type="BUY",
    change_type="UP",
    trading_strength="112.30",
    session="...",
    exchange="...",
    currency="KRW",
    open=None,
    high=None,
    low=None,
)


def tick(**changes: Any) -> bytes:
    """The sample with keys replaced (or removed, with the value `...`)."""
    data = orjson.loads(SAMPLE)
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return orjson.dumps(data)


def test_recorded_sample() -> None:
    trade = parse_toss_tick(SAMPLE)
    assert trade == SAMPLE_PRINT
    for name in ("price", "base", "volume", "cum_volume", "cum_amount"):
        assert type(getattr(trade, name)) is int, name


def test_integral_floats_are_exact_integers() -> None:
    trade = parse_toss_tick(
        b'{"code":"A005930","dt":"2025-07-24T06:56:04Z","base":70500.0,"close":71200.0,'
        b'"volume":10.0,"cumulativeVolume":1234567.0,"cumulativeAmount":8.79e10,'
        b'"open":70800.0,"high":71500.0,"low":70600.0}'
    )
    assert (trade.price, trade.base, trade.volume) == (71200, 70500, 10)
    assert (trade.cum_volume, trade.cum_amount) == (1234567, 87900000000)
    assert (trade.open, trade.high, trade.low) == (70800, 71500, 70600)
    for name in ("price", "base", "volume", "cum_volume", "cum_amount", "open", "high", "low"):
        assert type(getattr(trade, name)) is int, name


def test_numeric_strings_are_accepted() -> None:
    trade = parse_toss_tick(tick(close="71200", base="70500", tradingStrength="87.5"))
    assert (trade.price, trade.base, trade.trading_strength) == (71200, 70500, "87.50")


@pytest.mark.parametrize(
    "changes",
    [
        {"close": 71200.5},
        {"base": 70500.25},
        {"volume": 0.5},
        {"cumulativeAmount": 87900000000.1},
        {"open": 70800.5},
        {"close": "71200.0"},
        {"close": True},
        {"close": [71200]},
    ],
)
def test_inexact_numbers_are_malformed(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedTick):
        parse_toss_tick(tick(**changes))


def test_missing_optional_keys_are_fine() -> None:
    trade = parse_toss_tick(
        b'{"code":"A000660","dt":"2025-07-24T00:00:01Z","base":200000,"close":199500}'
    )
    assert trade == TradePrint(
        code="A000660",
        price=199500,
        base=200000,
        volume=0,
        cum_volume=0,
        cum_amount=0,
        ts="2025-07-24T00:00:01Z",
        trading_day="2025-07-24",
        trade_type="UNKNOWN",
        change_type=None,
        trading_strength=None,
        session=None,
        exchange=None,
        currency="KRW",
        open=None,
        high=None,
        low=None,
    )


def test_empty_strings_count_as_missing() -> None:
    trade = parse_toss_tick(tick(tradeType="", changeType="", session="", currency=""))
    assert trade.trade_type == "UNKNOWN"
    assert trade.change_type is None
    assert trade.session is None
    assert trade.currency == "KRW"


def test_unknown_keys_are_ignored() -> None:
    raw = tick(
        week52High=88800, week52Low=49900, nested={"a": [1, 2]}, flag=True, note=None,
        tradeId="t-1",
    )
    assert parse_toss_tick(raw) == SAMPLE_PRINT


def test_us_style_extra_keys_are_ignored() -> None:
    raw = tick(baseKrw=98_000_000.5, closeKrw="x", cumulativeAmountKrw=1.5)
    assert parse_toss_tick(raw) == SAMPLE_PRINT


def test_upstream_open_high_low_are_kept() -> None:
    trade = parse_toss_tick(tick(open=70800, high=71500, low=70600))
    assert (trade.open, trade.high, trade.low) == (70800, 71500, 70600)


def test_real_session_and_exchange_values() -> None:
    trade = parse_toss_tick(tick(session="REGULAR", exchange="KRX", changeType="DOWN"))
    assert (trade.session, trade.exchange, trade.change_type) == ("REGULAR", "KRX", "DOWN")


def test_codes_with_letters_are_valid() -> None:
    assert parse_toss_tick(tick(code="A0080G0")).code == "A0080G0"


@pytest.mark.parametrize("code", ["005930", "a005930", "A00593", "A0059301", "B005930", 5930,
                                  None, "", " A005930"])
def test_bad_code_is_malformed(code: Any) -> None:
    with pytest.raises(MalformedTick):
        parse_toss_tick(tick(code=code))


def test_missing_code_is_malformed() -> None:
    with pytest.raises(MalformedTick):
        parse_toss_tick(tick(code=...))


@pytest.mark.parametrize(
    "changes",
    [
        {"close": ...},
        {"close": None},
        {"close": "abc"},
        {"close": 0},
        {"close": -71200},
        {"base": ...},
        {"base": 0},
    ],
)
def test_missing_or_non_positive_prices_are_malformed(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedTick):
        parse_toss_tick(tick(**changes))


@pytest.mark.parametrize(
    "body",
    [b"not json", b"", b"{", b"\xff\xfe", b"[1, 2]", b"[" + SAMPLE + b"]", b'"A005930"', b"null",
     b"71200"],
)
def test_non_objects_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedTick):
        parse_toss_tick(body)


@pytest.mark.parametrize(
    "dt",
    [
        "2025-07-24T06:56:04",  # naive: no zone
        "2025-07-24",
        "yesterday",
        "",
        1753340164,
        None,
        ...,
        "0001-01-01T00:00:00+09:00",  # outside datetime's range once converted to UTC
        "9999-12-31T23:00:00Z",  # outside datetime's range once converted to KST
    ],
)
def test_bad_timestamps_are_malformed(dt: Any) -> None:
    with pytest.raises(MalformedTick):
        parse_toss_tick(tick(dt=dt))


@pytest.mark.parametrize("value", ["fast", True, [1], {"v": 1}, "NaN", "Infinity"])
def test_bad_trading_strength_is_malformed(value: Any) -> None:
    with pytest.raises(MalformedTick):
        parse_toss_tick(tick(tradingStrength=value))


def test_malformed_tick_is_a_value_error() -> None:
    assert issubclass(MalformedTick, ValueError)


@pytest.mark.parametrize(
    ("dt", "ts", "day"),
    [
        ("2025-07-24T15:56:04+09:00", "2025-07-24T06:56:04Z", "2025-07-24"),
        ("2025-07-24T06:56:04+00:00", "2025-07-24T06:56:04Z", "2025-07-24"),
        ("2025-07-24T06:56:04.987Z", "2025-07-24T06:56:04Z", "2025-07-24"),  # whole seconds
        ("2025-07-23T22:56:04-08:00", "2025-07-24T06:56:04Z", "2025-07-24"),
        ("2025-07-25T08:30:00+09:00", "2025-07-24T23:30:00Z", "2025-07-25"),
        # KST is UTC+9: a UTC evening is already the next trading day in Seoul.
        ("2025-07-24T23:30:00Z", "2025-07-24T23:30:00Z", "2025-07-25"),
        ("2025-07-24T14:59:59Z", "2025-07-24T14:59:59Z", "2025-07-24"),
        ("2025-07-24T15:00:00Z", "2025-07-24T15:00:00Z", "2025-07-25"),
        ("2025-12-31T15:00:00Z", "2025-12-31T15:00:00Z", "2026-01-01"),
    ],
)
def test_timestamps_are_normalised_to_utc_and_the_kst_day(dt: str, ts: str, day: str) -> None:
    trade = parse_toss_tick(tick(dt=dt))
    assert (trade.ts, trade.trading_day) == (ts, day)
