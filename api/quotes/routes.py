"""HTTP routes of api.quotes (mounted under /api/v1/trading/realtime).

The quote routes answer raw JSON bytes built by the service (no response-model validation on the
hot path); `responses=` still documents their shape in /docs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.auth.deps import CurrentUser
from api.deps import ResourcesDep, resources_of
from api.openapi import problems
from api.quotes import service
from api.quotes.schemas import DaemonHealthOut, QuoteOut, QuotesOut
from api.quotes.service import MAX_CODES_PER_REQUEST

router = APIRouter(tags=["quotes"])

JSON = "application/json"

_INVALID_CODE = "`invalid_code`: not an instrument code"


@router.get(
    "/stock/{code}",
    response_model=None,
    # 503 stated here: the route takes its resources from the request, not from ResourcesDep
    # (which api.openapi reads as "uses a store").
    responses={200: {"model": QuoteOut},
               **problems({404: "`quote_not_found`", 422: _INVALID_CODE,
                           503: "`redis_unavailable`: Redis is unreachable or too slow; retry "
                                "after `Retry-After` seconds"})},
    summary="Latest quote of one instrument",
)
async def get_quote(code: str, request: Request, _user: CurrentUser) -> Response:
    """`code` is `A005930` or a bare `005930`. `stale` is true when the quote is older than
    QUOTE_MAX_AGE_S (market closed, instrument halted, relayer down)."""
    # The resources from the request rather than a dependency: each dependency FastAPI resolves
    # costs ~20 us, a tenth of this route's own time (docs/BENCHMARKS.md, "API").
    return Response(await service.quote_json(resources_of(request), code), media_type=JSON)


@router.get(
    "/stocks/multiple",
    response_model=None,
    responses={200: {"model": QuotesOut},
               **problems({422: f"{_INVALID_CODE}; `too_many_codes` "
                                f"(over {MAX_CODES_PER_REQUEST})"})},
    summary="Latest quotes of several instruments",
)
async def get_quotes(
    stock_codes: Annotated[list[str], Query(description="repeat the parameter, or separate "
                                                        "codes with commas; at most "
                                                        f"{MAX_CODES_PER_REQUEST}")],
    resources: ResourcesDep,
    _user: CurrentUser,
) -> Response:
    return Response(await service.quotes_json(resources, stock_codes), media_type=JSON)


@router.get(
    "/stocks/all",
    response_model=None,
    responses={200: {"model": QuotesOut}},
    summary="Latest quotes of every instrument subscribed upstream now",
)
async def get_active_quotes(resources: ResourcesDep, _user: CurrentUser) -> Response:
    return Response(await service.active_quotes_json(resources), media_type=JSON)


@router.get("/daemon/health", summary="The relayer's health")
async def get_relayer_health(resources: ResourcesDep, user: CurrentUser) -> DaemonHealthOut:
    """200 whatever the relayer's state (clients poll it): `alive` is false when the relayer
    is down or silent; only Redis itself being unreachable is a 503. `upstream`, `instance`,
    `pid` and `host` are for admins (null for other users)."""
    health = await service.relayer_health(resources)
    return health if user.is_admin else health.for_users()
