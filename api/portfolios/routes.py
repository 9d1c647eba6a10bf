"""HTTP routes of api.portfolios: the signed-in user's portfolios (list, create, read, rename,
delete, reset). Each calls one function of api.portfolios.service. Which portfolio the other
account-scoped routes act on is the `X-Portfolio-Id` header's business (api.portfolios.deps)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.auth.deps import CurrentUser
from api.deps import ResourcesDep
from api.ids import RowId
from api.openapi import problems
from api.portfolios import reset, service
from api.portfolios.schemas import (
    PortfolioCreate,
    PortfolioDetailOut,
    PortfolioOut,
    PortfolioRename,
    PortfolioResetOut,
    PortfolioResetsOut,
    PortfoliosOut,
)

router = APIRouter(tags=["portfolios"])

PortfolioId = RowId

_NOT_FOUND = "`portfolio_not_found` (no such id, deleted, or someone else's)"
_NAME = "`validation_error` (name empty or over 64 characters once trimmed)"


@router.get("/portfolios")
async def list_portfolios(principal: CurrentUser, resources: ResourcesDep) -> PortfoliosOut:
    """The signed-in user's portfolios, the default one first."""
    return await service.portfolios(resources, principal.user_id)


@router.post("/portfolios", status_code=status.HTTP_201_CREATED, responses=problems({
    404: "`account_not_found`",
    409: "`portfolio_name_taken` (letter case ignored), `portfolio_limit` "
         "(MAX_PORTFOLIOS_PER_USER, the default portfolio counted)",
    422: _NAME,
}))
async def create_portfolio(body: PortfolioCreate, principal: CurrentUser,
                           resources: ResourcesDep) -> PortfolioOut:
    """A new portfolio with an account of its own, credited the initial cash a registration
    gets; act on it with the `X-Portfolio-Id` header."""
    return await service.create(resources, principal.user_id, body.name)


@router.get("/portfolios/{portfolio_id}", responses=problems({
    404: _NOT_FOUND + ", `account_not_found`",
}))
async def get_portfolio(portfolio_id: PortfolioId, principal: CurrentUser,
                        resources: ResourcesDep) -> PortfolioDetailOut:
    """One portfolio with its account's summary at live prices (as GET /account)."""
    return await service.show(resources, principal.user_id, portfolio_id)


@router.patch("/portfolios/{portfolio_id}", responses=problems({
    404: _NOT_FOUND + ", `account_not_found`",
    409: "`portfolio_name_taken` (letter case ignored)",
    422: _NAME,
}))
async def rename_portfolio(portfolio_id: PortfolioId, body: PortfolioRename,
                           principal: CurrentUser, resources: ResourcesDep) -> PortfolioOut:
    """Rename a portfolio (the default one too)."""
    return await service.rename(resources, principal.user_id, portfolio_id, body.name)


@router.delete("/portfolios/{portfolio_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response, responses=problems({
                   404: _NOT_FOUND,
                   409: "`default_portfolio` (it cannot be deleted), `portfolio_not_flat` "
                        "(open orders or shares held)",
               }))
async def delete_portfolio(portfolio_id: PortfolioId, principal: CurrentUser,
                           resources: ResourcesDep) -> Response:
    """Delete a portfolio without open orders or shares. Its account's history stays in the
    database; the portfolio leaves the list and its id answers 404 from then on."""
    await service.delete(resources, principal.user_id, portfolio_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/portfolios/{portfolio_id}/reset", responses=problems({
    404: _NOT_FOUND + ", `account_not_found`",
}))
async def reset_portfolio(portfolio_id: PortfolioId, principal: CurrentUser,
                          resources: ResourcesDep) -> PortfolioResetOut:
    """Start a portfolio over at the initial cash: its live orders are cancelled, its
    positions sold at their last price at no cost, its cash set to INITIAL_CASH. Its history
    stays readable, marked by the reset (docs/api/PORTFOLIOS.md, "Reset")."""
    return await reset.reset(resources, principal.user_id, portfolio_id)


@router.get("/portfolios/{portfolio_id}/resets", responses=problems({404: _NOT_FOUND}))
async def list_resets(portfolio_id: PortfolioId, principal: CurrentUser,
                      resources: ResourcesDep) -> PortfolioResetsOut:
    """A portfolio's resets, newest first, with what it held just before each."""
    return await reset.resets(resources, principal.user_id, portfolio_id)
