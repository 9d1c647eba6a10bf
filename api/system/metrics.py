"""Prometheus metrics of the API (`GET /metrics`).

- HTTP: every request is counted and timed by `MetricsMiddleware`, a plain ASGI middleware,
  labelled by method, route template (`/api/v1/orders/{id}`, never the raw path: one series per
  route, not per id) and status.
- Payments: every sync of a payment with PortOne (complete or webhook) that was applied,
  labelled by the payment's status after it; alert on `status="MISMATCH"` (docs/PAYMENTS.md).
- Relayer: its figures are read from its health hash at scrape time (`RelayerCollector`), so
  every scrape sees the relayer as it is now, whichever API process answers.
- Market: whether ticks are expected now by the calendar (`MarketCollector`), to gate an alert
  on the relayer's last tick age.

Under Gunicorn each worker counts its own requests. prometheus-client's multiprocess mode makes
a scrape see them all: every worker writes its values to files in PROMETHEUS_MULTIPROC_DIR
(set by gunicorn.conf.py before the workers start), and the scrape merges the files. The metric
objects are module-level because that is prometheus-client's model: values belong to a process
(and its files), not to an app instance.

The middleware must never do I/O or label by anything unbounded (raw paths, unknown methods).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from fastapi.routing import iter_route_contexts
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.quotes.schemas import DaemonHealthOut
from api.quotes.service import relayer_health
from api.resources import Resources
from relayer.market_calendar import Session

logger = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE_LATEST", "PAYMENT_SYNCS", "MarketCollector", "MetricsMiddleware",
           "RelayerCollector", "render"]

# Route label of a request that matched no route (a 404): one series for all of them.
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds. The quote read targets p99 < 10 ms and orders p99 < 50 ms (docs/ARCHITECTURE.md,
# "Targets"), so the buckets are fine below 0.1 s. Part of the series' identity, hence not a
# setting.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "stocking_http_requests_total", "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "stocking_http_request_duration_seconds",
    "Time from receiving an HTTP request to the end of its response",
    ["method", "route", "status"], buckets=LATENCY_BUCKETS,
)

PAYMENT_SYNCS = Counter(
    "stocking_payment_syncs_total",
    "Payments checked with PortOne and applied (complete or webhook), by resulting status",
    ["status"],
)


class MetricsMiddleware:
    """Counts and times every HTTP request. Pure ASGI: BaseHTTPMiddleware would cost a task
    and a stream per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # If the app raises before answering, the server's error handler (outside this
        # middleware) answers 500.
        status = 500
        started = time.perf_counter()
        counted = False

        def count() -> None:
            nonlocal counted
            counted = True
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            requests, latency = _series(method, route_template(scope), status)
            requests.inc()
            latency.observe(time.perf_counter() - started)

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the last byte leaves: a client that has its answer and then
                # scrapes /metrics must find it counted (counting after the app returned
                # raced with that scrape).
                count()
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            if not counted:
                count()


# The series of each (method, route, status) seen: `.labels()` costs more than the update.
# Bounded like the labels themselves.
_SERIES: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def _series(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    key = (method, route, status)
    series = _SERIES.get(key)
    if series is None:
        labels = (method, route, str(status))
        series = _SERIES[key] = (REQUESTS.labels(*labels), LATENCY.labels(*labels))
    return series


def route_template(scope: Scope) -> str:
    """The path template of the route that answered, with every include_router prefix
    (`/api/v1/trading/realtime/stock/{code}`); UNMATCHED when no route matched.

    The router records its match in the scope (the same dict the middleware holds). Since
    FastAPI 0.137 included routers stay a tree: `scope["route"]` is then the route as declared
    in its own router, without the prefixes, and the full template is in the effective route
    context (what Sentry's integration reads too). Plain Starlette routes (`/docs`,
    `/openapi.json`) record only their endpoint.
    """
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        path = getattr(fastapi_scope.get("effective_route_context"), "path", None)
        if isinstance(path, str) and path:
            return path
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    endpoint = scope.get("endpoint")
    if endpoint is not None and "app" in scope:
        return _endpoint_path(scope["app"], endpoint)
    return UNMATCHED


# Endpoint -> path of the routes that record no route (a handful: the docs pages).
_ENDPOINT_PATHS: dict[Any, str] = {}


def _endpoint_path(app: Any, endpoint: Any) -> str:
    path = _ENDPOINT_PATHS.get(endpoint)
    if path is None:
        for context in iter_route_contexts(getattr(app, "routes", ())):
            if context.endpoint is not None and context.path:
                _ENDPOINT_PATHS.setdefault(context.endpoint, context.path)
        path = _ENDPOINT_PATHS.setdefault(endpoint, UNMATCHED)
    return path


class RelayerCollector(Collector):
    """The relayer's figures from one reading of its health hash (None: Redis unreachable)."""

    def __init__(self, health: DaemonHealthOut | None) -> None:
        self.health = health

    def collect(self) -> Iterable[Metric]:
        health = self.health
        yield GaugeMetricFamily(
            "stocking_relayer_up",
            "1 if the relayer refreshed its health hash within RELAYER_HEALTH_MAX_AGE_S "
            "(0 also when Redis is unreachable)",
            value=1 if health is not None and health.alive else 0,
        )
        if health is None:
            return
        counters = (
            ("stocking_relayer_ticks_total", "Ticks read from the upstream since the relayer "
                                             "started", health.ticks_total),
            ("stocking_relayer_reconnects_total", "Upstream reconnects since the relayer "
                                                  "started", health.reconnects),
            ("stocking_relayer_malformed_total", "Upstream messages skipped as malformed",
             health.malformed_total),
            ("stocking_relayer_dropped_total", "Ticks dropped while Redis was unreachable",
             health.dropped_total),
        )
        for name, documentation, value in counters:
            if value is not None:
                yield CounterMetricFamily(name, documentation, value=value)
        if health.subscriptions is not None:
            yield GaugeMetricFamily("stocking_relayer_subscriptions",
                                    "Topics subscribed on the upstream connection",
                                    value=health.subscriptions)
        if health.last_tick_age_s is not None:
            yield GaugeMetricFamily("stocking_relayer_last_tick_age_seconds",
                                    "Seconds since the relayer read its last tick",
                                    value=health.last_tick_age_s)


class MarketCollector(Collector):
    """Whether the market prints continuously now, by the calendar in force: an alert on
    `stocking_relayer_last_tick_age_seconds` should hold only while this is 1, since the
    market is silent at night, on holidays and while an auction collects orders."""

    def __init__(self, ticks_expected: bool) -> None:
        self.ticks_expected = ticks_expected

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "stocking_market_ticks_expected",
            "1 while the market calendar's session is continuous trading (ticks expected), "
            "0 while closed or in a call auction",
            value=1 if self.ticks_expected else 0)


class _ThisProcess(Collector):
    """The default registry (this process's metrics, plus its process/GC figures)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


async def scrape(resources: Resources) -> bytes:
    """The exposition text for `GET /metrics`, with the relayer's health read now."""
    relayer: DaemonHealthOut | None
    try:
        relayer = await relayer_health(resources)
    except RedisError as exc:
        # A scrape must not fail with Redis: the HTTP figures are still worth having.
        logger.warning("metrics: cannot read the relayer's health: %s", exc)
        relayer = None
    ticks_expected = resources.calendar.session_at(resources.clock()) is Session.CONTINUOUS
    return await run_in_threadpool(render, resources.settings.prometheus_multiproc_dir, relayer,
                                   ticks_expected)


def render(multiproc_dir: str | None, relayer: DaemonHealthOut | None,
           ticks_expected: bool = True) -> bytes:
    """The exposition text: every process's HTTP figures and the relayer's. Reads files in
    multiprocess mode, so call it off the event loop."""
    registry = CollectorRegistry()
    if multiproc_dir:
        MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(RelayerCollector(relayer))
    registry.register(MarketCollector(ticks_expected))
    return generate_latest(registry)
