"""The Redis bus contract (docs/ARCHITECTURE.md): literal names and payload codecs.

These strings are an interface between separately deployed processes; a failure here means a
protocol change, not a test to update casually.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from relayer.bus import (
    COMMAND_RESULT_TTL_S,
    DEFAULT_NAMESPACE,
    EMPTY_STREAM_ID,
    HEALTH_FIELDS,
    STREAM_QUOTE_FIELD,
    ActiveSubscription,
    BusNames,
    Command,
    CommandResult,
    CommandType,
    DesiredSource,
    FillsHealth,
    MalformedQuote,
    Quote,
    RelayerHealth,
    RelayerState,
    TopicTemplate,
    decode_health,
    decode_quote,
    format_utc,
    stream_entry_quote,
    stream_id_key,
)

# --------------------------------------------------------------------------------------------
# Names


def test_default_namespace_names_are_pinned() -> None:
    names = BusNames()
    assert DEFAULT_NAMESPACE == "stocking"
    assert names.ns == "stocking"
    assert names.quote("A005930") == "stocking:quote:A005930"
    assert names.tick_channel("A005930") == "stocking:ticks:A005930"
    assert names.tick_channel_pattern == "stocking:ticks:*"
    assert names.tick_stream == "stocking:ticks"
    assert names.desired_subscriptions == "stocking:subs:desired"
    assert names.desired_initialised == "stocking:subs:initialised"
    assert [source.value for source in DesiredSource] == ["seed", "sql"]
    assert names.active_subscriptions == "stocking:subs:active"
    assert names.commands == "stocking:cmd"
    assert names.command_result("0f3c9a") == "stocking:cmd:result:0f3c9a"
    assert names.relayer_health == "stocking:relayer:health"
    assert names.relayer_leader == "stocking:relayer:leader"
    assert names.fills_health == "stocking:fills:health"


def test_custom_namespace_prefixes_every_name() -> None:
    names = BusNames("paper-eu")
    assert names.quote("A000660") == "paper-eu:quote:A000660"
    assert names.tick_channel("A000660") == "paper-eu:ticks:A000660"
    assert names.tick_channel_pattern == "paper-eu:ticks:*"
    assert names.tick_stream == "paper-eu:ticks"
    assert names.desired_subscriptions == "paper-eu:subs:desired"
    assert names.desired_initialised == "paper-eu:subs:initialised"
    assert names.active_subscriptions == "paper-eu:subs:active"
    assert names.commands == "paper-eu:cmd"
    assert names.command_result("c-1") == "paper-eu:cmd:result:c-1"
    assert names.relayer_health == "paper-eu:relayer:health"
    assert names.relayer_leader == "paper-eu:relayer:leader"


def test_tick_channel_pattern_matches_the_tick_channels_only() -> None:
    names = BusNames()
    # Redis glob `*` behaves like fnmatch's here; the stream key must not match the pattern.
    pattern = re.compile(re.escape(names.tick_channel_pattern).replace(r"\*", ".*"))
    assert pattern.fullmatch(names.tick_channel("A005930"))
    assert not pattern.fullmatch(names.tick_stream)


def test_contract_constants() -> None:
    assert STREAM_QUOTE_FIELD == "q"
    assert COMMAND_RESULT_TTL_S == 300
    assert [t.value for t in CommandType] == ["subscribe", "unsubscribe", "resync"]
    assert {s.value for s in RelayerState} >= {"connecting", "connected", "backoff", "stopping"}


# --------------------------------------------------------------------------------------------
# Quote

# The example in docs/ARCHITECTURE.md ("The Redis bus"), byte for byte, in field order.
CONTRACT_QUOTE_JSON = (
    b'{"code":"A005930","price":71200,"base":70500,"change":700,"change_rate":"0.99",'
    b'"change_type":"UP","volume":10,"cum_volume":1234567,"cum_amount":87900000000,'
    b'"trade_type":"BUY","trading_strength":"112.30","open":70800,"high":71500,"low":70600,'
    b'"session":"REGULAR","exchange":"KRX","currency":"KRW","ts":"2026-11-20T00:00:01Z",'
    b'"received_at":"2026-11-20T00:00:01.004Z","seq":123}'
)


def contract_quote() -> Quote:
    return Quote(
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
        open=70800,
        high=71500,
        low=70600,
        session="REGULAR",
        exchange="KRX",
        currency="KRW",
        ts="2026-11-20T00:00:01Z",
        received_at="2026-11-20T00:00:01.004Z",
        seq=123,
    )


def test_quote_json_is_the_contract_example() -> None:
    assert contract_quote().to_json() == CONTRACT_QUOTE_JSON


def test_quote_json_field_names_and_order() -> None:
    assert list(orjson.loads(contract_quote().to_json())) == [
        "code", "price", "base", "change", "change_rate", "change_type", "volume",
        "cum_volume", "cum_amount", "trade_type", "trading_strength", "open", "high", "low",
        "session", "exchange", "currency", "ts", "received_at", "seq",
    ]  # fmt: skip


def test_quote_json_matches_the_dataclass_fields() -> None:
    # to_json spells the fields out for speed; it must stay in step with the dataclass. The
    # relayer's quotes have no tick_id (its script adds it as the last field when it stores).
    quote = contract_quote()
    quote.tick_id = "1763596801004-0"
    assert orjson.loads(quote.to_json()) == orjson.loads(orjson.dumps(quote))
    assert list(orjson.loads(quote.to_json())) == list(Quote.__dataclass_fields__)
    quote.tick_id = None
    assert list(orjson.loads(quote.to_json())) == list(Quote.__dataclass_fields__)[:-1]


def test_a_stored_quote_carries_its_stream_entry_id() -> None:
    stored = CONTRACT_QUOTE_JSON[:-1] + b',"tick_id":"1763596801004-0"}'
    quote = Quote.from_json(stored)
    assert quote.tick_id == "1763596801004-0"
    assert quote == contract_quote()  # the same print as the stream entry's copy
    assert Quote.from_json(quote.to_json()).tick_id == "1763596801004-0"
    assert Quote.from_json(CONTRACT_QUOTE_JSON).tick_id is None


@pytest.mark.parametrize("tick_id", [17, "", "yesterday", "1-2-3"])
def test_a_tick_id_that_is_not_a_stream_entry_id_is_malformed(tick_id: object) -> None:
    data = orjson.loads(CONTRACT_QUOTE_JSON) | {"tick_id": tick_id}
    with pytest.raises(MalformedQuote, match="tick_id"):
        Quote.from_json(orjson.dumps(data))


def test_quote_prices_are_json_integers_and_rates_strings() -> None:
    data = orjson.loads(contract_quote().to_json())
    for name in ("price", "base", "change", "volume", "cum_volume", "cum_amount", "open",
                 "high", "low", "seq"):
        assert type(data[name]) is int, name
    assert data["change_rate"] == "0.99"
    assert data["trading_strength"] == "112.30"


def test_quote_round_trip_from_bytes_and_str() -> None:
    quote = contract_quote()
    assert Quote.from_json(quote.to_json()) == quote
    assert Quote.from_json(CONTRACT_QUOTE_JSON.decode()) == quote


def test_quote_round_trip_with_nulls_and_negative_change() -> None:
    quote = contract_quote()
    quote.price, quote.change, quote.change_rate, quote.change_type = 69800, -700, "-0.99", "DOWN"
    quote.trading_strength = quote.session = quote.exchange = None
    raw = quote.to_json()
    assert b'"trading_strength":null' in raw
    assert b'"change":-700,"change_rate":"-0.99","change_type":"DOWN"' in raw
    assert Quote.from_json(raw) == quote


def test_quote_from_json_ignores_unknown_keys() -> None:
    data = orjson.loads(CONTRACT_QUOTE_JSON)
    data["extra"] = {"nested": True}
    assert Quote.from_json(orjson.dumps(data)) == contract_quote()
    assert decode_quote(orjson.dumps(data))["extra"] == {"nested": True}  # passed through


def _contract_with(**changes: object) -> bytes:
    data = orjson.loads(CONTRACT_QUOTE_JSON)
    for name, value in changes.items():
        if value is _MISSING:
            del data[name]
        else:
            data[name] = value
    return orjson.dumps(data)


_MISSING = object()


@pytest.mark.parametrize(
    "raw",
    [
        b"[]", b"null", b"71200", b'"A005930"', b"", b"not json",
        CONTRACT_QUOTE_JSON[:60],  # truncated
        _contract_with(price="71200"),  # a string price
        _contract_with(price=-5), _contract_with(price=0), _contract_with(base=0),
        _contract_with(price=True),  # a bool is not a price
        _contract_with(price=71200.5), _contract_with(volume=-1), _contract_with(seq="1"),
        _contract_with(price=_MISSING), _contract_with(ts=_MISSING),
        _contract_with(code="SAMSUNG"), _contract_with(code=None),
        _contract_with(ts="yesterday"), _contract_with(ts=1700000000),
        _contract_with(change_rate=0.99), _contract_with(session=1),
        _contract_with(received_at=None),
    ],
)
def test_decoding_anything_but_a_quote_raises_malformed_quote(raw: bytes) -> None:
    with pytest.raises(MalformedQuote):
        decode_quote(raw)
    with pytest.raises(MalformedQuote):
        Quote.from_json(raw)
    assert issubclass(MalformedQuote, ValueError)


# --------------------------------------------------------------------------------------------
# Tick stream


def test_stream_constants_are_pinned() -> None:
    assert STREAM_QUOTE_FIELD == "q"
    assert EMPTY_STREAM_ID == "0-0"


def test_stream_entry_quote_reads_the_quote_field_as_bytes_or_text() -> None:
    assert stream_entry_quote({b"q": CONTRACT_QUOTE_JSON}) == contract_quote()
    assert stream_entry_quote({"q": CONTRACT_QUOTE_JSON.decode()}) == contract_quote()


@pytest.mark.parametrize("fields", [{}, {b"quote": CONTRACT_QUOTE_JSON}, {b"q": b""},
                                    {b"q": b"[]"}, {"q": _contract_with(price=0)}])
def test_stream_entry_without_a_quote_raises_malformed_quote(
        fields: dict[bytes | str, bytes | str]) -> None:
    with pytest.raises(MalformedQuote):
        stream_entry_quote(fields)


def test_stream_id_key_orders_like_the_stream() -> None:
    ids = ["1700000000000-10", "0-0", "1700000000000-2", "999-5", "1700000000001-0", "1000"]
    assert sorted(ids, key=stream_id_key) == [
        "0-0", "999-5", "1000", "1700000000000-2", "1700000000000-10", "1700000000001-0"]
    assert stream_id_key(EMPTY_STREAM_ID) == (0, 0)
    assert stream_id_key("1000") == stream_id_key("1000-0")


# --------------------------------------------------------------------------------------------
# Commands and results


def test_command_encodes_the_contract_fields() -> None:
    command = Command(
        type=CommandType.SUBSCRIBE,
        topic="/topic/v1/kr/stock/trade/A005930",
        id="3f2a",
        ts="2026-11-20T00:00:01Z",
    )
    assert command.to_json() == (
        b'{"type":"subscribe","topic":"/topic/v1/kr/stock/trade/A005930","id":"3f2a",'
        b'"ts":"2026-11-20T00:00:01Z"}'
    )
    assert Command.from_json(command.to_json()) == command


def test_command_defaults_a_hex_id_and_a_utc_timestamp() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    command = Command(type=CommandType.RESYNC)
    after = datetime.now(UTC)
    assert command.topic is None
    assert re.fullmatch(r"[0-9a-f]{32}", command.id)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", command.ts)
    stamped = datetime.strptime(command.ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= stamped <= after
    assert Command(type=CommandType.RESYNC).id != command.id


def test_command_decodes_every_type_and_optional_fields() -> None:
    for kind in CommandType:
        decoded = Command.from_json(orjson.dumps({"id": "x1", "type": kind.value}))
        assert decoded == Command(type=kind, topic=None, id="x1", ts="")
        assert decoded.type is kind
    decoded = Command.from_json('{"id":"x2","type":"unsubscribe","topic":"/t/A000660","ts":null}')
    assert decoded == Command(type=CommandType.UNSUBSCRIBE, topic="/t/A000660", id="x2", ts="")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"",
        b'["subscribe"]',
        b'"subscribe"',
        b"null",
        b'{"type":"subscribe","topic":"/t/A005930"}',  # missing id
        b'{"id":"","type":"subscribe"}',  # empty id
        b'{"id":7,"type":"subscribe"}',  # id not a string
        b'{"id":"a1"}',  # missing type
        b'{"id":"a1","type":"SUBSCRIBE"}',  # types are lowercase
        b'{"id":"a1","type":"purge"}',
        b'{"id":"a1","type":["subscribe"]}',
        b'{"id":"a1","type":"subscribe","topic":5}',
        b'{"id":"a1","type":"subscribe","topic":["/t/A005930"]}',
    ],
)
def test_command_from_json_rejects_malformed_input(raw: bytes) -> None:
    with pytest.raises(ValueError):
        Command.from_json(raw)


def test_command_result_round_trip() -> None:
    result = CommandResult(
        id="3f2a", ok=True, topic="/topic/v1/kr/stock/trade/A005930", message="subscribed",
        active=3,
    )
    assert result.to_json() == (
        b'{"id":"3f2a","ok":true,"topic":"/topic/v1/kr/stock/trade/A005930",'
        b'"message":"subscribed","active":3}'
    )
    assert CommandResult.from_json(result.to_json()) == result
    failed = CommandResult(id="9", ok=False, topic=None, message="upstream ERROR", active=0)
    assert CommandResult.from_json(failed.to_json().decode()) == failed


def test_command_result_defaults_missing_message_and_active() -> None:
    assert CommandResult.from_json(b'{"id":"9","ok":false}') == CommandResult(
        id="9", ok=False, topic=None, message="", active=0
    )


def test_active_subscription_round_trip() -> None:
    active = ActiveSubscription(sub_id="sub-12", since="2026-11-20T00:00:01Z")
    assert active.to_json() == b'{"sub_id":"sub-12","since":"2026-11-20T00:00:01Z"}'
    assert ActiveSubscription.from_json(active.to_json()) == active


# --------------------------------------------------------------------------------------------
# Topic template

KR_TRADES = TopicTemplate("/topic/v1/kr/stock/trade/{code}")


def test_bare_code_is_expanded() -> None:
    assert KR_TRADES.topic("A005930") == "/topic/v1/kr/stock/trade/A005930"
    assert KR_TRADES.topic("A0080G0") == "/topic/v1/kr/stock/trade/A0080G0"  # newer codes
    assert KR_TRADES.topic("  A000660\n") == "/topic/v1/kr/stock/trade/A000660"


def test_full_topic_is_accepted_as_is() -> None:
    assert KR_TRADES.topic("/topic/v1/kr/stock/trade/A000660") == (
        "/topic/v1/kr/stock/trade/A000660"
    )
    assert KR_TRADES.code("/topic/v1/kr/stock/trade/A000660") == "A000660"


def test_other_templates_expand_and_extract() -> None:
    broker = TopicTemplate("/topic/trade.{code}.krx")
    assert broker.topic("A005930") == "/topic/trade.A005930.krx"
    assert broker.topic("/topic/trade.A005930.krx") == "/topic/trade.A005930.krx"
    assert broker.code("/topic/trade.A005930.krx") == "A005930"
    assert broker.code("/topic/trade.A005930") is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a005930",  # lowercase
        "A00593",  # too short
        "A0059300",  # too long
        "B005930",  # other prefix
        "005930",
        "A005930x",
        "/topic/v1/kr/stock/trade/a005930",
        "/topic/v1/kr/stock/trade/A00593",
        "/topic/v1/us/stock/trade/A005930",  # other template
        "/topic/v1/kr/stock/trade/A005930/extra",
        "/topic/v1/kr/stock/trade/",
        "/topic/v1/kr/stock/trade/{code}",
    ],
)
def test_invalid_codes_and_topics_are_rejected(value: str) -> None:
    with pytest.raises(ValueError):
        KR_TRADES.topic(value)


def test_code_of_a_foreign_topic_is_none() -> None:
    assert KR_TRADES.code("/topic/v1/us/stock/trade/A005930") is None
    assert KR_TRADES.code("/topic/v1/kr/stock/trade/a005930") is None
    assert KR_TRADES.code("A005930") is None


@pytest.mark.parametrize(
    "template", ["/topic/v1/kr/stock/trade/", "/topic/{code}/{code}", "/topic/{CODE}", ""]
)
def test_template_needs_exactly_one_code_placeholder(template: str) -> None:
    with pytest.raises(ValueError):
        TopicTemplate(template)


# --------------------------------------------------------------------------------------------
# Health hash


def test_decode_health_types_the_values() -> None:
    raw = {
        b"state": b"connected",
        b"upstream": b"toss wss://realtime-socket.tossinvest.com/ws",
        b"instance": b"relayer-1",
        b"pid": b"4242",
        b"host": b"box",
        b"started_at": b"2026-11-20T00:00:00Z",
        b"connected_at": b"2026-11-20T00:00:01Z",
        b"last_tick_at": b"2026-11-20T00:00:02.123Z",
        b"last_write_at": b"2026-11-20T00:00:02.125Z",
        b"ticks_total": b"1000000",
        b"ticks_written_total": b"999990",
        b"malformed_total": b"3",
        b"dropped_total": b"0",
        b"reconnects": b"2",
        b"subscriptions": b"40",
        b"rejected_topics": b'["/topic/v1/kr/stock/trade/A999999"]',
        b"updated_at": b"2026-11-20T00:00:02Z",
        b"unknown_field": b"ignored",
    }
    assert decode_health(raw) == {
        "state": "connected",
        "upstream": "toss wss://realtime-socket.tossinvest.com/ws",
        "instance": "relayer-1",
        "pid": 4242,
        "host": "box",
        "started_at": "2026-11-20T00:00:00Z",
        "connected_at": "2026-11-20T00:00:01Z",
        "last_tick_at": "2026-11-20T00:00:02.123Z",
        "last_write_at": "2026-11-20T00:00:02.125Z",
        "ticks_total": 1000000,
        "ticks_written_total": 999990,
        "malformed_total": 3,
        "dropped_total": 0,
        "reconnects": 2,
        "subscriptions": 40,
        "rejected_topics": ["/topic/v1/kr/stock/trade/A999999"],
        "updated_at": "2026-11-20T00:00:02Z",
    }


def test_decode_health_missing_fields_are_none_from_str_keys() -> None:
    health = decode_health({"state": "backoff", "pid": "7"})
    assert list(health) == list(HEALTH_FIELDS)
    assert health["state"] == "backoff"
    assert health["pid"] == 7
    assert health["ticks_total"] is None
    assert health["connected_at"] is None
    assert health["rejected_topics"] == []


def test_decode_health_of_an_empty_hash() -> None:
    health = decode_health({})
    assert health["rejected_topics"] == []
    assert all(health[name] is None for name in HEALTH_FIELDS if name != "rejected_topics")


def test_relayer_health_hash_is_the_bytes_the_relayer_writes() -> None:
    health = RelayerHealth(
        state="connected", upstream="sim ws://127.0.0.1:8765/ws", instance="relayer-1",
        pid=4242, host="box", started_at="2026-11-20T00:00:00Z", connected_at=None,
        last_tick_at="2026-11-20T00:00:02.123Z", last_write_at="", ticks_total=1000,
        ticks_written_total=990, malformed_total=3, dropped_total=0, reconnects=2,
        subscriptions=40, rejected_topics=["/t/A999999", "/t/A000001"],
        updated_at="2026-11-20T00:00:02.500Z",
    )
    assert health.to_hash() == {
        "state": "connected", "upstream": "sim ws://127.0.0.1:8765/ws",
        "instance": "relayer-1", "pid": "4242", "host": "box",
        "started_at": "2026-11-20T00:00:00Z", "connected_at": "",
        "last_tick_at": "2026-11-20T00:00:02.123Z", "last_write_at": "",
        "ticks_total": "1000", "ticks_written_total": "990", "malformed_total": "3",
        "dropped_total": "0", "reconnects": "2", "subscriptions": "40",
        "rejected_topics": '["/t/A000001","/t/A999999"]',  # sorted, compact
        "updated_at": "2026-11-20T00:00:02.500Z",
    }
    assert list(health.to_hash()) == list(HEALTH_FIELDS)  # the HSET order


def test_relayer_health_round_trip_reads_empty_values_as_none() -> None:
    health = RelayerHealth(state="backoff", pid=7, started_at="2026-11-20T00:00:00Z",
                           connected_at="", ticks_total=0, rejected_topics=["/t/A000001"])
    encoded = {name.encode(): value.encode() for name, value in health.to_hash().items()}
    decoded = RelayerHealth.from_hash(encoded)
    assert decoded == RelayerHealth(state="backoff", pid=7, started_at="2026-11-20T00:00:00Z",
                                    ticks_total=0, rejected_topics=["/t/A000001"])
    assert RelayerHealth.from_hash({}) == RelayerHealth()


@pytest.mark.parametrize("raw", [{"pid": "seven"}, {"ticks_total": "1.5"},
                                 {"rejected_topics": "not json"}, {"rejected_topics": "{}"},
                                 {"rejected_topics": "[1]"}, {"rejected_topics": '"/t/A1"'}])
def test_relayer_health_refuses_what_the_relayer_never_writes(raw: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        RelayerHealth.from_hash(raw)


def test_fills_health_hash_is_the_bytes_the_worker_writes() -> None:
    health = FillsHealth(pid=4242, updated_at="2026-11-20T00:00:02.500Z", last_entry_id=None,
                         caught_up=True, fills_total=12, expired_total=0)
    assert health.to_hash() == {
        "pid": "4242", "updated_at": "2026-11-20T00:00:02.500Z", "last_entry_id": "",
        "caught_up": "1", "fills_total": "12", "expired_total": "0",
    }
    assert FillsHealth(caught_up=False).to_hash()["caught_up"] == "0"


def test_fills_health_round_trip() -> None:
    health = FillsHealth(pid=4242, updated_at="2026-11-20T00:00:02.500Z",
                         last_entry_id="1700000000000-3", caught_up=False, fills_total=12,
                         expired_total=1)
    encoded = {name.encode(): value.encode() for name, value in health.to_hash().items()}
    assert FillsHealth.from_hash(encoded) == health
    assert FillsHealth.from_hash(FillsHealth(pid=1).to_hash()) == FillsHealth(pid=1)


def test_fills_health_never_refuses_a_hash() -> None:
    # The heartbeat is reported, not relied on: what cannot be read is None.
    assert FillsHealth.from_hash({}) == FillsHealth()
    assert FillsHealth.from_hash({b"fills_total": b"many", b"pid": b"x", b"caught_up": b"yes",
                                  b"updated_at": b"2026-11-20T00:00:02Z"}) == FillsHealth(
        updated_at="2026-11-20T00:00:02Z", caught_up=False)


# --------------------------------------------------------------------------------------------
# Time format


def test_format_utc_whole_seconds() -> None:
    moment = datetime(2026, 11, 20, 0, 0, 1, 999_999, tzinfo=UTC)
    assert format_utc(moment) == "2026-11-20T00:00:01Z"


def test_format_utc_millis_truncates() -> None:
    assert format_utc(datetime(2026, 11, 20, 0, 0, 1, 4_567, tzinfo=UTC), millis=True) == (
        "2026-11-20T00:00:01.004Z"
    )
    assert format_utc(datetime(2026, 11, 20, 0, 0, 1, tzinfo=UTC), millis=True) == (
        "2026-11-20T00:00:01.000Z"
    )
    assert format_utc(datetime(2026, 11, 20, 0, 0, 1, 999_999, tzinfo=UTC), millis=True) == (
        "2026-11-20T00:00:01.999Z"
    )


def test_format_utc_converts_other_zones_to_utc() -> None:
    kst = timezone(timedelta(hours=9))
    moment = datetime(2026, 11, 20, 8, 30, 0, 250_000, tzinfo=kst)
    assert format_utc(moment) == "2026-11-19T23:30:00Z"
    assert format_utc(moment, millis=True) == "2026-11-19T23:30:00.250Z"
