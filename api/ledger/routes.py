"""HTTP routes of api.ledger: deposits, withdrawals and the ledger (the account summary with
equity is api.portfolio's). Each parses the request and calls one function of
api.ledger.service."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BeforeValidator

from api.deps import ResourcesDep
from api.idempotency import IdempotencyKeyHeader
from api.ledger import service
from api.ledger.schemas import AmountRequest, CashMovementOut, TransactionsPage
from api.models import LedgerType
from api.openapi import problems
from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from api.portfolios.deps import AccountId

router = APIRouter(tags=["account"])

JSON = "application/json"

_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_day(value: object) -> object:
    # Only what the document says (`format: date`): pydantic alone would also read a number
    # such as `0` as a Unix time (1970-01-01).
    if isinstance(value, str) and not _ISO_DAY.fullmatch(value):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


CalendarDay = Annotated[date, BeforeValidator(_iso_day)]


# Deposits and withdrawals answer the JSON the service built (and recorded for the
# Idempotency-Key) once; `response_model` documents it.
@router.post("/account/deposit", response_model=CashMovementOut, responses=problems({
    404: "`account_not_found`",
    422: "`validation_error` (not an integer), `invalid_amount`, `amount_over_limit`, "
         "`daily_deposit_limit_exceeded` (with `remaining_today_krw`), "
         "`idempotency_key_reused`",
}))
async def deposit(body: AmountRequest, account_id: AccountId, resources: ResourcesDep,
                  key: IdempotencyKeyHeader = None) -> Response:
    """Add free virtual cash (whole KRW, at most DEPOSIT_MAX_KRW per request and
    DEPOSIT_DAILY_MAX_KRW per day, Korea time)."""
    return Response(await service.deposit_cash(resources, account_id, body.amount, key),
                    media_type=JSON)


@router.post("/account/withdraw", response_model=CashMovementOut, responses=problems({
    404: "`account_not_found`",
    409: "`clawback_outstanding`: a refunded payment's cash is still owed",
    422: "`validation_error` (not an integer), `invalid_amount`, `amount_over_limit`, "
         "`insufficient_funds`, `idempotency_key_reused`",
}))
async def withdraw(body: AmountRequest, account_id: AccountId, resources: ResourcesDep,
                   key: IdempotencyKeyHeader = None) -> Response:
    """Take virtual cash out (whole KRW, at most WITHDRAW_MAX_KRW per request, never more
    than the available cash)."""
    return Response(await service.withdraw_cash(resources, account_id, body.amount, key),
                    media_type=JSON)


@router.get("/transactions", responses=problems({
    422: "`validation_error`, `invalid_cursor`, `invalid_date_range`",
}))
async def transactions(
    account_id: AccountId,
    resources: ResourcesDep,
    type: Annotated[LedgerType | None, Query(description="only rows of this type")] = None,
    start: Annotated[CalendarDay | None, Query(alias="from",
                                               description="first day, inclusive (KST)")] = None,
    end: Annotated[CalendarDay | None, Query(alias="to",
                                             description="last day, inclusive (KST)")] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> TransactionsPage:
    """The portfolio's ledger, newest first, with cursor pagination."""
    return await service.transactions_page(resources, account_id, type=type,
                                           start=start, end=end, cursor=cursor, limit=limit)
