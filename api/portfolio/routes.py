"""HTTP routes of api.portfolio: the account summary, the positions at live prices, and the
buying power (api.portfolio.buying_power)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ResourcesDep
from api.openapi import problems
from api.portfolio import service
from api.portfolio.buying_power import buying_power_of
from api.portfolio.schemas import AccountSummaryOut, BuyingPowerOut, PortfolioOut
from api.portfolios.deps import AccountId

router = APIRouter(tags=["account"])


@router.get("/account", responses=problems({404: "`account_not_found`"}))
async def account(account_id: AccountId, resources: ResourcesDep) -> AccountSummaryOut:
    """The portfolio's cash (total, held for orders, available), equity at live prices,
    and realized and unrealized P&L."""
    return await service.account_summary(resources, account_id)


@router.get("/portfolio", responses=problems({404: "`account_not_found`"}))
async def portfolio(account_id: AccountId, resources: ResourcesDep) -> PortfolioOut:
    """Open positions valued at the latest quotes (stale or missing quotes flagged), with the
    account summary."""
    return await service.portfolio(resources, account_id)


@router.get("/account/buying-power", responses=problems({
    404: "`account_not_found`",
    422: "`validation_error`, `invalid_code`, `unknown_instrument`, `instrument_not_tradable`, "
         "`no_quote`, `stale_quote` (no price asked, in the continuous session: a market buy "
         "needs a fresh quote), `invalid_tick_size`, `price_out_of_band`",
}))
async def buying_power(
    account_id: AccountId,
    resources: ResourcesDep,
    code: Annotated[str, Query(max_length=16, description="the instrument (A005930 or 005930)")],
    price: Annotated[int | None, Query(gt=0, description="a limit price, KRW; none: at market "
                                                         "(as a market buy is reserved)")] = None,
) -> BuyingPowerOut:
    """주문가능 조회: how many shares one order may buy at `price` (or at market), commission
    included, and how many it may sell; the price checked as an order's would be."""
    return await buying_power_of(resources, account_id, code, price)
