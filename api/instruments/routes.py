"""HTTP routes of api.instruments (mounted under /api/v1): search and one instrument's details.
Authenticated like the quote routes (any signed-in user)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth.deps import CurrentUser
from api.deps import ResourcesDep
from api.instruments import service
from api.instruments.schemas import InstrumentDetailOut, InstrumentPage
from api.openapi import problems
from api.pagination import DEFAULT_PAGE_SIZE
from relayer.krx import Market, SecurityKind

router = APIRouter(tags=["instruments"])


@router.get(
    "/instruments",
    responses=problems({422: "`invalid_cursor`, `invalid_limit`"}),
    summary="Search instruments by code, name or Hangul initials",
)
async def search_instruments(
    resources: ResourcesDep,
    _user: CurrentUser,
    query: Annotated[str, Query(max_length=service.MAX_QUERY_LENGTH,
                                description="a code (`005930`, `A0059`), part of a Korean or "
                                            "English name, or initials (`ㅅㅅㅈㅈ`, `삼ㅅ`); "
                                            "empty lists everything")] = "",
    market: Market | None = None,
    kind: Annotated[SecurityKind | None, Query(alias="type")] = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> InstrumentPage:
    """Best matches first: the exact code, the exact name, names starting with the query,
    codes starting with it, names containing it, then initials (docs/TRADING.md,
    "Instruments"). Served from memory: cheap enough for every keystroke."""
    return await service.search_instruments(resources, query, market=market, kind=kind,
                                            cursor=cursor, limit=limit)


@router.get(
    "/instruments/{code}",
    responses=problems({404: "`unknown_instrument`", 422: "`invalid_code`"}),
    summary="Everything about one instrument",
)
async def get_instrument(
    code: str,
    resources: ResourcesDep,
    _user: CurrentUser,
    price: Annotated[int | None, Query(gt=0, description="the price to give the tick size "
                                                         "at (default: the last trade)")] = None,
) -> InstrumentDetailOut:
    """Today's base price, 상한가 and 하한가, the tick size, and whether the instrument is
    streamed live now. `code` is `A005930` or a bare `005930`."""
    return await service.instrument_detail(resources, code, price)
