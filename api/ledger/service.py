"""Cash accounts and the append-only ledger: SQL units of work, run with `Database.run_retrying`.

`post` is the only function that changes an account's cash, and it always writes exactly one
ledger row with the balance before and after, in the same transaction, on an account row the
caller has locked with `lock_account` (`SELECT ... FOR UPDATE`). Several accounts are locked in
ascending user id order, so two transactions never wait on each other in a cycle. The CHECK and
UNIQUE constraints of the tables are the second guard. Nothing here commits: `Database` does.
Amounts are whole KRW (`int`), never floats.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound, Unprocessable
from api.models import Account, LedgerEntry, LedgerType

# Korea has no daylight saving time: dates in the `transactions` filter are KST calendar days.
KST = timezone(timedelta(hours=9), "KST")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


# --- accounts ------------------------------------------------------------------------------------


def open_account(session: Session, user_id: int, initial_cash: int) -> Account:
    """A new account for the user, credited `initial_cash` with one DEPOSIT row (none if 0)."""
    account = Account(user_id=user_id, cash=0, held_cash=0)
    session.add(account)
    session.flush()
    if initial_cash > 0:
        post(session, account, LedgerType.DEPOSIT, initial_cash)
    return account


def ensure_account(session: Session, user_id: int, initial_cash: int) -> bool:
    """Open the user's account unless it exists; True if it was opened now."""
    if session.get(Account, user_id) is not None:
        return False
    open_account(session, user_id, initial_cash)
    return True


def lock_account(session: Session, user_id: int) -> Account:
    """The user's account row, locked until the transaction ends; 404 if there is none."""
    account = session.scalar(select(Account).where(Account.user_id == user_id)
                             .with_for_update().execution_options(populate_existing=True))
    if account is None:
        raise NotFound("this user has no cash account", code="account_not_found")
    return account


def lock_accounts(session: Session, user_ids: Iterable[int]) -> dict[int, Account]:
    """Several accounts, locked one by one in ascending user id order (the fixed lock order)."""
    return {user_id: lock_account(session, user_id) for user_id in sorted(set(user_ids))}


def get_account(session: Session, user_id: int) -> Account:
    """The user's account, read without a lock (for display)."""
    account = session.get(Account, user_id)
    if account is None:
        raise NotFound("this user has no cash account", code="account_not_found")
    return account


# --- the one way cash changes --------------------------------------------------------------------


def post(session: Session, account: Account, type: LedgerType, amount: int,
         reference: str | None = None) -> LedgerEntry:
    """Add `amount` (credit > 0, debit < 0) to a locked account's cash and record it as one
    ledger row. 422 `insufficient_funds` if the cash would fall below the held cash (or zero);
    409 `duplicate_ledger_reference` if a row of this type already carries this reference."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
        raise ValueError(f"a ledger amount is a non-zero int of KRW, not {amount!r}")
    before = account.cash
    after = before + amount
    if after < account.held_cash:
        raise Unprocessable(
            f"not enough available cash: {account.available_cash} KRW available, "
            f"{-amount} KRW needed", code="insufficient_funds",
            available_cash=account.available_cash)
    if reference is not None and session.scalar(
            select(LedgerEntry.id).where(LedgerEntry.type == type.value,
                                         LedgerEntry.reference == reference)) is not None:
        # Under the account lock this check is reliable for one account; the UNIQUE
        # constraint is the guard across accounts.
        raise Conflict(f"a {type.value} with reference {reference!r} is already recorded",
                       code="duplicate_ledger_reference")
    entry = LedgerEntry(user_id=account.user_id, type=type.value, amount=amount,
                        balance_before=before, balance_after=after, reference=reference)
    session.add(entry)
    account.cash = after
    session.flush()
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


def deposit(session: Session, user_id: int, amount: int, *,
            max_krw: int) -> tuple[Account, LedgerEntry]:
    """Credit virtual cash to the user's account."""
    check_amount(amount, max_krw, "deposit")
    account = lock_account(session, user_id)
    return account, post(session, account, LedgerType.DEPOSIT, amount)


def withdraw(session: Session, user_id: int, amount: int, *,
             max_krw: int) -> tuple[Account, LedgerEntry]:
    """Debit virtual cash from the user's account, never below the held cash."""
    check_amount(amount, max_krw, "withdrawal")
    account = lock_account(session, user_id)
    return account, post(session, account, LedgerType.WITHDRAW, -amount)


# --- reading the ledger --------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    items: list[LedgerEntry]
    next_cursor: str | None


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"le:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The entry id a cursor continues below; 422 `invalid_cursor` for anything we did not
    hand out."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "le" or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Unprocessable("this cursor was not issued by this endpoint",
                            code="invalid_cursor") from None


def _kst_day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=KST)


def transactions(session: Session, user_id: int, *, type: LedgerType | None = None,
                 start: date | None = None, end: date | None = None,
                 cursor: str | None = None, limit: int = DEFAULT_PAGE_SIZE) -> Page:
    """The user's ledger rows, newest first; `start` and `end` are inclusive KST days. The
    cursor is opaque to clients: it names the last row of the previous page."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise Unprocessable(f"limit is between 1 and {MAX_PAGE_SIZE}", code="invalid_limit")
    if start is not None and end is not None and start > end:
        raise Unprocessable("`from` is after `to`", code="invalid_date_range")
    query = select(LedgerEntry).where(LedgerEntry.user_id == user_id)
    if type is not None:
        query = query.where(LedgerEntry.type == type.value)
    if start is not None:
        query = query.where(LedgerEntry.created_at >= _kst_day_start(start))
    if end is not None:
        query = query.where(LedgerEntry.created_at < _kst_day_start(end + timedelta(days=1)))
    if cursor is not None:
        query = query.where(LedgerEntry.id < decode_cursor(cursor))
    rows = list(session.scalars(query.order_by(LedgerEntry.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    items = rows[:limit]
    return Page(items, encode_cursor(items[-1].id) if more else None)


def ledger_total(session: Session, user_id: int) -> int:
    """The sum of the user's ledger amounts: always equal to the account's cash."""
    return int(session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                              .where(LedgerEntry.user_id == user_id)) or 0)
