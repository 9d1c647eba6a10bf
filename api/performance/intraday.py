"""The intraday job: every INTRADAY_SAMPLE_INTERVAL_S while a session is on, one
`intraday_snapshots` row per live account (api.models.IntradaySnapshot), run by the fills
worker in its housekeeping (api.fills.worker), beside the daily snapshots. They are the points
of today's series in GET /api/v1/portfolio/history?period=1D (api.performance.service).

Why sampled: no price history is kept that could be replayed (the tick stream is capped for
the whole market), so an intraday series must be taken as it happens.

When: the sample times are the multiples of the interval (UTC epoch seconds; 300 s gives
09:00, 09:05, ... KST), those at which the market calendar in force has a session on (opening
auction, continuous trading, closing auction; `always_open`: every one). A pass takes the
current slot if it is one and not done yet; the row's `at` is the slot, whenever in the slot
the account was valued. A slot the worker missed (down, busy, or Redis or the database away
for all of it) is simply missing: nothing is backfilled, a later point is not invented.

What: each account is valued exactly as the daily snapshot values it
(api.performance.valuing, GET /api/v1/portfolio's Valuation), under its account lock, with
its last ledger row id then (`ledger_upto`): the flows between the previous close's snapshot
and a sample are the ledger rows between the two, exactly. Which accounts: those opened before
the slot, except the accounts of deleted portfolios (nobody can ask for their series).

Idempotent: (user_id, at) is the primary key, and a batch skips the accounts that have the
slot already, under their locks. Redis or the database away: the error reaches the worker's
loop, which waits the outage out; the slot is taken up again where it stopped if it is still
the current one. Rows older than INTRADAY_RETENTION_DAYS are purged after each slot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

from redis import Redis
from sqlalchemy import delete, exists, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.db import Database, RunAgain
from api.models import Account, IntradaySnapshot, LedgerEntry, Portfolio
from api.performance.snapshots import PASS_BUDGET_S
from api.performance.valuing import Prices, locked_valuations, unpriced, write_at_quotes
from relayer.bus import BusNames
from relayer.market_calendar import MarketCalendar
from relayer.market_calendar import Session as MarketSession

logger = logging.getLogger(__name__)

# Rows deleted per purge transaction (a first purge after a long stop may have many).
PURGE_BATCH = 1000


def slot_of(moment: datetime, interval_s: int) -> datetime:
    """The sample time `moment` falls in: the latest multiple of the interval at or before it
    (UTC epoch seconds; KST is UTC+9, so a divisor of an hour lands on KST's round minutes)."""
    seconds = int(moment.timestamp())
    return datetime.fromtimestamp(seconds - seconds % interval_s, UTC)


def in_session(calendar: MarketCalendar, moment: datetime) -> bool:
    return calendar.session_at(moment) is not MarketSession.CLOSED


# --- SQL units of work ---------------------------------------------------------------------------


def accounts_without_sample(session: Session, at: datetime, after: int,
                            limit: int) -> list[int]:
    """Live accounts opened before `at` that have no sample at `at`, after user id `after`."""
    taken = exists().where(IntradaySnapshot.user_id == Account.user_id,
                           IntradaySnapshot.at == at)
    deleted = exists().where(Portfolio.account_id == Account.user_id,
                             Portfolio.deleted_at.is_not(None))
    return list(session.scalars(
        select(Account.user_id).where(Account.user_id > after, Account.created_at < at,
                                      ~taken, ~deleted)
        .order_by(Account.user_id).limit(limit)))


def write_samples(session: Session, prices: Prices, final: bool, *, user_ids: Sequence[int],
                  at: datetime) -> set[str] | int:
    """Sample these accounts at `at`, under their account locks; skips those that have it.
    The number of rows written, or, unless `final`, the held codes missing from `prices`
    (api.performance.valuing)."""
    valuations = locked_valuations(session, user_ids, prices, final=final)
    if isinstance(valuations, set):
        return valuations
    done = set(session.scalars(select(IntradaySnapshot.user_id).where(
        IntradaySnapshot.user_id.in_(user_ids), IntradaySnapshot.at == at)))
    # Each account's last ledger row: read under the locks, so it is the row of the cash
    # valued. (One group-by over the (user_id, id) index.)
    last_rows: dict[int, int] = {user_id: top for user_id, top in session.execute(
        select(LedgerEntry.user_id, func.max(LedgerEntry.id))
        .where(LedgerEntry.user_id.in_(user_ids)).group_by(LedgerEntry.user_id))}
    written = 0
    for value in valuations:
        user_id = value.account.user_id
        if user_id in done:
            continue
        session.add(IntradaySnapshot(
            user_id=user_id, at=at, cash=value.account.cash, market_value=value.market_value,
            equity=value.equity, ledger_upto=last_rows.get(user_id) or 0,
            unpriced_positions=unpriced(value)))
        written += 1
    try:
        session.flush()
    except IntegrityError as exc:  # another worker wrote one of them first: count again
        raise RunAgain("a sample of this batch was written meanwhile") from exc
    return written


def purge_samples(session: Session, before: datetime, batch: int = PURGE_BATCH) -> int:
    """Delete at most `batch` samples taken before `before`, the oldest first; how many."""
    keys = session.execute(select(IntradaySnapshot.user_id, IntradaySnapshot.at)
                           .where(IntradaySnapshot.at < before)
                           .order_by(IntradaySnapshot.at).limit(batch)).all()
    if keys:
        session.execute(delete(IntradaySnapshot).where(
            tuple_(IntradaySnapshot.user_id, IntradaySnapshot.at).in_(
                [tuple(key) for key in keys])))
    return len(keys)


# --- the job -------------------------------------------------------------------------------------


class IntradayJob:
    """The fills worker's intraday job. `take_due` is cheap between slots and outside sessions
    (the slot done is kept in memory; after a restart, the current slot is asked again and
    skips the accounts that have it)."""

    def __init__(self, db: Database, redis: Redis, names: BusNames, *, interval_s: int,
                 retention_days: int, batch_size: int,
                 pass_budget_s: float | None = PASS_BUDGET_S) -> None:
        self.db = db
        self.redis = redis
        self.names = names
        self.interval_s = interval_s
        self.retention = timedelta(days=retention_days)
        self.batch_size = batch_size
        self.pass_budget_s = pass_budget_s  # None: the whole slot in one pass
        self.done_slot: datetime | None = None  # the latest slot every account has
        self.written_total = 0

    def take_due(self, calendar: MarketCalendar, now: datetime) -> int:
        """Sample every live account at the current slot if a session is on then and it is
        not done, within the pass's budget (the next pass goes on); after a complete slot,
        purge what is past the retention. The number of rows written."""
        slot = slot_of(now, self.interval_s)
        if slot == self.done_slot or not in_session(calendar, slot):
            return 0
        deadline = None if self.pass_budget_s is None else time.monotonic() + self.pass_budget_s
        written, complete = self.sample(slot, deadline)
        self.written_total += written
        if complete:
            self.done_slot = slot
            if written:
                logger.debug("sampled %d account(s) at %s", written, slot.isoformat())
            self.purge(now - self.retention, deadline)
        return written

    def sample(self, slot: datetime, deadline: float | None = None) -> tuple[int, bool]:
        """Sample the accounts without a row at `slot`, batch by batch, until none is left
        (True) or `deadline` (monotonic) has passed (False)."""
        written, after = 0, 0
        while batch := self.db.call_read(accounts_without_sample, slot, after,
                                         self.batch_size):
            after = batch[-1]
            written += write_at_quotes(self.db, self.redis, self.names, batch,
                                       partial(write_samples, user_ids=batch, at=slot))
            if deadline is not None and time.monotonic() >= deadline:
                return written, False
        return written, True

    def purge(self, before: datetime, deadline: float | None = None) -> int:
        """Delete the samples taken before `before`, a batch per transaction, while the pass
        has time (the next slot's pass goes on)."""
        purged = 0
        while True:
            count = self.db.call(purge_samples, before)
            purged += count
            if count < PURGE_BATCH or (deadline is not None and time.monotonic() >= deadline):
                break
        if purged:
            logger.info("purged %d intraday sample(s) older than %s", purged,
                        before.isoformat())
        return purged
