"""Liveness, readiness and metrics through HTTP against a real Redis and a real database, with
the relayer's health written as the relayer writes it (relayer.health's reporter)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from api.app import create_app
from api.auth.passwords import PasswordProfile
from api.db import Database, make_engine
from api.errors import PROBLEM_JSON
from api.settings import ApiSettings, Environment
from relayer.bus import BusNames, RelayerState, format_utc
from relayer.health import HealthReporter, RelayerStats
from relayer.market_calendar import KST
from tests.conftest import RedisServer
from tests.support.api import assert_problem, login_as_admin
from tests.support.env import free_port
from tests.support.fake_portone import webhook_secret
from tests.support.weekday_calendar import WeekdayCalendar

NAMES = BusNames()


def write_health(server: RedisServer, *, last_tick_age_s: float = 1.5,
                 ticks: int = 1234) -> None:
    """One health write, exactly as the relayer makes it."""
    stats = RelayerStats(upstream="sim ws://127.0.0.1:8765/ws", instance="test",
                         state=RelayerState.CONNECTED, ticks_total=ticks, malformed_total=3,
                         reconnects=2)
    stats.last_tick_at = format_utc(datetime.now(UTC) - timedelta(seconds=last_tick_age_s),
                                    millis=True)

    async def write() -> None:
        redis = Redis.from_url(server.url)
        try:
            await HealthReporter(redis, NAMES, ttl_s=30).write(
                stats, subscriptions=20, rejected=[], dropped=7)
        finally:
            await redis.aclose()

    asyncio.run(write())


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    return login_as_admin(client)


def samples(client: TestClient,
            headers: dict[str, str] | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]],
                                                          float]:
    """Every sample of a scrape, keyed by (name, labels)."""
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples}


def requests_total(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], route: str,
                   status: str, method: str = "GET") -> float:
    labels = frozenset({"method": method, "route": route, "status": status}.items())
    return scrape.get(("stocking_http_requests_total", labels), 0.0)


# --- /health and /ready ---------------------------------------------------------------------


def test_health_answers_ok(client: TestClient) -> None:
    answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_ready_tells_anyone_but_an_admin_only_that_it_is_ready(
    client: TestClient, admin: dict[str, str], alice: dict[str, str],
    redis_server: RedisServer
) -> None:
    write_health(redis_server)  # a live relayer, whose upstream URL must not show
    for headers in (None, alice):
        answer = client.get("/ready", headers=headers)
        assert answer.status_code == 200
        assert answer.json() == {"status": "ready"}
    details = client.get("/ready", headers=admin).json()
    assert details["status"] == "ready"
    assert details["relayer"]["upstream"] == "sim ws://127.0.0.1:8765/ws"
    assert {"redis", "database", "fills"} <= set(details)


def test_ready_refuses_a_token_that_is_not_valid(client: TestClient) -> None:
    answer = client.get("/ready", headers={"Authorization": "Bearer not-a-token"})
    assert_problem(answer, 401, "invalid_token")


def test_ready_with_redis_and_database_up_and_no_relayer(client: TestClient,
                                                         admin: dict[str, str]) -> None:
    answer = client.get("/ready", headers=admin)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ready"
    for check in ("redis", "database"):
        assert body[check]["ok"] is True
        assert body[check]["error"] is None
        assert 0 <= body[check]["latency_ms"] < 1000
    # No relayer: reported, but the API is still ready (it can serve accounts and orders).
    assert body["relayer"]["alive"] is False
    assert body["relayer"]["state"] is None
    # No fills worker either: reported the same way.
    assert body["fills"]["alive"] is False and body["fills"]["updated_age_s"] is None


def test_ready_reports_a_live_relayer(client: TestClient, redis_server: RedisServer,
                                      admin: dict[str, str]) -> None:
    write_health(redis_server)
    relayer = client.get("/ready", headers=admin).json()["relayer"]
    assert relayer["alive"] is True
    assert relayer["state"] == "connected"
    assert relayer["subscriptions"] == 20
    assert 1.0 <= relayer["last_tick_age_s"] < 10
    assert (relayer["market_session"], relayer["ticks_expected"]) == ("CONTINUOUS", True)


def test_ready_at_night_with_a_relayer_silent_for_hours(client: TestClient,
                                                        redis_server: RedisServer,
                                                        admin: dict[str, str]) -> None:
    # Sunday 03:00 by the calendar; the relayer's last tick was the close, hours ago.
    resources = client.app.state.resources  # type: ignore[attr-defined]
    resources.calendar = WeekdayCalendar()
    resources.clock = lambda: datetime(2026, 12, 6, 3, tzinfo=KST)
    write_health(redis_server, last_tick_age_s=11.5 * 3600)
    body = client.get("/ready", headers=admin).json()
    assert body["status"] == "ready"
    relayer = body["relayer"]
    assert relayer["alive"] is True and relayer["last_tick_age_s"] >= 11.5 * 3600
    assert (relayer["market_session"], relayer["ticks_expected"]) == ("CLOSED", False)
    assert client.get("/ready").json() == {"status": "ready"}


def test_ready_reports_a_relayer_that_stopped_refreshing_as_not_alive(
    client: TestClient, redis_server: RedisServer, api_settings: ApiSettings,
    admin: dict[str, str]
) -> None:
    write_health(redis_server)
    stale = format_utc(datetime.now(UTC) - timedelta(
        seconds=api_settings.relayer_health_max_age_s + 3), millis=True)
    redis_server.client().hset(NAMES.relayer_health, "updated_at", stale)
    answer = client.get("/ready", headers=admin)
    assert answer.status_code == 200
    assert answer.json()["relayer"]["alive"] is False
    assert answer.json()["relayer"]["state"] == "connected"


def test_ready_is_503_problem_json_quickly_when_redis_is_down(
    client: TestClient, real_redis_server: RedisServer, admin: dict[str, str]
) -> None:
    assert client.get("/ready").status_code == 200  # the pool holds a live connection now
    real_redis_server.stop()
    anonymous = client.get("/ready")
    assert_problem(anonymous, 503, "not_ready")
    # Only "not ready": nothing about what failed, or where.
    assert set(anonymous.json()) == {"type", "title", "status", "detail", "code", "instance"}
    assert "Redis" not in anonymous.text
    started = time.monotonic()
    answer = client.get("/ready", headers=admin)
    elapsed = time.monotonic() - started
    assert answer.status_code == 503
    assert answer.headers["content-type"] == PROBLEM_JSON
    body = answer.json()
    assert body["code"] == "not_ready"
    assert body["status"] == 503
    assert "Redis" in body["detail"]
    assert body["redis"]["ok"] is False
    assert body["redis"]["error"]
    assert body["database"]["ok"] is True
    assert body["relayer"]["alive"] is False
    assert elapsed < 2.0
    # Liveness does not depend on Redis: an orchestrator must not restart this process.
    assert client.get("/health").status_code == 200


def test_ready_is_503_when_the_database_is_unreachable(client: TestClient,
                                                      admin: dict[str, str]) -> None:
    resources = client.app.state.resources  # type: ignore[attr-defined]
    working = resources.db
    # Nothing listens on a fresh free port: every connect is refused.
    resources.db = Database(make_engine(f"mysql+pymysql://root@127.0.0.1:{free_port()}/x"))
    try:
        anonymous = client.get("/ready")
        answer = client.get("/ready", headers=admin)
    finally:
        resources.db.dispose()
        resources.db = working
    assert_problem(anonymous, 503, "not_ready")
    assert "database" not in anonymous.json()
    assert answer.status_code == 503
    body = answer.json()
    assert body["code"] == "not_ready"
    assert body["database"] == {"ok": False, "latency_ms": body["database"]["latency_ms"],
                                "error": "OperationalError"}
    assert body["redis"]["ok"] is True
    assert "127.0.0.1" not in answer.text  # no connection details on an open endpoint


def test_ready_gives_up_on_a_check_that_hangs(client: TestClient, admin: dict[str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    resources = client.app.state.resources  # type: ignore[attr-defined]
    monkeypatch.setattr(resources.settings, "ready_timeout_s", 0.2)

    def hang(_session: object) -> None:
        time.sleep(1.0)  # a database that accepted the connection and went silent

    monkeypatch.setattr("api.system.readiness._select_one", hang)
    started = time.monotonic()
    answer = client.get("/ready", headers=admin)
    assert time.monotonic() - started < 0.9
    assert answer.status_code == 503
    assert answer.json()["database"]["error"] == "timed out after 0.2s"


# --- /metrics -------------------------------------------------------------------------------


@pytest.fixture
def routed_client(client: TestClient) -> Iterator[TestClient]:
    """The client, with two extra routes: one with a path parameter, one that fails."""

    @client.app.get("/test-metrics/items/{item_id}")  # type: ignore[attr-defined, misc]
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(404, "no such item")
        return {"id": item_id}

    @client.app.get("/test-metrics/boom")  # type: ignore[attr-defined, misc]
    async def boom() -> None:
        raise RuntimeError("boom")

    yield client


def test_metrics_count_requests_by_route_template_and_status(routed_client: TestClient) -> None:
    client = routed_client
    template = "/test-metrics/items/{item_id}"
    before = samples(client)
    for item_id in (1, 2, 3):
        assert client.get(f"/test-metrics/items/{item_id}").status_code == 200
    assert client.get("/test-metrics/items/0").status_code == 404
    assert client.get("/health").status_code == 200
    assert client.get("/no/such/path/42").status_code == 404
    with pytest.raises(RuntimeError):
        client.get("/test-metrics/boom")
    after = samples(client)

    def delta(route: str, status: str) -> float:
        return requests_total(after, route, status) - requests_total(before, route, status)

    assert delta(template, "200") == 3
    assert delta(template, "404") == 1
    assert delta("/health", "200") == 1
    assert delta("unmatched", "404") == 1
    assert delta("/test-metrics/boom", "500") == 1
    # One series per route, never per raw path.
    scrape_text = client.get("/metrics").text
    assert "/test-metrics/items/1" not in scrape_text
    assert "/no/such/path" not in scrape_text
    # The latency histogram has the same labels.
    labels = frozenset({"method": "GET", "route": template, "status": "200"}.items())
    count_before = before.get(("stocking_http_request_duration_seconds_count", labels), 0.0)
    assert after[("stocking_http_request_duration_seconds_count", labels)] - count_before == 3


def test_metrics_label_included_routers_with_their_full_prefix(client: TestClient) -> None:
    inner, outer = APIRouter(), APIRouter()

    @inner.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    outer.include_router(inner, prefix="/v1")
    client.app.include_router(outer, prefix="/test-prefix")  # type: ignore[attr-defined]
    template = "/test-prefix/v1/things/{thing_id}"  # every prefix, then the route's own path
    before = samples(client)
    assert client.get("/test-prefix/v1/things/a").status_code == 200
    assert client.post("/test-prefix/v1/things/b").status_code == 405
    assert client.get("/docs").status_code == 200  # a plain Starlette route
    after = samples(client)
    for method, route, status in (("GET", template, "200"), ("POST", template, "405"),
                                  ("GET", "/docs", "200")):
        assert (requests_total(after, route, status, method)
                - requests_total(before, route, status, method)) == 1, (method, route, status)
    assert 'route="/things/{thing_id}"' not in client.get("/metrics").text


def test_metrics_export_the_relayer_health(client: TestClient,
                                           redis_server: RedisServer) -> None:
    assert samples(client)[("stocking_relayer_up", frozenset())] == 0
    write_health(redis_server, last_tick_age_s=2.0, ticks=1234)
    scrape = samples(client)
    assert scrape[("stocking_relayer_up", frozenset())] == 1
    assert scrape[("stocking_relayer_ticks_total", frozenset())] == 1234
    assert scrape[("stocking_relayer_reconnects_total", frozenset())] == 2
    assert scrape[("stocking_relayer_malformed_total", frozenset())] == 3
    assert scrape[("stocking_relayer_dropped_total", frozenset())] == 7
    assert scrape[("stocking_relayer_subscriptions", frozenset())] == 20
    assert 2.0 <= scrape[("stocking_relayer_last_tick_age_seconds", frozenset())] < 10


def test_metrics_say_whether_ticks_are_expected_now(client: TestClient) -> None:
    assert samples(client)[("stocking_market_ticks_expected", frozenset())] == 1  # always open
    app = client.app
    assert isinstance(app, FastAPI)
    resources = app.state.resources
    resources.calendar = WeekdayCalendar()
    resources.clock = lambda: datetime(2026, 12, 6, 3, tzinfo=KST)  # Sunday 03:00
    assert samples(client)[("stocking_market_ticks_expected", frozenset())] == 0
    resources.clock = lambda: datetime(2026, 12, 7, 10, tzinfo=KST)  # Monday 10:00
    assert samples(client)[("stocking_market_ticks_expected", frozenset())] == 1


def test_metrics_still_answer_when_redis_is_down(client: TestClient,
                                                 real_redis_server: RedisServer) -> None:
    write_health(real_redis_server)
    real_redis_server.stop()
    assert client.get("/health").status_code == 200
    scrape = samples(client)
    assert scrape[("stocking_relayer_up", frozenset())] == 0
    assert ("stocking_relayer_ticks_total", frozenset()) not in scrape
    assert requests_total(scrape, "/health", "200") >= 1


def test_metrics_need_the_metrics_token_when_one_is_set(
    api_settings: ApiSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_settings, "metrics_token", SecretStr("scrape-" + "t" * 32))
    with TestClient(create_app(api_settings)) as client:
        assert_problem(client.get("/metrics"), 401, "not_authenticated")
        for wrong in ("scrape-" + "t" * 31, "scrape-" + "t" * 33, login_as_admin(client)[
                "Authorization"].removeprefix("Bearer ")):
            answer = client.get("/metrics", headers={"Authorization": f"Bearer {wrong}"})
            assert_problem(answer, 401, "invalid_token")
            assert answer.headers["www-authenticate"] == "Bearer"
        # A header value that is not ASCII is compared as bytes: a 401, not a 500.
        answer = client.get("/metrics", headers={b"Authorization": b"Bearer sc\xe9"})
        assert_problem(answer, 401, "invalid_token")
        scrape = samples(client, {"Authorization": "Bearer scrape-" + "t" * 32})
        assert ("stocking_relayer_up", frozenset()) in scrape
        assert client.get("/health").status_code == 200  # the rest stays as it was


def test_an_empty_metrics_token_is_no_token(client: TestClient, api_settings: ApiSettings,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_settings, "metrics_token", SecretStr(""))
    assert client.get("/metrics").status_code == 200  # development: open
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 200


# --- what is exposed to whom ----------------------------------------------------------------


def test_daemon_health_shows_where_the_relayer_runs_to_admins_only(
    client: TestClient, redis_server: RedisServer, admin: dict[str, str], alice: dict[str, str]
) -> None:
    write_health(redis_server)
    url = "/api/v1/trading/realtime/daemon/health"
    for_admin = client.get(url, headers=admin).json()
    assert for_admin["alive"] is True
    assert for_admin["host"] and for_admin["pid"] > 0 and for_admin["instance"] == "test"
    assert for_admin["upstream"] == "sim ws://127.0.0.1:8765/ws"
    answer = client.get(url, headers=alice)
    assert answer.status_code == 200
    for_user = answer.json()
    hidden = {"host", "pid", "instance", "upstream"}
    assert all(for_user[name] is None for name in hidden), for_user
    assert for_admin["host"] not in answer.text and "8765" not in answer.text
    # Everything a client needs to judge the prices it gets is still there (ages move on).
    def shown(body: dict[str, object]) -> dict[str, object]:
        return {name: value for name, value in body.items()
                if name not in hidden and not name.endswith("_age_s")}

    assert shown(for_user) == shown(for_admin)
    assert for_user["last_tick_age_s"] is not None and for_user["updated_age_s"] is not None
    assert for_user["state"] == "connected" and for_user["ticks_total"] == 1234


def production_settings(redis_url: str, database_url: str, **overrides: object) -> ApiSettings:
    """Settings production accepts: a real-looking JWT key and PortOne values, no SQLite."""
    return ApiSettings(
        stocking_env=Environment.PRODUCTION, redis_url=redis_url, database_url=database_url,
        jwt_secret_key=SecretStr("production-signing-key-" + "p" * 32),
        portone_store_id="store-00000000-0000-0000-0000-000000000001",
        portone_channel_key="channel-key-00000000-0000-0000-0000-000000000001",
        portone_v2_api_secret=SecretStr("v2-api-secret-" + "s" * 40),
        portone_webhook_secret=SecretStr(webhook_secret()),
        **overrides)


def test_production_refuses_the_tests_only_password_hash() -> None:
    production_settings("redis://127.0.0.1:6379/0", "mysql+pymysql://app@db/stocking")
    with pytest.raises(ValidationError, match="PASSWORD_HASH_PROFILE must be `standard`"):
        production_settings("redis://127.0.0.1:6379/0", "mysql+pymysql://app@db/stocking",
                            password_hash_profile=PasswordProfile.TESTS_ONLY)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_api_docs_are_off_in_production_unless_enabled(
    path: str, redis_server: RedisServer, mysql_database_url: str
) -> None:
    off = production_settings(redis_server.url, mysql_database_url)
    with TestClient(create_app(off)) as client:
        assert client.get(path).status_code == 404
        assert client.get("/health").status_code == 200
    on = production_settings(redis_server.url, mysql_database_url, api_docs_enabled=True)
    with TestClient(create_app(on)) as client:
        assert client.get(path).status_code == 200


def test_docs_are_served_in_development_unless_disabled(api_settings: ApiSettings) -> None:
    with TestClient(create_app(api_settings)) as client:
        assert client.get("/openapi.json").status_code == 200
    api_settings.api_docs_enabled = False
    with TestClient(create_app(api_settings)) as client:
        assert client.get("/openapi.json").status_code == 404
        assert client.get("/docs").status_code == 404


def test_metrics_are_off_in_production_without_a_token_unless_public(
    redis_server: RedisServer, mysql_database_url: str
) -> None:
    with TestClient(create_app(production_settings(redis_server.url,
                                                   mysql_database_url))) as client:
        assert_problem(client.get("/metrics"), 404, "metrics_off")
    public = production_settings(redis_server.url, mysql_database_url, metrics_public=True)
    with TestClient(create_app(public)) as client:
        assert client.get("/metrics").status_code == 200
    token = "scrape-" + "t" * 32
    guarded = production_settings(redis_server.url, mysql_database_url,
                                  metrics_token=SecretStr(token))
    with TestClient(create_app(guarded)) as client:
        assert_problem(client.get("/metrics"), 401, "not_authenticated")
        assert client.get("/metrics",
                          headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_a_refused_start_does_not_print_the_secrets_it_was_given(
    caplog: pytest.LogCaptureFixture
) -> None:
    # Pydantic shows the start and the end of what it was given: the last one is short.
    secrets_given = {"jwt_secret_key": "jwt-" + "j" * 40,
                     "metrics_token": "metrics-" + "m" * 32,
                     "database_url": "mysql+pymysql://app:{}@db/stocking".format(
                         "db-password-0001"),
                     "portone_v2_api_secret": "v2-secret-0001"}
    with pytest.raises(ValidationError) as refused:
        # Production, with the PortOne store left at its development placeholder.
        ApiSettings(stocking_env="production", **secrets_given)
    assert "PORTONE_STORE_ID" in str(refused.value)
    for secret in ("j" * 40, "m" * 32, "db-password-0001", "v2-secret-0001"):
        assert secret not in str(refused.value)
        assert secret not in repr(refused.value)
    settings = ApiSettings(metrics_token=SecretStr("metrics-" + "m" * 32))
    assert "m" * 32 not in repr(settings)
