"""HTTP routes of api.portfolio: the account summary and the positions at live prices."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth.deps import CurrentUser
from api.deps import ResourcesDep
from api.openapi import problems
from api.portfolio.schemas import AccountSummaryOut, PortfolioOut
from api.portfolio.service import valuation

router = APIRouter(tags=["account"])


@router.get("/account", responses=problems({404: "`account_not_found`"}))
async def account(principal: CurrentUser, resources: ResourcesDep) -> AccountSummaryOut:
    """The signed-in user's cash (total, held for orders, available), equity at live prices,
    and realized and unrealized P&L."""
    return AccountSummaryOut.of(await valuation(resources, principal.user_id))


@router.get("/portfolio", responses=problems({404: "`account_not_found`"}))
async def portfolio(principal: CurrentUser, resources: ResourcesDep) -> PortfolioOut:
    """Open positions valued at the latest quotes (stale or missing quotes flagged), with the
    account summary."""
    return PortfolioOut.of(await valuation(resources, principal.user_id))
