"""The daily snapshot job: after each trading day's close, one `account_snapshots` row per
account (api.models.AccountSnapshot), run by the fills worker (api.fills.worker, in its
housekeeping: only once it has processed the ticks printed before the close).

When: a day is due once its close plus CLOSING_PRINT_GRACE has passed (the closing auction's
print, which may fill orders and is the day's closing price, has come). Which days: every
trading day after the latest one snapshotted, up to the latest due one; on a first run (no
snapshot at all), the latest due day alone: nothing is backfilled. A worker that was down over
several closes catches up every missed day at start, in order, valued at the holdings and
quotes of the moment it runs, and marks those rows `late`.

What: each account is valued exactly as GET /api/v1/portfolio values it
(api.portfolio.service.Valuation: a position at its quote's last price, at its book cost
without one), under its account lock, in the transaction that also reads the ledger rows since
the user's previous snapshot. So `equity - base_equity - net_flows` is exactly the P&L between
two snapshots, whatever was deposited or traded in between.

Idempotent: (user_id, day) is unique, and a batch skips the accounts that already have the
day, under their account locks; a rerun or a second worker writes nothing twice. Redis or the
database away: the error reaches the worker's loop, which waits the outage out; the day is
done again from where it stopped (its accounts without a row), nothing is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from functools import partial

from redis import Redis
from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.db import Database, RunAgain
from api.fills.store import CLOSING_PRINT_GRACE
from api.models import Account, AccountSnapshot, LedgerEntry, LedgerType
from api.performance.valuing import Prices, locked_valuations, unpriced, write_at_quotes
from relayer.bus import BusNames
from relayer.market_calendar import MarketCalendar, TradingDay

logger = logging.getLogger(__name__)

# The ledger rows that move money into or out of the account from outside: not gains. A
# portfolio reset's RESET row is one (api.portfolios.reset): starting over is not a return.
FLOW_TYPES = (LedgerType.DEPOSIT.value, LedgerType.WITHDRAW.value, LedgerType.PAYMENT.value,
              LedgerType.REFUND.value, LedgerType.RESET.value)
# A snapshot taken after the next trading day began, and at least this long after its close,
# is `late`: the holdings and quotes may be the next day's. (The margin matters where a day
# begins at the previous close: `always_open`.)
LATE_MARGIN = timedelta(minutes=15)
# How long one pass of the job may run before it returns to the worker's loop (the tick stream
# waits meanwhile: `always_open` trades at every hour); the next pass, a second later, goes on.
# At least one batch is done per pass.
PASS_BUDGET_S = 1.0


def latest_due_day(calendar: MarketCalendar, now: datetime) -> TradingDay:
    """The latest trading day whose close, with the closing print's grace, is past."""
    close = calendar.previous_close(now - CLOSING_PRINT_GRACE)
    return calendar.day_of(close - timedelta(microseconds=1))


def is_late(calendar: MarketCalendar, day: TradingDay, now: datetime) -> bool:
    next_day_start = calendar.day_of(day.close).auction_start
    return now >= max(next_day_start, day.close + LATE_MARGIN)


# --- SQL units of work ---------------------------------------------------------------------------


def latest_snapshot_day(session: Session) -> date | None:
    day: date | None = session.scalar(select(func.max(AccountSnapshot.day)))
    return day


def accounts_without_snapshot(session: Session, day: date, close: datetime, after: int,
                              limit: int) -> list[int]:
    """Accounts opened before `close` that have no row for `day`, after user id `after`."""
    taken = exists().where(AccountSnapshot.user_id == Account.user_id,
                           AccountSnapshot.day == day)
    return list(session.scalars(
        select(Account.user_id).where(Account.user_id > after, Account.created_at < close,
                                      ~taken)
        .order_by(Account.user_id).limit(limit)))


def _previous(session: Session, user_ids: Sequence[int],
              day: date) -> dict[int, AccountSnapshot]:
    """Each user's latest snapshot before `day`."""
    latest = (select(AccountSnapshot.user_id, func.max(AccountSnapshot.day).label("day"))
              .where(AccountSnapshot.user_id.in_(user_ids), AccountSnapshot.day < day)
              .group_by(AccountSnapshot.user_id).subquery())
    rows = session.scalars(select(AccountSnapshot).join(
        latest, (AccountSnapshot.user_id == latest.c.user_id)
        & (AccountSnapshot.day == latest.c.day)))
    return {row.user_id: row for row in rows}


def ledger_since(session: Session, user_id: int, after_id: int) -> tuple[dict[str, int], int]:
    """The sums of a user's ledger rows after id `after_id`, by type, and the last row's id
    (`after_id` when there is none). Reads the (user_id, id) index."""
    sums: dict[str, int] = {}
    last = after_id
    for type_, amount, top in session.execute(
            select(LedgerEntry.type, func.sum(LedgerEntry.amount), func.max(LedgerEntry.id))
            .where(LedgerEntry.user_id == user_id, LedgerEntry.id > after_id)
            .group_by(LedgerEntry.type)):
        sums[type_] = int(amount)
        last = max(last, int(top))
    return sums, last


def net_flows(sums: dict[str, int]) -> int:
    return sum(sums.get(type_, 0) for type_ in FLOW_TYPES)


def write_snapshots(session: Session, prices: Prices, final: bool, *,
                    user_ids: Sequence[int], day: date, now: datetime, late: bool,
                    ) -> set[str] | int:
    """Snapshot these accounts for `day`, under their account locks (api.performance.valuing).
    Skips those that have the day already. Returns the number of rows written, or, unless
    `final`, the held codes missing from `prices` (nothing written: the caller reads their
    quotes and comes again)."""
    valuations = locked_valuations(session, user_ids, prices, final=final)
    if isinstance(valuations, set):
        return valuations
    done = set(session.scalars(select(AccountSnapshot.user_id).where(
        AccountSnapshot.user_id.in_(user_ids), AccountSnapshot.day == day)))
    previous = _previous(session, user_ids, day)
    written = 0
    for value in valuations:
        account = value.account
        if account.user_id in done:
            continue
        before = previous.get(account.user_id)
        sums, upto = ledger_since(session, account.user_id,
                                  0 if before is None else before.ledger_upto)
        session.add(AccountSnapshot(
            user_id=account.user_id, day=day, cash=account.cash,
            market_value=value.market_value, equity=value.equity,
            base_equity=0 if before is None else before.equity, net_flows=net_flows(sums),
            realized_pnl=value.realized_pnl,
            fees=-sums.get(LedgerType.FEE.value, 0), taxes=-sums.get(LedgerType.TAX.value, 0),
            ledger_upto=upto, unpriced_positions=unpriced(value), priced_at=now, late=late))
        written += 1
    try:
        session.flush()
    except IntegrityError as exc:  # another job wrote one of them first: count again
        raise RunAgain("a snapshot of this batch was written meanwhile") from exc
    return written


# --- the job -------------------------------------------------------------------------------------


class SnapshotJob:
    """The fills worker's snapshot job. `take_due` is cheap when nothing is due (the latest
    day done is kept in memory; the database is asked once, at the first call)."""

    def __init__(self, db: Database, redis: Redis, names: BusNames, *, batch_size: int,
                 pass_budget_s: float | None = PASS_BUDGET_S) -> None:
        self.db = db
        self.redis = redis
        self.names = names
        self.batch_size = batch_size
        self.pass_budget_s = pass_budget_s  # None: every due day in one pass
        # The latest day every account was snapshotted for, as far as this job knows.
        self.done_through: date | None = None
        self.written_total = 0

    def due_days(self, calendar: MarketCalendar, now: datetime) -> list[TradingDay]:
        last = latest_due_day(calendar, now)
        if self.done_through is None:
            latest = self.db.call_read(latest_snapshot_day)
            if latest is None:
                return [last]  # a first run: from the latest close on, no backfill
            # That day again: a stop in its middle left some accounts without it.
            return calendar.days(latest, last.date)
        if self.done_through >= last.date:
            return []
        return calendar.days(self.done_through + timedelta(days=1), last.date)

    def take_due(self, calendar: MarketCalendar, now: datetime) -> int:
        """Snapshot every account for each due day, within the pass's budget; the number of
        rows written."""
        deadline = None if self.pass_budget_s is None else time.monotonic() + self.pass_budget_s
        written = 0
        for day in self.due_days(calendar, now):
            late = is_late(calendar, day, now)
            count, complete = self.snapshot_day(day, now, late, deadline)
            written += count
            if count:
                logger.info("snapshotted %d account(s) at the close of %s%s", count, day.date,
                            " (late: valued now)" if late else "")
            if not complete:
                break  # out of time: the next pass takes up this day where it stopped
            self.done_through = day.date
        self.written_total += written
        return written

    def snapshot_day(self, day: TradingDay, now: datetime, late: bool,
                     deadline: float | None = None) -> tuple[int, bool]:
        """Snapshot the accounts without a row for `day`, batch by batch, until none is left
        (True) or `deadline` (monotonic) has passed (False)."""
        written, after = 0, 0
        while batch := self.db.call_read(accounts_without_snapshot, day.date, day.close, after,
                                         self.batch_size):
            after = batch[-1]
            written += write_at_quotes(self.db, self.redis, self.names, batch, partial(
                write_snapshots, user_ids=batch, day=day.date, now=now, late=late))
            if deadline is not None and time.monotonic() >= deadline:
                return written, False
        return written, True
