"""`AccountId`: the account an account-scoped route acts on, chosen by the `X-Portfolio-Id`
header among the signed-in user's portfolios (docs/api/PORTFOLIOS.md).

Without the header it is the user's own id, the default portfolio's account, with no SQL: that
is every request of a client that knows nothing of portfolios, the hot path. With it, one
indexed read finds the user's live portfolio of that id: 404 `portfolio_not_found` otherwise,
another user's portfolio included (never 403: a portfolio id tells nothing of who owns it). A
value that is not an id (1 to 2^63-1) is 422 `validation_error`. async for the reason given in
api.deps.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from api.auth.deps import CurrentUser
from api.deps import resources_of
from api.ids import MAX_ROW_ID
from api.portfolios.service import account_of

PORTFOLIO_HEADER = "X-Portfolio-Id"
PORTFOLIO_NOT_FOUND = ("`portfolio_not_found`: the X-Portfolio-Id header names no portfolio "
                       "of yours")


async def account_of_request(
    request: Request,
    principal: CurrentUser,
    portfolio_id: Annotated[int | None, Header(
        alias=PORTFOLIO_HEADER, ge=1, le=MAX_ROW_ID,
        description="the portfolio to act on (an id from GET /api/v1/portfolios); none: "
                    "the default portfolio")] = None,
) -> int:
    if portfolio_id is None:
        return principal.user_id
    return await resources_of(request).db.read(account_of, principal.user_id, portfolio_id)


AccountId = Annotated[int, Depends(account_of_request)]
