"""HTTP routes of api.ledger: deposits, withdrawals and the ledger (the account summary with
equity is api.portfolio's)."""

from __future__ import annotations

import functools
import re
from datetime import date
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Query
from pydantic import BeforeValidator
from sqlalchemy.orm import Session

from api import idempotency
from api.auth.deps import CurrentUser
from api.deps import DatabaseDep, ResourcesDep, SettingsDep
from api.idempotency import IdempotencyKeyHeader
from api.ledger import service
from api.ledger.schemas import (
    AmountRequest,
    CashMovementOut,
    CashOut,
    LedgerEntryOut,
    TransactionsPage,
)
from api.models import Account, LedgerEntry, LedgerType
from api.openapi import problems
from api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

router = APIRouter(tags=["account"])

_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_day(value: object) -> object:
    # Only what the document says (`format: date`): pydantic alone would also read a number
    # such as `0` as a Unix time (1970-01-01).
    if isinstance(value, str) and not _ISO_DAY.fullmatch(value):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


CalendarDay = Annotated[date, BeforeValidator(_iso_day)]


class Move(Protocol):
    def __call__(self, session: Session, user_id: int, amount: int, *,
                 max_krw: int) -> tuple[Account, LedgerEntry]: ...


def _movement(session: Session, account: Account, entry: LedgerEntry) -> CashMovementOut:
    session.flush()  # the entry's id and created_at
    return CashMovementOut(account=CashOut.of(account),
                           entry=LedgerEntryOut.model_validate(entry))


def _move_cash(session: Session, move: Move, path: str, user_id: int, amount: int,
               max_krw: int, key: str | None) -> dict[str, Any]:
    # The account lock serialises this user's requests, so the key check is reliable.
    service.lock_account(session, user_id)
    return idempotency.once(
        session, user_id, key, idempotency.fingerprint("POST", path, {"amount": amount}),
        lambda: _movement(session, *move(session, user_id, amount, max_krw=max_krw))
        .model_dump(mode="json"))




@router.post("/account/deposit", responses=problems({
    404: "`account_not_found`",
    422: "`validation_error` (not an integer), `invalid_amount`, `amount_over_limit`, "
         "`daily_deposit_limit_exceeded` (with `remaining_today_krw`), "
         "`idempotency_key_reused`",
}))
async def deposit(body: AmountRequest, principal: CurrentUser, resources: ResourcesDep,
                  key: IdempotencyKeyHeader = None) -> CashMovementOut:
    """Add free virtual cash (whole KRW, at most DEPOSIT_MAX_KRW per request and
    DEPOSIT_DAILY_MAX_KRW per day, Korea time)."""
    settings = resources.settings
    move = functools.partial(service.deposit, daily_max_krw=settings.deposit_daily_max_krw,
                             now=resources.clock())
    return CashMovementOut.model_validate(await resources.db.run_retrying(
        _move_cash, move, "/api/v1/account/deposit", principal.user_id,
        body.amount, settings.deposit_max_krw, key))


@router.post("/account/withdraw", responses=problems({
    404: "`account_not_found`",
    409: "`clawback_outstanding`: a refunded payment's cash is still owed",
    422: "`validation_error` (not an integer), `invalid_amount`, `amount_over_limit`, "
         "`insufficient_funds`, `idempotency_key_reused`",
}))
async def withdraw(body: AmountRequest, principal: CurrentUser, db: DatabaseDep,
                   settings: SettingsDep, key: IdempotencyKeyHeader = None) -> CashMovementOut:
    """Take virtual cash out (whole KRW, at most WITHDRAW_MAX_KRW per request, never more
    than the available cash)."""
    return CashMovementOut.model_validate(await db.run_retrying(
        _move_cash, service.withdraw, "/api/v1/account/withdraw", principal.user_id,
        body.amount, settings.withdraw_max_krw, key))


def _transactions(session: Session, user_id: int, type: LedgerType | None, start: date | None,
                  end: date | None, cursor: str | None, limit: int) -> TransactionsPage:
    page = service.transactions(session, user_id, type=type, start=start, end=end,
                                cursor=cursor, limit=limit)
    return TransactionsPage(items=[LedgerEntryOut.model_validate(e) for e in page.items],
                            next_cursor=page.next_cursor)


@router.get("/transactions", responses=problems({
    422: "`validation_error`, `invalid_cursor`, `invalid_date_range`",
}))
async def transactions(
    principal: CurrentUser,
    db: DatabaseDep,
    type: Annotated[LedgerType | None, Query(description="only rows of this type")] = None,
    start: Annotated[CalendarDay | None, Query(alias="from",
                                               description="first day, inclusive (KST)")] = None,
    end: Annotated[CalendarDay | None, Query(alias="to",
                                             description="last day, inclusive (KST)")] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> TransactionsPage:
    """The signed-in user's ledger, newest first, with cursor pagination."""
    return await db.read(_transactions, principal.user_id, type, start, end, cursor, limit)
