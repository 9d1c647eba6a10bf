"""One trade print's volume, shared by every limit order it fills (docs/TRADING.md, "One
print's volume"): the `trade_prints` row of (print, side) is locked by each transaction that
fills a limit order from that print, in an API worker (an order that trades on arrival) or in
the fills worker (a resting order), and counts what was given. So a 4-share print fills 4
shares of buys in all, however many orders, users and processes reach for it at once.

Lock order: the row is the last lock a fill transaction takes (after the account, the order
and the position; docs/ARCHITECTURE.md), and a transaction locks at most one print. A print is
the only row that transactions of different users both lock, so they never wait on each other
in a cycle.

Market orders never come here: they are not limited by printed volume (a decision, in
docs/TRADING.md), so they never wait on a print either.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from api.models import Side, TradePrint
from api.orders.execution import Tick


def lock_print(session: Session, tick: Tick, side: Side) -> TradePrint:
    """The print's row for `side`, locked until the transaction ends; inserted with nothing
    given if no fill has come from the print yet.

    MariaDB: `INSERT ... ON DUPLICATE KEY UPDATE` takes an exclusive lock on the row whether it
    inserts or finds it (a plain `INSERT IGNORE` would take a shared lock, and two transactions
    both upgrading theirs to exclusive deadlock), and a concurrent first insert waits for the
    other's commit instead of failing. SQLite runs one writing transaction at a time (BEGIN
    IMMEDIATE, api.db), so inserting if absent is enough. The SELECT ... FOR UPDATE then reads
    the latest committed count (a locking read, not the transaction's snapshot)."""
    values = {"print_id": tick.id, "side": side.value, "code": tick.code, "price": tick.price,
              "volume": tick.volume, "consumed": 0}
    if session.get_bind().dialect.name in ("mysql", "mariadb"):
        upsert = mysql_insert(TradePrint).values(values)
        session.execute(upsert.on_duplicate_key_update(consumed=upsert.table.c.consumed))
    else:
        session.execute(sqlite_insert(TradePrint).values(values).on_conflict_do_nothing())
    row = session.scalar(select(TradePrint)
                         .where(TradePrint.print_id == tick.id, TradePrint.side == side.value)
                         .with_for_update().execution_options(populate_existing=True))
    # Inserted or found above; a purge only deletes the rows of prints gone from the stream,
    # which nothing fills from any more (purge_prints).
    assert row is not None
    return row


def take_volume(session: Session, tick: Tick, side: Side, wanted: int, *,
                all_or_nothing: bool = False) -> int:
    """Take up to `wanted` shares of what the print has left for `side` (all of them or none
    with `all_or_nothing`, for FOK); returns the shares taken, which the caller fills now, in
    the same transaction."""
    if wanted <= 0:
        return 0
    row = lock_print(session, tick, side)
    taken = min(wanted, row.volume - row.consumed)
    if taken <= 0 or (all_or_nothing and taken < wanted):
        return 0
    row.consumed += taken
    return taken


def volume_left(session: Session, tick: Tick, side: Side) -> int:
    """What the print has left for `side`, read without a lock: a hint that spares the fills
    worker transactions for a print already used up (the fill itself takes from the locked
    row)."""
    row = session.get(TradePrint, (tick.id, side.value))
    return tick.volume if row is None else row.volume - row.consumed


def purge_prints(session: Session, created_before: datetime, batch: int = 1000) -> int:
    """Delete the rows created before `created_before`, at most `batch` of them; returns how
    many. The fills worker passes the time of the oldest entry still in the tick stream, less
    a margin for clocks: a row is created when a print first fills, after the print, so such a
    row's print has been trimmed from the stream and no order can fill from it again (an
    arrival fills from the latest quote's print, the fills worker from entries in the
    stream)."""
    keys = session.execute(select(TradePrint.print_id, TradePrint.side)
                           .where(TradePrint.created_at < created_before)
                           .limit(batch)).all()
    if keys:
        session.execute(delete(TradePrint).where(
            tuple_(TradePrint.print_id, TradePrint.side).in_([tuple(key) for key in keys])))
    return len(keys)
