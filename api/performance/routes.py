"""HTTP route of api.performance: the portfolio history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, model_validator

from api.deps import ResourcesDep
from api.openapi import problems
from api.performance import service
from api.performance.schemas import HistoryOut, IntradayHistoryOut
from api.performance.service import HistoryPeriod, Timeframe
from api.portfolios.deps import AccountId

router = APIRouter(tags=["account"])


class HistoryQuery(BaseModel):
    period: HistoryPeriod = Field(
        HistoryPeriod.MONTH, description="`1D`: today's intraday series; else how far back "
                                         "from today the daily points go")
    timeframe: Timeframe | None = Field(
        None, description="`1D`: one point per trading day (periods 1W to all); `5Min`, "
                          "`15Min`, `1H`: today's samples (period 1D). Default: `5Min` for "
                          "1D, `1D` otherwise")

    @model_validator(mode="after")
    def _timeframe_fits_the_period(self) -> HistoryQuery:
        intraday = self.period is HistoryPeriod.DAY
        if self.timeframe is None:
            self.timeframe = Timeframe.FIVE_MINUTES if intraday else Timeframe.DAY
        elif intraday and self.timeframe is Timeframe.DAY:
            raise ValueError("period=1D is today's intraday series: timeframe 5Min, 15Min "
                             "or 1H (or none)")
        elif not intraday and self.timeframe is not Timeframe.DAY:
            raise ValueError(f"timeframe={self.timeframe} is today's intraday series: only "
                             "with period=1D (samples are kept for a few days, and the "
                             "daily points are the closes)")
        return self


@router.get("/portfolio/history", responses=problems({
    404: "`account_not_found`",
    422: "`validation_error`: a period or timeframe not listed, or a pair that does not go "
         "together (an intraday timeframe needs period=1D, and period=1D one)",
}))
async def portfolio_history(
        account_id: AccountId, resources: ResourcesDep,
        query: Annotated[HistoryQuery, Query()]) -> HistoryOut | IntradayHistoryOut:
    """The account's equity at each trading day's close, with its daily P&L and time-weighted
    returns (deposits and payments are not gains), then today's live point; or, with
    period=1D, today's equity every 5, 15 or 60 minutes of the session against the previous
    close (docs/api/PERFORMANCE.md)."""
    assert query.timeframe is not None  # the validator chose one
    return await service.portfolio_history(resources, account_id, query.period,
                                           query.timeframe)
