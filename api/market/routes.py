"""HTTP routes of the market clock and calendar (mounted under /api/v1/market). Public: no
token, since when the market trades is no one's secret and a login screen may show it.

They read only the process's calendar, never Redis or SQL, so they take the resources from the
request rather than through `ResourcesDep` (whose use documents a 503 they cannot answer).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import resources_of
from api.market.clock import MAX_CALENDAR_DAYS, market_calendar_days, market_clock
from api.market.schemas import CalendarOut, ClockOut
from api.openapi import problems

router = APIRouter(tags=["market"])

# The clock is "now": a copy kept by a browser or a proxy would show a past time and, across
# an open or a close, the wrong session. It costs microseconds to answer; clients that tick
# a clock of their own count from `next_open`/`next_close`.
CLOCK_CACHE = "no-store"
# Trading days change only when an operator edits the special sessions (and restarts).
CALENDAR_CACHE = "public, max-age=86400"


@router.get("/market/clock", summary="Whether the market is open, and when it next opens "
                                     "and closes")
async def clock(request: Request, response: Response) -> ClockOut:
    """The session now (`CLOSED`, `OPENING_AUCTION`, `CONTINUOUS`, `CLOSING_AUCTION`) on the
    calendar in force (`krx`, or `always_open` in development), and the trading day an order
    placed now belongs to."""
    response.headers["Cache-Control"] = CLOCK_CACHE
    return market_clock(resources_of(request))


@router.get("/market/calendar", summary="The trading days of a range", responses=problems({
    422: "`validation_error` (a date that is not YYYY-MM-DD), `invalid_date_range` (end "
         f"before start), `date_range_too_long` (over {MAX_CALENDAR_DAYS} days), "
         "`date_out_of_calendar` (before 2000 or after 2049)",
}))
async def calendar(
    request: Request, response: Response,
    start: Annotated[date, Query(description="first date, YYYY-MM-DD (KST), included")],
    end: Annotated[date, Query(description="last date, YYYY-MM-DD (KST), included; at most "
                                           f"{MAX_CALENDAR_DAYS} days after start")],
) -> CalendarOut:
    """The days the market trades from `start` to `end`, with their open and close (late
    opens such as the first trading day of the year and the CSAT day included); closed days
    are absent."""
    days = market_calendar_days(resources_of(request), start, end)
    response.headers["Cache-Control"] = CALENDAR_CACHE
    return days
