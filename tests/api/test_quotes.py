"""Quote routes through HTTP against a real Redis, with quotes and health written as the relayer
writes them (relayer.bus codecs, relayer.health's reporter)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, time, timedelta

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from redis.asyncio import Redis

from api.app import create_app
from api.market.rules import day_start
from api.models import Role
from api.quotes.cache import QuoteCache
from api.quotes.schemas import QuoteOut
from api.quotes.service import market_moment, quote_context
from api.settings import ApiSettings
from relayer.bus import ActiveSubscription, Quote, TopicTemplate, decode_quote, format_utc
from relayer.health import HealthReporter, RelayerStats
from relayer.market_calendar import AlwaysOpen, Session, TradingDay
from tests.conftest import RedisServer
from tests.support.quotes import NAMES, make_quote, put
from tests.support.tokens import bearer
from tests.support.weekday_calendar import WeekdayCalendar, kst

TOPICS = TopicTemplate("/topic/v1/kr/stock/trade/{code}")
BASE = "/api/v1/trading/realtime"


@pytest.fixture
def auth(api_settings: ApiSettings) -> dict[str, str]:
    return bearer(api_settings)


def test_quote_answers_the_relayer_fields_with_its_age(
    client: TestClient, store: redis.Redis, auth: dict[str, str]
) -> None:
    # As the relayer stores it: with the id of its tick stream entry.
    quote = dataclasses.replace(make_quote("A005930", age_s=0.5), tick_id="1764000000000-0")
    put(store, quote)
    answer = client.get(f"{BASE}/stock/A005930", headers=auth)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert {k: body[k] for k in dataclasses.asdict(quote)} == dataclasses.asdict(quote)
    # The instrument as the master names it.
    assert (body["name"], body["market"]) == ("삼성전자", "KOSPI")
    # The day's limits around the base of 70,500: what an order at either price is checked by.
    assert (body["lower_limit"], body["upper_limit"]) == (49_400, 91_600)
    assert 0.4 <= body["age_s"] < 5
    assert body["stale"] is False
    QuoteOut.model_validate(body)  # the documented shape is the real one


def test_old_quote_is_stale(client: TestClient, store: redis.Redis, auth: dict[str, str],
                            api_settings: ApiSettings) -> None:
    put(store, make_quote("A000660", age_s=api_settings.quote_max_age_s + 50))
    body = client.get(f"{BASE}/stock/A000660", headers=auth).json()
    assert body["stale"] is True
    assert body["age_s"] >= api_settings.quote_max_age_s + 50


def test_bare_six_digit_code_is_normalised(client: TestClient, store: redis.Redis,
                                           auth: dict[str, str]) -> None:
    put(store, make_quote("A005930"))
    for text in ("005930", "a005930"):
        answer = client.get(f"{BASE}/stock/{text}", headers=auth)
        assert answer.status_code == 200, text
        assert answer.json()["code"] == "A005930"


def test_unknown_quote_is_404_problem(client: TestClient, auth: dict[str, str]) -> None:
    answer = client.get(f"{BASE}/stock/A035420", headers=auth)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == "quote_not_found"
    assert "A035420" in problem["detail"]


@pytest.mark.parametrize("code", ["XYZ", "A12345", "A00066", "00593", "A0059301", "A00593!"])
def test_invalid_code_is_422_problem(client: TestClient, auth: dict[str, str],
                                     code: str) -> None:
    answer = client.get(f"{BASE}/stock/{code}", headers=auth)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "invalid_code"


def test_multiple_quotes_with_some_missing(client: TestClient, store: redis.Redis,
                                           auth: dict[str, str],
                                           api_settings: ApiSettings) -> None:
    put(store, make_quote("A005930", price=71200))
    put(store, make_quote("A000660", price=180000, age_s=api_settings.quote_max_age_s + 1))
    answer = client.get(
        f"{BASE}/stocks/multiple",
        params=[("stock_codes", "A000660"), ("stock_codes", "A035420"),
                ("stock_codes", "005930"), ("stock_codes", "A000660")],
        headers=auth,
    )
    assert answer.status_code == 200
    body = answer.json()
    # Request order, repeats once, bare codes in bus form.
    assert list(body["quotes"]) == ["A000660", "A035420", "A005930"]
    assert body["quotes"]["A000660"]["price"] == 180000
    assert body["quotes"]["A000660"]["stale"] is True
    assert body["quotes"]["A005930"]["price"] == 71200
    assert body["quotes"]["A005930"]["stale"] is False
    assert body["quotes"]["A035420"] is None
    assert body["missing"] == ["A035420"]


def test_multiple_accepts_comma_separated_codes(client: TestClient, store: redis.Redis,
                                                auth: dict[str, str]) -> None:
    put(store, make_quote("A005930"))
    body = client.get(f"{BASE}/stocks/multiple?stock_codes=A005930,A000660",
                      headers=auth).json()
    assert list(body["quotes"]) == ["A005930", "A000660"] and body["missing"] == ["A000660"]


def test_multiple_limits_and_validation(client: TestClient, auth: dict[str, str]) -> None:
    hundred = [("stock_codes", f"A{n:06d}") for n in range(100)]
    assert client.get(f"{BASE}/stocks/multiple", params=hundred, headers=auth).status_code == 200
    too_many = [*hundred, ("stock_codes", "A999999")]
    answer = client.get(f"{BASE}/stocks/multiple", params=too_many, headers=auth)
    assert answer.status_code == 422 and answer.json()["code"] == "too_many_codes"
    answer = client.get(f"{BASE}/stocks/multiple?stock_codes=A005930&stock_codes=nope",
                        headers=auth)
    assert answer.status_code == 422 and answer.json()["code"] == "invalid_code"
    assert "nope" in answer.json()["detail"]
    answer = client.get(f"{BASE}/stocks/multiple", headers=auth)
    assert answer.status_code == 422 and answer.json()["code"] == "validation_error"


def test_all_serves_the_active_subscriptions_only(client: TestClient, store: redis.Redis,
                                                  auth: dict[str, str]) -> None:
    assert client.get(f"{BASE}/stocks/all", headers=auth).json() == {"quotes": {},
                                                                      "missing": []}
    for code in ("A005930", "A000660", "A035420"):
        put(store, make_quote(code))
    since = ActiveSubscription("sub-1", "2026-11-20T00:00:00Z").to_json()
    store.hset(NAMES.active_subscriptions, mapping={
        TOPICS.topic("A005930"): since,
        TOPICS.topic("A000660"): since,
        TOPICS.topic("A068270"): since,  # just subscribed: no quote yet
    })
    body = client.get(f"{BASE}/stocks/all", headers=auth).json()
    assert list(body["quotes"]) == ["A000660", "A005930", "A068270"]  # A035420 is not active
    assert body["quotes"]["A005930"]["code"] == "A005930"
    assert body["missing"] == ["A068270"]


async def test_daemon_health_from_the_relayers_hash(
    api_settings: ApiSettings, redis_server: RedisServer
) -> None:
    writer = Redis.from_url(redis_server.url)
    stats = RelayerStats(upstream="sim ws://127.0.0.1:8765/ws", instance="relayer-1")
    stats.state = stats.state.CONNECTED
    stats.connected_at = format_utc(datetime.now(UTC))
    stats.last_tick_at = format_utc(datetime.now(UTC) - timedelta(seconds=3), millis=True)
    stats.ticks_total, stats.reconnects = 4242, 2
    last_write_at = format_utc(datetime.now(UTC) - timedelta(seconds=4), millis=True)
    await HealthReporter(writer, NAMES, ttl_s=5).write(
        stats, subscriptions=3, rejected=["/topic/v1/kr/stock/trade/A999999"], dropped=0,
        written=4200, last_write_at=last_write_at)
    await writer.aclose()

    with TestClient(create_app(api_settings)) as client:
        # As an admin: other users do not see `upstream` (tests/api/test_system.py).
        answer = client.get(f"{BASE}/daemon/health", headers=bearer(api_settings, Role.ADMIN))
    assert answer.status_code == 200
    body = answer.json()
    assert body["alive"] is True and body["state"] == "connected"
    assert body["subscriptions"] == 3 and body["ticks_total"] == 4242
    assert body["ticks_written_total"] == 4200 and body["last_write_at"] == last_write_at
    assert 3.5 <= body["last_write_age_s"] < 30
    assert body["reconnects"] == 2
    assert body["rejected_topics"] == ["/topic/v1/kr/stock/trade/A999999"]
    assert body["upstream"] == "sim ws://127.0.0.1:8765/ws"
    assert 2.5 <= body["last_tick_age_s"] < 30
    assert body["connected_at"] == stats.connected_at
    assert body["updated_age_s"] < api_settings.relayer_health_max_age_s


def test_daemon_health_absent_is_not_alive(client: TestClient, auth: dict[str, str]) -> None:
    answer = client.get(f"{BASE}/daemon/health", headers=auth)
    assert answer.status_code == 200
    body = answer.json()
    assert body["alive"] is False and body["state"] is None and body["ticks_total"] is None


def test_daemon_health_stale_hash_is_not_alive(client: TestClient, store: redis.Redis,
                                               auth: dict[str, str],
                                               api_settings: ApiSettings) -> None:
    old = datetime.now(UTC) - timedelta(seconds=api_settings.relayer_health_max_age_s + 5)
    store.hset(NAMES.relayer_health, mapping={
        "state": "connected", "updated_at": format_utc(old, millis=True),
        "ticks_total": "7", "connected_at": "", "rejected_topics": "[]",
    })
    body = client.get(f"{BASE}/daemon/health", headers=auth).json()
    assert body["alive"] is False
    assert body["state"] == "connected" and body["ticks_total"] == 7
    assert body["connected_at"] is None  # the relayer writes "" before its first connect


@pytest.mark.parametrize("path", ["/stock/A005930", "/stocks/multiple?stock_codes=A005930",
                                  "/stocks/all", "/daemon/health"])
def test_quote_routes_need_a_token(client: TestClient, path: str) -> None:
    answer = client.get(f"{BASE}{path}")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"] == "Bearer"
    answer = client.get(f"{BASE}{path}", headers={"Authorization": "Bearer not-a-token"})
    assert answer.status_code == 401


@pytest.mark.private_redis
def test_redis_down_is_a_fast_503(client: TestClient, redis_server: RedisServer,
                                  auth: dict[str, str]) -> None:
    redis_server.stop()
    answer = client.get(f"{BASE}/stock/A005930", headers=auth)
    assert answer.status_code == 503
    assert answer.json()["code"] == "redis_unavailable"


def test_documented_quote_shape_follows_the_bus_quote(client: TestClient) -> None:
    code, *bus_fields = [f.name for f in dataclasses.fields(Quote)]
    assert list(QuoteOut.model_fields) == [code, "name", "market", *bus_fields, "lower_limit",
                                          "upper_limit", "age_s", "market_session", "stale"]
    spec = client.get("/openapi.json").json()
    ok = spec["paths"][f"{BASE}/stock/{{code}}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/QuoteOut")


def test_stored_quote_json_is_passed_through_not_rebuilt(
    client: TestClient, store: redis.Redis, auth: dict[str, str]
) -> None:
    # A field the bus adds later reaches clients without an API release.
    raw = orjson.loads(make_quote("A005930").to_json()) | {"vi_active": True}
    store.set(NAMES.quote("A005930"), orjson.dumps(raw))
    assert client.get(f"{BASE}/stock/A005930", headers=auth).json()["vi_active"] is True


def test_repeated_reads_are_served_from_the_worker_memo_within_its_ttl(
    api_settings: ApiSettings, store: redis.Redis
) -> None:
    for ttl, expected in ((60.0, 71200), (0.0, 71300)):
        store.set(NAMES.quote("A005930"), make_quote("A005930", price=71200).to_json())
        settings = api_settings.model_copy(update={"quote_cache_ttl_s": ttl})
        with TestClient(create_app(settings)) as client:
            auth = bearer(settings)
            first = client.get(f"{BASE}/stock/A005930", headers=auth).json()
            put(store, make_quote("A005930", price=71300))
            again = client.get(f"{BASE}/stock/A005930", headers=auth).json()
        assert first["price"] == 71200
        assert again["price"] == expected, ttl
        if ttl:  # the memoised quote's age is still computed at answer time
            assert again["age_s"] >= first["age_s"] and again["seq"] == first["seq"]


def test_an_absent_quote_is_not_memoised(client: TestClient, store: redis.Redis,
                                         auth: dict[str, str]) -> None:
    assert client.get(f"{BASE}/stock/A068270", headers=auth).status_code == 404
    put(store, make_quote("A068270"))
    assert client.get(f"{BASE}/stock/A068270", headers=auth).status_code == 200


def test_quote_memo_expires_and_stays_bounded() -> None:
    cache = QuoteCache(ttl_s=0.05, max_entries=2)
    cache.put("A005930", {"price": 1}, 100.0, now=10.0)
    assert cache.get("A005930", now=10.04) == ({"price": 1}, 100.0)
    assert cache.get("A005930", now=10.05) is None
    cache.put("A000660", {"price": 2}, None, now=11.0)
    cache.put("A035420", {"price": 3}, None, now=11.0)  # full: starts over
    assert cache.get("A000660", now=11.0) is None
    assert cache.get("A035420", now=11.0) == ({"price": 3}, None)
    assert not QuoteCache(ttl_s=0).enabled


# --------------------------------------------------------------------------------------------
# Quotes by the calendar: at night the last close's quote is what there is, not a failure.

MONDAY = date(2026, 12, 7)
FRIDAY, SUNDAY = MONDAY - timedelta(days=3), MONDAY - timedelta(days=1)
MAX_AGE_S = 10.0


def kst_at(day: date, hh: int, mm: int = 0, ss: float = 0) -> datetime:
    return kst(day, time(hh, mm)) + timedelta(seconds=ss)


@pytest.mark.parametrize(("now", "received", "session", "stale"), [
    # Closed: judged at the last print, the previous close (Friday's, over the weekend).
    (kst_at(SUNDAY, 3), kst_at(FRIDAY, 15, 30, 0.2), Session.CLOSED, False),
    (kst_at(SUNDAY, 3), kst_at(FRIDAY, 15, 29, 55), Session.CLOSED, False),
    (kst_at(SUNDAY, 3), kst_at(FRIDAY, 15, 19, 55), Session.CLOSED, True),  # missed the close
    (kst_at(SUNDAY, 3), kst_at(FRIDAY - timedelta(days=1), 15, 30), Session.CLOSED, True),
    (kst_at(MONDAY, 20), kst_at(MONDAY, 15, 30, 1), Session.CLOSED, False),
    # The opening auction prints nothing until 09:00.
    (kst_at(MONDAY, 8, 45), kst_at(FRIDAY, 15, 30), Session.OPENING_AUCTION, False),
    # The open: the auction's print is on its way for QUOTE_MAX_AGE_S, then it is missing.
    (kst_at(MONDAY, 9, 0, 5), kst_at(FRIDAY, 15, 30), Session.CONTINUOUS, False),
    (kst_at(MONDAY, 9, 0, 11), kst_at(FRIDAY, 15, 30), Session.CONTINUOUS, True),
    (kst_at(MONDAY, 9, 0, 11), kst_at(MONDAY, 9, 0, 0.1), Session.CONTINUOUS, True),
    (kst_at(MONDAY, 11), kst_at(MONDAY, 10, 59, 55), Session.CONTINUOUS, False),
    # The closing auction: judged at 15:20, when continuous trading ended.
    (kst_at(MONDAY, 15, 25), kst_at(MONDAY, 15, 19, 58), Session.CLOSING_AUCTION, False),
    (kst_at(MONDAY, 15, 25), kst_at(MONDAY, 15, 0), Session.CLOSING_AUCTION, True),
])
def test_staleness_is_judged_against_the_session(now: datetime, received: datetime,
                                                 session: Session, stale: bool) -> None:
    moment = market_moment(WeekdayCalendar(), now)
    assert moment.session is session
    assert moment.stale(received.timestamp(), MAX_AGE_S) is stale
    assert moment.stale(None, MAX_AGE_S) is True  # an unknown age is never fresh


def test_always_open_judges_the_age_alone_as_before() -> None:
    now = kst_at(MONDAY, 3)
    moment = market_moment(AlwaysOpen(), now)
    assert moment.session is Session.CONTINUOUS
    assert moment.stale((now - timedelta(seconds=9)).timestamp(), MAX_AGE_S) is False
    assert moment.stale((now - timedelta(seconds=11)).timestamp(), MAX_AGE_S) is True
    # Across its day boundary (15:30) too: no opening auction whose print is awaited.
    at_close = kst_at(MONDAY, 15, 30, 5)
    assert market_moment(AlwaysOpen(), at_close).stale(
        (at_close - timedelta(seconds=11)).timestamp(), MAX_AGE_S) is True


def closing_print(code: str, received: datetime) -> Quote:
    return dataclasses.replace(make_quote(code), session="CLOSING_AUCTION",
                               ts=format_utc(received),
                               received_at=format_utc(received, millis=True))


def test_a_quote_at_night_is_the_last_close_not_a_failure(
        client: TestClient, store: redis.Redis, auth: dict[str, str]) -> None:
    resources = client.app.state.resources  # type: ignore[attr-defined]
    resources.calendar = WeekdayCalendar()
    resources.clock = lambda: kst_at(SUNDAY, 3)
    put(store, closing_print("A005930", kst_at(FRIDAY, 15, 30, 0.3)))
    put(store, closing_print("A000660", kst_at(FRIDAY - timedelta(days=1), 15, 30)))
    body = client.get(f"{BASE}/stock/A005930", headers=auth).json()
    # The print says what it was; market_session what the market does now.
    assert (body["session"], body["market_session"], body["stale"]) == (
        "CLOSING_AUCTION", "CLOSED", False)
    assert body["age_s"] == pytest.approx(35.5 * 3600 - 0.3, abs=0.01)  # Friday 15:30 -> 03:00
    QuoteOut.model_validate(body)
    several = client.get(f"{BASE}/stocks/multiple", params={"stock_codes": "A005930,A000660"},
                         headers=auth).json()["quotes"]
    assert several["A005930"]["stale"] is False
    assert several["A000660"]["stale"] is True  # Thursday's: the relayer missed Friday
    assert {q["market_session"] for q in several.values()} == {"CLOSED"}

    resources.clock = lambda: kst_at(MONDAY, 10)  # trading again: the quote has missed prints
    body = client.get(f"{BASE}/stock/A005930", headers=auth).json()
    assert (body["market_session"], body["stale"]) == ("CONTINUOUS", True)


# --------------------------------------------------------------------------------------------
# The single-quote read splices its answer from the stored bytes (QuoteContext.answer): the
# same bytes as the dict every other quote read builds (QuoteContext.view), whatever the
# stored quote holds, on the read from Redis and on the memo's repeats.

TRADING_NOW = kst_at(MONDAY, 10)  # continuous trading, far from the wall clock: `now` is this


def stored_json(code: str, received: datetime, **changes: object) -> bytes:
    """The JSON of a quote of `code` as the relayer stores it, received (and traded) at
    `received`, with `changes` over its fields (a new field, a null, or an unreadable value)."""
    quote = dataclasses.replace(make_quote(code), ts=format_utc(received),
                                received_at=format_utc(received, millis=True))
    return orjson.dumps(orjson.loads(quote.to_json()) | changes)


SPLICED = {
    "fresh, with its stream entry": (
        "A005930", stored_json("A005930", TRADING_NOW - timedelta(seconds=0.4),
                               tick_id="1764000000000-0")),
    "stale": ("A000660", stored_json("A000660", TRADING_NOW - timedelta(seconds=MAX_AGE_S + 1))),
    "optional fields null": (
        "A035420", stored_json("A035420", TRADING_NOW, trading_strength=None, session=None,
                               exchange=None)),
    "not in the master": ("A99999Z", stored_json("A99999Z", TRADING_NOW)),
    "traded before the day began (limits around its price)": (
        "A068270", stored_json("A068270", kst_at(FRIDAY, 15, 30, 0.2), price=72000)),
    "received_at unreadable (age null, stale)": (
        "A051910", stored_json("A051910", TRADING_NOW, received_at="soon")),
    "fields the bus may add, with text to escape": (
        "A207940", stored_json("A207940", TRADING_NOW, vi_active=True,
                               note='"주의"\n\\ \u2028', depth={"bid": [1, 2.5, None]})),
    "a field of an answer's name (replaced where it stands)": (
        "A005380", stored_json("A005380", TRADING_NOW, name="old", stale="maybe")),
    "written with spaces, in another order": (
        "A000270", json.dumps(orjson.loads(stored_json("A000270", TRADING_NOW)), indent=1,
                              sort_keys=True).encode()),
}


@pytest.mark.parametrize("case", list(SPLICED))
def test_a_spliced_answer_is_the_dict_answer_byte_for_byte(
        api_settings: ApiSettings, store: redis.Redis, case: str) -> None:
    code, raw = SPLICED[case]
    store.set(NAMES.quote(code), raw)
    # A memo that outlives the test: the second read is answered from it.
    settings = api_settings.model_copy(update={"quote_cache_ttl_s": 60.0,
                                               "quote_max_age_s": MAX_AGE_S})
    with TestClient(create_app(settings)) as client:
        resources = client.app.state.resources  # type: ignore[attr-defined]
        resources.calendar = WeekdayCalendar()
        resources.clock = lambda: TRADING_NOW + timedelta(seconds=0.25)
        resources.instruments.cached()  # the master as the answers will see it
        expected = orjson.dumps(quote_context(resources).view(code, decode_quote(raw)))
        answers = [client.get(f"{BASE}/stock/{code}", headers=bearer(settings))
                   for _ in range(2)]
    for answer in answers:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert answer.content == expected
    body = orjson.loads(expected)  # the documented shape, with the same values
    assert QuoteOut.model_validate(body).model_dump() == {name: body.get(name)  # tick_id
                                                          for name in QuoteOut.model_fields}


@pytest.mark.parametrize("raw", [
    b"not json", b"[1, 2]", b'{"code": "A005930"}',
    stored_json("A005930", TRADING_NOW, price=0),
    stored_json("A005930", TRADING_NOW, volume=True),
    stored_json("A005930", TRADING_NOW, tick_id="latest"),
])
def test_a_malformed_stored_quote_is_answered_as_no_quote(
        client: TestClient, store: redis.Redis, auth: dict[str, str], raw: bytes) -> None:
    absent = client.get(f"{BASE}/stock/A005930", headers=auth)
    assert absent.status_code == 404 and absent.json()["code"] == "quote_not_found"
    store.set(NAMES.quote("A005930"), raw)
    malformed = client.get(f"{BASE}/stock/A005930", headers=auth)
    assert malformed.status_code == 404
    assert malformed.headers["content-type"] == "application/problem+json"
    assert malformed.json() == absent.json()
    put(store, make_quote("A005930"))  # the relayer's next tick is answered at once
    assert client.get(f"{BASE}/stock/A005930", headers=auth).status_code == 200


class CountingCalendar(WeekdayCalendar):
    """The test calendar, counting the days it is asked for."""

    asked = 0

    def day_of(self, moment: datetime) -> TradingDay:
        self.asked += 1
        return super().day_of(moment)


def test_quote_contexts_ask_the_calendar_once_per_span_and_answer_as_if_every_time(
        client: TestClient) -> None:
    resources = client.app.state.resources  # type: ignore[attr-defined]
    resources.calendar = calendar = CountingCalendar()
    # Each boundary of a day, then back to a Sunday (a clock may go back), then forward again.
    for boundary in (kst_at(MONDAY, 8, 30), kst_at(MONDAY, 9), kst_at(MONDAY, 15, 20),
                     kst_at(MONDAY, 15, 30), kst_at(SUNDAY, 12), kst_at(MONDAY, 10)):
        for offset in (-1, -0.001, 0, 0.001, 0.5, 1):
            now = boundary + timedelta(seconds=offset)
            resources.clock = lambda now=now: now
            context = quote_context(resources)
            assert context.market == market_moment(calendar, now), now
            assert context.day_start == day_start(calendar, now), now
    calendar.asked = 0
    for second in range(100):  # within one span: the span already known
        resources.clock = lambda second=second: kst_at(MONDAY, 10, 1, second / 10)
        quote_context(resources)
    assert calendar.asked == 0
