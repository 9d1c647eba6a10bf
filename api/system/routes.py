"""HTTP routes of api.system: liveness, readiness, Prometheus metrics.

- `/health`: the process answers. Touches nothing, so a Redis or database outage never makes an
  orchestrator restart healthy API processes. No token.
- `/ready`: this process can serve (Redis and SQL reachable). No token needed for ready / not
  ready; an admin's token also gets each check, the relayer's state included.
- `/metrics`: Prometheus text of every worker (see api.system.metrics), for whoever holds
  METRICS_TOKEN when it is set; without it, open in development and off in production unless
  METRICS_PUBLIC (docs/OPERATIONS.md, "What is exposed to whom").
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth.deps import OptionalUser
from api.deps import ResourcesDep, SettingsDep
from api.errors import NotFound, ServiceUnavailable, Unauthorized
from api.openapi import Responses, problems
from api.settings import ApiSettings, Environment
from api.system import metrics
from api.system.readiness import Readiness, ReadinessStatus, check_readiness

router = APIRouter(tags=["system"])

_READY_PROBLEMS: Responses = problems({
    401: "a token was given and is not valid (`invalid_token`, `token_expired`); no token at "
         "all is fine",
    503: "`not_ready`: Redis or the database is unreachable (for an admin, problem+json with "
         "the same `redis`, `database`, `relayer` and `fills` members as the 200 answer)",
})
_METRICS_PROBLEMS: Responses = problems({
    401: "METRICS_TOKEN is set and the request does not carry it (`not_authenticated`, "
         "`invalid_token`)",
    404: "`metrics_off`: production without METRICS_TOKEN or METRICS_PUBLIC",
})
# Appended to the operation's `security` list: the token is optional (OpenAPI's `{}`).
_TOKEN_OPTIONAL: dict[str, Any] = {"security": [{}]}
# Not the users' bearer scheme: the token is the operator's METRICS_TOKEN, not a JWT.
_metrics_bearer = HTTPBearer(scheme_name="MetricsToken", auto_error=False,
                             description="METRICS_TOKEN (when set)")


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=Readiness | ReadinessStatus, responses=_READY_PROBLEMS,
            openapi_extra=_TOKEN_OPTIONAL, summary="Readiness")
async def ready(resources: ResourcesDep, caller: OptionalUser) -> Readiness | ReadinessStatus:
    """200 when Redis and the database answer, else 503 `not_ready`. Without an admin token the
    answer is only `{"status": ...}`; an admin also gets each check (the relayer being down is
    reported in `relayer.alive` but does not make the API unready)."""
    readiness = await check_readiness(resources)
    details = caller is not None and caller.is_admin
    if not readiness.ready:
        if details:
            raise ServiceUnavailable(readiness.failures(), code="not_ready",
                                     **readiness.model_dump(exclude={"status"}))
        raise ServiceUnavailable("not ready", code="not_ready")
    return readiness if details else ReadinessStatus(status=readiness.status)


async def metrics_access(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_metrics_bearer)],
) -> None:
    """Who may scrape: the holder of METRICS_TOKEN when it is set (compared in constant time);
    otherwise anyone in development, and in production only if METRICS_PUBLIC says so."""
    token = _metrics_token(settings)
    if token is not None:
        if credentials is None:
            raise Unauthorized("/metrics needs `Authorization: Bearer <METRICS_TOKEN>`",
                               code="not_authenticated")
        if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise Unauthorized("not the metrics token", code="invalid_token")
    elif settings.stocking_env is Environment.PRODUCTION and not settings.metrics_public:
        raise NotFound("/metrics is off: set METRICS_TOKEN (or METRICS_PUBLIC=true when the "
                       "network in front keeps it private)", code="metrics_off")


def _metrics_token(settings: ApiSettings) -> str | None:
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    return token or None  # METRICS_TOKEN= (empty) is no token, not "an empty one matches"


@router.get("/metrics", response_class=PlainTextResponse, responses=_METRICS_PROBLEMS,
            dependencies=[Depends(metrics_access)], openapi_extra=_TOKEN_OPTIONAL,
            summary="Prometheus metrics")
async def prometheus_metrics(resources: ResourcesDep) -> Response:
    return Response(await metrics.scrape(resources), media_type=metrics.CONTENT_TYPE_LATEST)
