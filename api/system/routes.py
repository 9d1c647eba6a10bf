"""HTTP routes of api.system: liveness, readiness, Prometheus metrics. None needs a token.

- `/health`: the process answers. Touches nothing, so a Redis or database outage never makes an
  orchestrator restart healthy API processes.
- `/ready`: this process can serve (Redis and SQL reachable); the relayer's state is reported.
- `/metrics`: Prometheus text of every worker (see api.system.metrics).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from api.deps import ResourcesDep
from api.errors import ServiceUnavailable
from api.quotes.schemas import DaemonHealthOut
from api.quotes.service import relayer_health
from api.system import metrics
from api.system.readiness import Readiness, check_readiness

logger = logging.getLogger(__name__)

router = APIRouter(tags=["system"])

_NOT_READY: dict[int | str, dict[str, Any]] = {503: {
    "description": "not_ready: Redis or the database is unreachable (problem+json with the "
                   "same `redis`, `database` and `relayer` members)",
    "content": {"application/problem+json": {}},
}}


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=Readiness, responses=_NOT_READY, summary="Readiness")
async def ready(resources: ResourcesDep) -> Readiness:
    """200 when Redis and the database answer; the relayer being down is reported
    (`relayer.alive`) but does not make the API unready."""
    readiness = await check_readiness(resources)
    if not readiness.ready:
        raise ServiceUnavailable(readiness.failures(), code="not_ready",
                                 **readiness.model_dump(exclude={"status"}))
    return readiness


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def prometheus_metrics(resources: ResourcesDep) -> Response:
    relayer: DaemonHealthOut | None
    try:
        relayer = await relayer_health(resources)
    except RedisError as exc:
        # A scrape must not fail with Redis: the HTTP figures are still worth having.
        logger.warning("metrics: cannot read the relayer's health: %s", exc)
        relayer = None
    body = await run_in_threadpool(metrics.render,
                                   resources.settings.prometheus_multiproc_dir, relayer)
    return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)
