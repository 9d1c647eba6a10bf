"""HTTP routes of api.executions: the fills history. Parses the query and calls one function
of api.executions.service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ResourcesDep
from api.executions import service
from api.executions.schemas import FillsPage
from api.ledger.routes import CalendarDay
from api.models import Side
from api.openapi import problems
from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from api.portfolios.deps import AccountId

router = APIRouter(tags=["orders"])


@router.get("/fills", responses=problems({
    422: "`validation_error`, `invalid_code`, `invalid_cursor`, `invalid_date_range`",
}))
async def list_fills(
    account_id: AccountId,
    resources: ResourcesDep,
    code: Annotated[str | None, Query(max_length=16, description="only fills of this "
                                      "instrument (A005930 or 005930)")] = None,
    side: Annotated[Side | None, Query(description="only buys or only sells")] = None,
    start: Annotated[CalendarDay | None, Query(
        alias="from", description="first day, inclusive (KST calendar day of the fill)")] = None,
    end: Annotated[CalendarDay | None, Query(
        alias="to", description="last day, inclusive (KST calendar day of the fill)")] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> FillsPage:
    """체결 내역: every fill of the portfolio's orders, newest first, with cursor
    pagination; each with its order, instrument and what priced it."""
    return await service.fills_page(resources, account_id, code=code, side=side,
                                    start=start, end=end, cursor=cursor, limit=limit)
