"""HTTP route of api.performance: the portfolio history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ResourcesDep
from api.openapi import problems
from api.performance import service
from api.performance.schemas import HistoryOut
from api.performance.service import Timeframe
from api.portfolios.deps import AccountId
from api.stats.periods import Period

router = APIRouter(tags=["account"])


@router.get("/portfolio/history", responses=problems({404: "`account_not_found`"}))
async def portfolio_history(
    account_id: AccountId, resources: ResourcesDep,
    period: Annotated[Period, Query(description="how far back from today")] = Period.MONTH,
    timeframe: Annotated[Timeframe, Query(description="one point per trading day")] =
        Timeframe.DAY,
) -> HistoryOut:
    """The account's equity at each trading day's close, with its daily P&L and time-weighted
    returns (deposits and payments are not gains), then today's live point
    (docs/api/PERFORMANCE.md)."""
    return await service.history(resources, account_id, period, timeframe)
