"""Liveness, readiness and metrics through HTTP against a real Redis and a real database, with
the relayer's health written as the relayer writes it (relayer.health's reporter)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import APIRouter, HTTPException
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from api.db import Database, make_engine
from api.errors import PROBLEM_JSON
from api.settings import ApiSettings
from relayer.bus import BusNames, RelayerState, format_utc
from relayer.health import HealthReporter, RelayerStats
from tests.conftest import RedisServer
from tests.support.env import free_port

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


def samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by (name, labels)."""
    answer = client.get("/metrics")
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


def test_ready_with_redis_and_database_up_and_no_relayer(client: TestClient) -> None:
    answer = client.get("/ready")
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


def test_ready_reports_a_live_relayer(client: TestClient, redis_server: RedisServer) -> None:
    write_health(redis_server)
    relayer = client.get("/ready").json()["relayer"]
    assert relayer["alive"] is True
    assert relayer["state"] == "connected"
    assert relayer["subscriptions"] == 20
    assert 1.0 <= relayer["last_tick_age_s"] < 10


def test_ready_reports_a_relayer_that_stopped_refreshing_as_not_alive(
    client: TestClient, redis_server: RedisServer, api_settings: ApiSettings
) -> None:
    write_health(redis_server)
    stale = format_utc(datetime.now(UTC) - timedelta(
        seconds=api_settings.relayer_health_max_age_s + 3), millis=True)
    redis_server.client().hset(NAMES.relayer_health, "updated_at", stale)
    answer = client.get("/ready")
    assert answer.status_code == 200
    assert answer.json()["relayer"]["alive"] is False
    assert answer.json()["relayer"]["state"] == "connected"


def test_ready_is_503_problem_json_quickly_when_redis_is_down(
    client: TestClient, real_redis_server: RedisServer
) -> None:
    assert client.get("/ready").status_code == 200  # the pool holds a live connection now
    real_redis_server.stop()
    started = time.monotonic()
    answer = client.get("/ready")
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


def test_ready_is_503_when_the_database_is_unreachable(client: TestClient) -> None:
    resources = client.app.state.resources  # type: ignore[attr-defined]
    working = resources.db
    # Nothing listens on a fresh free port: every connect is refused.
    resources.db = Database(make_engine(f"mysql+pymysql://root@127.0.0.1:{free_port()}/x"))
    try:
        answer = client.get("/ready")
    finally:
        resources.db.dispose()
        resources.db = working
    assert answer.status_code == 503
    body = answer.json()
    assert body["code"] == "not_ready"
    assert body["database"] == {"ok": False, "latency_ms": body["database"]["latency_ms"],
                                "error": "OperationalError"}
    assert body["redis"]["ok"] is True
    assert "127.0.0.1" not in answer.text  # no connection details on an open endpoint


def test_ready_gives_up_on_a_check_that_hangs(client: TestClient,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    resources = client.app.state.resources  # type: ignore[attr-defined]
    monkeypatch.setattr(resources.settings, "ready_timeout_s", 0.2)

    def hang(_session: object) -> None:
        time.sleep(1.0)  # a database that accepted the connection and went silent

    monkeypatch.setattr("api.system.readiness._select_one", hang)
    started = time.monotonic()
    answer = client.get("/ready")
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


def test_metrics_still_answer_when_redis_is_down(client: TestClient,
                                                 real_redis_server: RedisServer) -> None:
    write_health(real_redis_server)
    real_redis_server.stop()
    assert client.get("/health").status_code == 200
    scrape = samples(client)
    assert scrape[("stocking_relayer_up", frozenset())] == 0
    assert ("stocking_relayer_ticks_total", frozenset()) not in scrape
    assert requests_total(scrape, "/health", "200") >= 1
