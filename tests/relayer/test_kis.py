"""The KIS realtime format: recorded-style lines through the parser, acks, subscribe messages,
and the approval key request against a real local HTTP server."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import orjson
import pytest

from relayer.kis import (
    KisAck,
    KisAuthError,
    KisError,
    KisPingPong,
    KisTrades,
    fetch_approval_key,
    parse_kis_message,
    subscribe_message,
)
from relayer.quotes import MalformedTick
from tests.support.http_server import CannedHttpServer, canned_http_server
from tests.support.kis_samples import SAMSUNG_0930_15, SAMSUNG_0930_16_BUY, SAMSUNG_0930_16_SELL

APPROVAL_KEY = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"


def with_fields(record: str, **changes: str) -> str:
    """`record` with some columns replaced, named `f<index>` (f2="abc" replaces the price)."""
    fields = record.split("^")
    for name, value in changes.items():
        fields[int(name[1:])] = value
    return "^".join(fields)


def trades_of(line: str) -> KisTrades:
    message = parse_kis_message(line)
    assert isinstance(message, KisTrades)
    return message


def test_all_recorded_records_have_46_fields() -> None:
    for record in (SAMSUNG_0930_15, SAMSUNG_0930_16_BUY, SAMSUNG_0930_16_SELL):
        assert len(record.split("^")) == 46


def test_one_record_line_parses_to_exact_values() -> None:
    message = trades_of(f"0|H0STCNT0|001|{SAMSUNG_0930_15}")
    assert message.tr_id == "H0STCNT0"
    [trade] = message.trades
    assert trade.code == "A005930"
    assert trade.price == 71200
    assert trade.base == 71500  # price - change = 71200 - (-300)
    assert trade.ts == "2025-11-20T00:30:15Z"
    assert trade.trading_day == "2025-11-20"
    assert (trade.open, trade.high, trade.low) == (71600, 71800, 71000)
    assert trade.volume == 35
    assert trade.cum_volume == 4123456
    assert trade.cum_amount == 293966827375
    assert trade.trade_type == "SELL"
    assert trade.change_type == "DOWN"
    assert trade.trading_strength == "112.30"
    assert (trade.exchange, trade.currency, trade.session) == ("KRX", "KRW", None)


def test_multi_record_line_keeps_order_and_values() -> None:
    line = f"0|H0STCNT0|002|{SAMSUNG_0930_16_BUY}^{SAMSUNG_0930_16_SELL}"
    buy, sell = trades_of(line).trades
    assert (buy.price, buy.base, buy.volume, buy.trade_type) == (71300, 71500, 120, "BUY")
    assert (buy.cum_volume, buy.cum_amount) == (4123576, 293975383375)
    assert buy.trading_strength == sell.trading_strength == "112.30"
    assert (sell.price, sell.base, sell.volume, sell.trade_type) == (71200, 71500, 7, "SELL")
    assert (sell.cum_volume, sell.cum_amount) == (4123583, 293975881775)
    assert buy.ts == sell.ts == "2025-11-20T00:30:16Z"


@pytest.mark.parametrize(
    ("sign", "change", "change_type", "base"),
    [
        ("1", "16400", "UP", 54800),  # upper limit: +30% rounded down to the tick
        ("2", "300", "UP", 70900),
        ("3", "0", "FLAT", 71200),
        ("4", "-30500", "DOWN", 101700),  # lower limit: -30% rounded up to the tick
        ("5", "-300", "DOWN", 71500),
    ],
)
def test_change_sign_maps_to_change_type(
    sign: str, change: str, change_type: str, base: int
) -> None:
    record = with_fields(SAMSUNG_0930_15, f3=sign, f4=change)
    [trade] = trades_of(f"0|H0STCNT0|001|{record}").trades
    assert (trade.change_type, trade.base) == (change_type, base)


def test_pre_market_time_falls_on_previous_utc_day_but_same_trading_day() -> None:
    record = with_fields(SAMSUNG_0930_15, f1="083000")
    [trade] = trades_of(f"0|H0STCNT0|001|{record}").trades
    assert trade.ts == "2025-11-19T23:30:00Z"
    assert trade.trading_day == "2025-11-20"


@pytest.mark.parametrize(("side", "trade_type"), [("1", "BUY"), ("5", "SELL"), ("3", "UNKNOWN")])
def test_trade_side(side: str, trade_type: str) -> None:
    [trade] = trades_of(f"0|H0STCNT0|001|{with_fields(SAMSUNG_0930_15, f21=side)}").trades
    assert trade.trade_type == trade_type


def test_strength_is_formatted_to_two_decimals_and_empty_is_none() -> None:
    [trade] = trades_of(f"0|H0STCNT0|001|{with_fields(SAMSUNG_0930_15, f18='98.5')}").trades
    assert trade.trading_strength == "98.50"
    [trade] = trades_of(f"0|H0STCNT0|001|{with_fields(SAMSUNG_0930_15, f18='')}").trades
    assert trade.trading_strength is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"0|H0STCNT0|002|{SAMSUNG_0930_15}", r"2 record\(s\) need 92 fields, got 46"),
        (f"0|H0STCNT0|001|{SAMSUNG_0930_15}^extra", "need 46 fields, got 47"),
        (f"0|H0STCNT0|000|{SAMSUNG_0930_15}", "invalid record count"),
        (f"0|H0STCNT0|two|{SAMSUNG_0930_15}", "invalid record count"),
        (f"0|H0STCNT0|001|{with_fields(SAMSUNG_0930_15, f2='71,200')}", "price is not"),
        (f"0|H0STCNT0|001|{with_fields(SAMSUNG_0930_15, f2='')}", "price is not"),
        (f"0|H0STCNT0|001|{with_fields(SAMSUNG_0930_15, f13='x')}", "cumulative volume"),
        (f"0|H0STCNT0|001|{with_fields(SAMSUNG_0930_15, f0='05930')}", "instrument code"),
        (f"0|H0STCNT0|001|{with_fields(SAMSUNG_0930_15, f3='9')}", "unknown change sign"),
        (f"0|H0STCNT0|001|{with_fields(SAMSUNG_0930_15, f4='300')}", "disagrees with sign"),
        (f"0|H0STCNT0|001|{with_fields(SAMSUNG_0930_15, f33='20251131')}", "impossible"),
        (f"0|H0STCNT0|001|{with_fields(SAMSUNG_0930_15, f1='9:30:15')}", "invalid business"),
        (f"0|H0STASP0|001|{SAMSUNG_0930_15}", "unsupported KIS TR"),
        ("0|H0STCNT0|001", "no payload"),
        (f"1|H0STCNT0|001|{SAMSUNG_0930_15}", "encrypted data is only used for notice TRs"),
        ("", "unknown KIS message"),
        ("<html>502 Bad Gateway</html>", "unknown KIS message"),
        ('{"header":{"tr_id":"H0STCNT0"', "not JSON"),
        ("[1, 2]", "unknown KIS message"),
        ('{"body":{"rt_cd":"0"}}', "no header"),
        ('{"header":{"tr_id":"H0STCNT0","tr_key":"005930"}}', "no body.rt_cd"),
    ],
)
def test_malformed_messages_raise(line: str, reason: str) -> None:
    with pytest.raises(MalformedTick, match=reason):
        parse_kis_message(line)


def ack(rt_cd: str, msg_cd: str, msg1: str) -> str:
    return (
        '{"header":{"tr_id":"H0STCNT0","tr_key":"005930","encrypt":"N"},'
        f'"body":{{"rt_cd":"{rt_cd}","msg_cd":"{msg_cd}","msg1":"{msg1}",'
        '"output":{"iv":"0123456789abcdef","key":"abcdefghijklmnopqrstuvwxyz123456"}}}'
    )


def test_subscribe_success_ack() -> None:
    raw = ack("0", "OPSP0000", "SUBSCRIBE SUCCESS")
    assert parse_kis_message(raw) == KisAck(
        tr_id="H0STCNT0", tr_key="005930", ok=True, message="SUBSCRIBE SUCCESS", raw=raw
    )


@pytest.mark.parametrize(
    ("msg_cd", "msg1", "already"),
    [
        ("OPSP0002", "ALREADY IN SUBSCRIBE", True),
        ("OPSP0003", "ALREADY IN UNSUBSCRIBE", True),
        ("OPSP0008", "MAX SUBSCRIBE OVER", False),
        ("OPSP8996", "invalid tr_key", False),
    ],
)
def test_failed_acks(msg_cd: str, msg1: str, already: bool) -> None:
    message = parse_kis_message(ack("1", msg_cd, msg1))
    assert isinstance(message, KisAck)
    assert (message.ok, message.already, message.message) == (False, already, msg1)


def test_pingpong_is_returned_raw_for_echo() -> None:
    raw = '{"header":{"tr_id":"PINGPONG","datetime":"20250724153000"}}'
    assert parse_kis_message(raw) == KisPingPong(raw=raw)


@pytest.mark.parametrize("code", ["A005930", "005930"])
def test_subscribe_message_exact_json(code: str) -> None:
    text = subscribe_message(APPROVAL_KEY, "H0STCNT0", code, register=True)
    assert text == (
        f'{{"header":{{"approval_key":"{APPROVAL_KEY}","custtype":"P","tr_type":"1",'
        '"content-type":"utf-8"},"body":{"input":{"tr_id":"H0STCNT0","tr_key":"005930"}}}'
    )


def test_unsubscribe_message_and_letter_code() -> None:
    text = subscribe_message(APPROVAL_KEY, "H0STCNT0", "A0080G0", register=False, custtype="B")
    data = orjson.loads(text)
    assert data["header"]["tr_type"] == "2"
    assert data["header"]["custtype"] == "B"
    assert data["body"]["input"]["tr_key"] == "0080G0"


@pytest.mark.parametrize(
    ("key", "tr_id", "code", "custtype"),
    [
        (APPROVAL_KEY, "H0STCNT0", "A05930", "P"),
        (APPROVAL_KEY, "H0STCNT0", "a005930", "P"),
        (APPROVAL_KEY, "H0STCNT0", "005930 ", "P"),
        (APPROVAL_KEY, "", "005930", "P"),
        (APPROVAL_KEY, 'H0STCNT0"', "005930", "P"),
        ("", "H0STCNT0", "005930", "P"),
        (APPROVAL_KEY, "H0STCNT0", "005930", "X"),
    ],
)
def test_subscribe_message_rejects_bad_arguments(
    key: str, tr_id: str, code: str, custtype: str
) -> None:
    with pytest.raises(ValueError):
        subscribe_message(key, tr_id, code, register=True, custtype=custtype)


# ----------------------------------------------------------------------------------------------
# fetch_approval_key against a real HTTP server on 127.0.0.1


APP_KEY = "PSabcdefghijklmnopqrstuvwxyz012345"
APP_SECRET = "s3cr3t-S3CR3T-0123456789/abcdefghijklmnopqrstuvwxyz+ABCDEFGHIJKL="


@pytest.fixture
def approval_server() -> Iterator[CannedHttpServer]:
    with canned_http_server() as server:
        yield server


async def test_fetch_approval_key_sends_secretkey_and_returns_key(
    approval_server: CannedHttpServer,
) -> None:
    approval_server.answer = orjson.dumps({"approval_key": APPROVAL_KEY})
    async with httpx.AsyncClient(timeout=5) as client:
        key = await fetch_approval_key(client, approval_server.url + "/", APP_KEY, APP_SECRET)
    assert key == APPROVAL_KEY
    [(method, path, content_type, body)] = approval_server.received
    assert method == "POST"
    assert path == "/oauth2/Approval"
    assert content_type is not None and content_type.startswith("application/json")
    assert orjson.loads(body) == {
        "grant_type": "client_credentials",
        "appkey": APP_KEY,
        "secretkey": APP_SECRET,
    }


async def test_fetch_approval_key_403_raises_without_the_secret(
    approval_server: CannedHttpServer,
) -> None:
    approval_server.status = 403
    # A server that echoes the credentials back must not get them into our error message.
    approval_server.answer = orjson.dumps(
        {"error_code": "EGW00103", "error_description": f"invalid secretkey {APP_SECRET}"}
    )
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(KisAuthError) as caught:
            await fetch_approval_key(client, approval_server.url, APP_KEY, APP_SECRET)
    assert isinstance(caught.value, KisError)
    assert caught.value.status == 403
    assert "403" in str(caught.value)
    assert "EGW00103" in str(caught.value)
    assert APP_SECRET not in str(caught.value)
    assert APP_KEY not in str(caught.value)


@pytest.mark.parametrize("answer", [b"not json", b"{}", b'{"approval_key":""}', b"[]"])
async def test_fetch_approval_key_bad_success_answer_raises(
    approval_server: CannedHttpServer, answer: bytes
) -> None:
    approval_server.answer = answer
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(KisAuthError, match="HTTP 200"):
            await fetch_approval_key(client, approval_server.url, APP_KEY, APP_SECRET)


async def test_fetch_approval_key_network_error_is_translated() -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(KisAuthError, match="failed") as caught:
            await fetch_approval_key(client, f"http://127.0.0.1:{port}", APP_KEY, APP_SECRET)
    assert isinstance(caught.value.__cause__, httpx.HTTPError)
    assert caught.value.status is None
    assert APP_SECRET not in str(caught.value)
