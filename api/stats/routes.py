"""HTTP route of api.stats: a portfolio's trading statistics over a period."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ResourcesDep
from api.openapi import problems
from api.portfolios.deps import AccountId
from api.stats import service
from api.stats.periods import Period
from api.stats.schemas import StatsOut

router = APIRouter(tags=["account"])


class StatsQuery(BaseModel):
    # A parameter it does not know (a misspelt `period`) is refused, not silently ignored
    # into the default period.
    model_config = ConfigDict(extra="forbid")

    period: Period = Field(Period.ALL, description="the last 7, 30, 90 or 365 KST calendar "
                                                   "days up to today, or every day since the "
                                                   "account was opened")


@router.get("/stats", responses=problems({
    404: "`account_not_found`",
    422: "`validation_error`: a period other than 1W, 1M, 3M, 1Y or all, or a parameter "
         "other than `period`",
}))
async def stats(account_id: AccountId, resources: ResourcesDep,
                query: Annotated[StatsQuery, Query()]) -> StatsOut:
    """Realized P&L (in total, by day, by instrument), trades (win rate, average win and loss,
    profit factor, best and worst), turnover, fees and taxes, and holding periods; each figure
    is defined in docs/api/STATS.md."""
    return await service.stats(resources, account_id, query.period)
