"""Cash accounts and the append-only ledger: the requests of the deposit, withdraw and
transactions routes, and the SQL units of work, run with `Database.run_retrying`.

`post` is the only function that changes an account's cash, and it always writes exactly one
ledger row with the balance before and after, in the same transaction, on an account row the
caller has locked with `take_user_lock` (`SELECT ... FOR UPDATE`). Work that must lock several
accounts locks them in ascending user id order, so two transactions never wait on each other in
a cycle. The CHECK and UNIQUE constraints of the tables are the second guard. Nothing here
commits: `Database` does. Amounts are whole KRW (`int`), never floats.
"""

from __future__ import annotations

import logging
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import idempotency
from api.auth.users import user_exists, user_gone
from api.errors import ApiError, Conflict, NotFound, Unprocessable
from api.idempotency import KeyedRequest
from api.kst_days import kst_day_around, on_kst_days
from api.ledger.schemas import CashMovementOut, CashOut, LedgerEntryOut, TransactionsPage
from api.models import Account, LedgerEntry, LedgerType, User, utc_now
from api.pagination import (
    DEFAULT_PAGE_SIZE,
    Page,
    check_limit,
    decode_cursor,
    page_of,
)
from api.resources import Resources
from api.streams.events import record_cash

logger = logging.getLogger(__name__)

# Dates in the `transactions` filter are KST calendar days.
CURSOR_KIND = "le"
DEPOSIT_PATH = "/api/v1/account/deposit"
WITHDRAW_PATH = "/api/v1/account/withdraw"


# --- requests ------------------------------------------------------------------------------------


async def deposit_cash(resources: Resources, user_id: int, amount: int,
                       key: str | None) -> str:
    """The JSON answer to a deposit: the account's cash after it, and its ledger row."""
    settings = resources.settings
    keyed = KeyedRequest.of(user_id, key, "POST", DEPOSIT_PATH, {"amount": amount})
    return await resources.db.run_retrying(
        _deposit, keyed, amount, max_krw=settings.deposit_max_krw,
        daily_max_krw=settings.deposit_daily_max_krw, now=resources.clock())


async def withdraw_cash(resources: Resources, user_id: int, amount: int,
                        key: str | None) -> str:
    """The JSON answer to a withdrawal, shaped as a deposit's."""
    keyed = KeyedRequest.of(user_id, key, "POST", WITHDRAW_PATH, {"amount": amount})
    return await resources.db.run_retrying(_withdraw, keyed, amount,
                                           max_krw=resources.settings.withdraw_max_krw)


async def transactions_page(resources: Resources, user_id: int, *, type: LedgerType | None,
                            start: date | None, end: date | None, cursor: str | None,
                            limit: int) -> TransactionsPage:
    return await resources.db.read(_transactions_page, user_id, type, start, end, cursor, limit)


def _movement(session: Session, account: Account, entry: LedgerEntry) -> CashMovementOut:
    session.flush()  # the entry's id and created_at
    return CashMovementOut(account=CashOut.of(account),
                           entry=LedgerEntryOut.model_validate(entry))


def _deposit(session: Session, keyed: KeyedRequest, amount: int, *, max_krw: int,
             daily_max_krw: int, now: datetime) -> str:
    account = take_user_lock(session, keyed.user_id)
    return idempotency.answer_once(session, keyed, lambda: _movement(
        session, account, deposit_into(session, account, amount, max_krw=max_krw,
                                       daily_max_krw=daily_max_krw, now=now)))


def _withdraw(session: Session, keyed: KeyedRequest, amount: int, *, max_krw: int) -> str:
    account = take_user_lock(session, keyed.user_id)
    return idempotency.answer_once(session, keyed, lambda: _movement(
        session, account, withdraw_from(session, account, amount, max_krw=max_krw)))


def _transactions_page(session: Session, user_id: int, type: LedgerType | None,
                       start: date | None, end: date | None, cursor: str | None,
                       limit: int) -> TransactionsPage:
    page = transactions(session, user_id, type=type, start=start, end=end, cursor=cursor,
                        limit=limit)
    return TransactionsPage(items=[LedgerEntryOut.model_validate(e) for e in page.items],
                            next_cursor=page.next_cursor)


# --- accounts ------------------------------------------------------------------------------------


def open_account(session: Session, user_id: int, initial_cash: int) -> Account:
    """A new account for the user, credited `initial_cash` with one DEPOSIT row (none if 0)."""
    account = Account(user_id=user_id, cash=0, held_cash=0)
    session.add(account)
    session.flush()
    if initial_cash > 0:
        # The reference tells the opening credit from free deposits (which the daily cap
        # counts), and UNIQUE (type, reference) makes it once per user.
        post(session, account, LedgerType.DEPOSIT, initial_cash, opening_reference(user_id),
             reference_is_new=True)
    return account


def opening_reference(user_id: int) -> str:
    return f"opening:{user_id}"


def ensure_account(session: Session, user_id: int, initial_cash: int) -> bool:
    """Open the user's account unless it exists; True if it was opened now."""
    if session.get(Account, user_id) is not None:
        return False
    open_account(session, user_id, initial_cash)
    return True


def users_without_account(session: Session, limit: int = 1000) -> list[int]:
    """Users registered before accounts existed (migration 0002 backfills nothing)."""
    return list(session.scalars(select(User.id).outerjoin(Account, Account.user_id == User.id)
                                .where(Account.user_id.is_(None)).order_by(User.id)
                                .limit(limit)))


async def open_missing_accounts(resources: Resources) -> None:
    """At start: give every user without a cash account one, with the initial cash. Workers
    starting together race on the same users; the primary key decides, and the loser skips."""
    opened = 0
    while users := await resources.db.read(users_without_account):
        for user_id in users:
            try:
                if await resources.db.run(ensure_account, user_id,
                                          resources.settings.initial_cash):
                    opened += 1
            except IntegrityError:
                pass  # another worker opened it first
        if len(users) < 1000:
            break
    if opened:
        logger.info("opened cash accounts for %d user(s) registered before accounts existed",
                    opened)


def take_user_lock(session: Session, user_id: int) -> Account:
    """The per-user write lock: every write of one user's money, orders or watchlists takes it
    first, so that user's writes run one at a time. It is the user's account row, locked
    (`SELECT ... FOR UPDATE`) until the transaction ends, and returned. 404 if there is no
    account, 401 `user_not_found` if the user itself is gone (a token outlives its user)."""
    account = session.scalar(select(Account).where(Account.user_id == user_id)
                             .with_for_update().execution_options(populate_existing=True))
    if account is None:
        raise _no_account(session, user_id)
    return account


def get_account(session: Session, user_id: int) -> Account:
    """The user's account, read without a lock (for display); errors as `take_user_lock`."""
    account = session.get(Account, user_id)
    if account is None:
        raise _no_account(session, user_id)
    return account


def _no_account(session: Session, user_id: int) -> ApiError:
    # Only on the rare miss: one more read tells a deleted user from one without an account.
    if not user_exists(session, user_id):
        return user_gone()
    return NotFound("this user has no cash account", code="account_not_found")


# --- the one way cash changes --------------------------------------------------------------------


def post(session: Session, account: Account, type: LedgerType, amount: int,
         reference: str | None = None, *, reference_is_new: bool = False,
         created_at: datetime | None = None) -> LedgerEntry:
    """Add `amount` (credit > 0, debit < 0) to a locked account's cash and record it as one
    ledger row (written at the next flush). 422 `insufficient_funds` if the cash would fall
    below the held cash (or zero); 409 `duplicate_ledger_reference` if a row of this type
    already carries this reference. `reference_is_new`: the reference names something created
    in this very transaction (a fill), so the lookup is skipped; UNIQUE still guards it.
    `created_at`: the row's time when it is not now (a deposit counts in the day its cap was
    checked for). A row that is not a fill's is also the user's `cash` event
    (api.streams.events), recorded here with the row as the ledger lists it."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
        raise ValueError(f"a ledger amount is a non-zero int of KRW, not {amount!r}")
    before = account.cash
    after = before + amount
    if after < account.held_cash:
        raise Unprocessable(
            f"not enough available cash: {account.available_cash} KRW available, "
            f"{-amount} KRW needed", code="insufficient_funds",
            available_cash=account.available_cash)
    if reference is not None and not reference_is_new and session.scalar(
            select(LedgerEntry.id).where(LedgerEntry.type == type.value,
                                         LedgerEntry.reference == reference)) is not None:
        # Under the account lock this check is reliable for one account; the UNIQUE
        # constraint is the guard across accounts.
        raise Conflict(f"a {type.value} with reference {reference!r} is already recorded",
                       code="duplicate_ledger_reference")
    entry = LedgerEntry(user_id=account.user_id, type=type.value, amount=amount,
                        balance_before=before, balance_after=after, reference=reference,
                        created_at=utc_now() if created_at is None else created_at)
    session.add(entry)
    account.cash = after
    if type is LedgerType.FEE:
        account.fees_paid -= amount
    elif type is LedgerType.TAX:
        account.taxes_paid -= amount
    record_cash(session, entry)
    return entry


# --- deposits and withdrawals --------------------------------------------------------------------


def check_amount(amount: int, max_krw: int, what: str) -> None:
    """A positive whole number of KRW, at most `max_krw`; 422 with a stable code otherwise."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise Unprocessable(f"a {what} is a positive whole number of KRW",
                            code="invalid_amount")
    if amount > max_krw:
        raise Unprocessable(f"a {what} is at most {max_krw} KRW per request",
                            code="amount_over_limit", max_amount=max_krw)


def deposit_into(session: Session, account: Account, amount: int, *, max_krw: int,
                 daily_max_krw: int, now: datetime) -> LedgerEntry:
    """Credit free virtual cash to a locked account (which first pays any clawback owed): at
    most `max_krw` per request, and `daily_max_krw` per KST day (`now`'s)."""
    check_amount(amount, max_krw, "deposit")
    check_daily_deposits(session, account.user_id, amount, daily_max_krw, now)
    # The day it counts in is the day the cap was checked for.
    entry = post(session, account, LedgerType.DEPOSIT, amount, created_at=now)
    collect_clawback(session, account)
    return entry


def deposit(session: Session, user_id: int, amount: int, *, max_krw: int,
            daily_max_krw: int, now: datetime) -> tuple[Account, LedgerEntry]:
    """`deposit_into` the user's account, locked here."""
    account = take_user_lock(session, user_id)
    return account, deposit_into(session, account, amount, max_krw=max_krw,
                                 daily_max_krw=daily_max_krw, now=now)


def free_deposits(session: Session, user_id: int, start: datetime, end: datetime) -> int:
    """The sum of the user's free deposits in [start, end): DEPOSIT rows without a reference,
    so neither the opening credit nor a PAYMENT (real money) counts."""
    return int(session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.user_id == user_id, LedgerEntry.type == LedgerType.DEPOSIT.value,
            LedgerEntry.reference.is_(None), LedgerEntry.created_at >= start,
            LedgerEntry.created_at < end)) or 0)


def check_daily_deposits(session: Session, user_id: int, amount: int, daily_max_krw: int,
                         now: datetime) -> None:
    """422 `daily_deposit_limit_exceeded` (with what is left today and when the day ends)
    when today's free deposits plus `amount` would pass `daily_max_krw`. Reliable only under
    the account lock: two deposits of one user are counted one after the other."""
    start, end = kst_day_around(now)
    remaining = max(0, daily_max_krw - free_deposits(session, user_id, start, end))
    if amount > remaining:
        raise Unprocessable(
            f"free deposits are limited to {daily_max_krw} KRW per day (Korea time); "
            f"{remaining} KRW left today. Virtual-cash packs are not limited "
            "(GET /api/v1/payments/products).", code="daily_deposit_limit_exceeded",
            daily_max_krw=daily_max_krw, remaining_today_krw=remaining,
            resets_at=end.isoformat().replace("+00:00", "Z"))


def withdraw_from(session: Session, account: Account, amount: int, *,
                  max_krw: int) -> LedgerEntry:
    """Debit virtual cash from a locked account, never below the held cash, and never while a
    clawback is still owed (409 `clawback_outstanding`)."""
    check_amount(amount, max_krw, "withdrawal")
    collect_clawback(session, account)
    if account.clawback_due > 0:
        raise Conflict(f"withdrawals are blocked while {account.clawback_due} KRW taken back "
                       "for a refunded payment is still owed", code="clawback_outstanding",
                       clawback_due=account.clawback_due)
    return post(session, account, LedgerType.WITHDRAW, -amount)


def withdraw(session: Session, user_id: int, amount: int, *,
             max_krw: int) -> tuple[Account, LedgerEntry]:
    """`withdraw_from` the user's account, locked here."""
    account = take_user_lock(session, user_id)
    return account, withdraw_from(session, account, amount, max_krw=max_krw)


# --- clawbacks (docs/PAYMENTS.md, "Refunds") -----------------------------------------------------


def claw_back(session: Session, account: Account, amount: int, reference: str) -> int:
    """Take `amount` of virtual cash back from a locked account for a refunded payment: what
    is available now as one REFUND row (`reference`), the rest recorded as owed. Returns the
    part owed."""
    if amount <= 0:
        return 0
    taken = min(amount, account.available_cash)
    if taken > 0:
        post(session, account, LedgerType.REFUND, -taken, reference)
    owed = amount - taken
    account.clawback_due += owed
    return owed


def collect_clawback(session: Session, account: Account) -> LedgerEntry | None:
    """Pay what the locked account owes from clawbacks out of its available cash, as far as it
    goes, as one REFUND row without a reference. Called after every credit to the account."""
    taken = min(account.clawback_due, account.available_cash)
    if taken <= 0:
        return None
    account.clawback_due -= taken
    return post(session, account, LedgerType.REFUND, -taken)


# --- reading the ledger --------------------------------------------------------------------------


def transactions(session: Session, user_id: int, *, type: LedgerType | None = None,
                 start: date | None = None, end: date | None = None,
                 cursor: str | None = None,
                 limit: int = DEFAULT_PAGE_SIZE) -> Page[LedgerEntry]:
    """The user's ledger rows, newest first; `start` and `end` are inclusive KST days. The
    cursor is opaque to clients: it names the last row of the previous page."""
    check_limit(limit)
    if start is not None and end is not None and start > end:
        raise Unprocessable("`from` is after `to`", code="invalid_date_range")
    query = select(LedgerEntry).where(LedgerEntry.user_id == user_id)
    if type is not None:
        query = query.where(LedgerEntry.type == type.value)
    query = query.where(*on_kst_days(LedgerEntry.created_at, start, end))
    if cursor is not None:
        query = query.where(LedgerEntry.id < decode_cursor(CURSOR_KIND, cursor))
    rows = list(session.scalars(query.order_by(LedgerEntry.id.desc()).limit(limit + 1)))
    return page_of(CURSOR_KIND, rows, limit, lambda entry: entry.id)


def ledger_total(session: Session, user_id: int) -> int:
    """The sum of the user's ledger amounts: always equal to the account's cash."""
    return int(session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                              .where(LedgerEntry.user_id == user_id)) or 0)
