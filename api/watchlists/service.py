"""Watchlists: the requests of the watchlist routes, and their SQL units of work, run with
`Database.read` (reads) or `Database.run_retrying` (writes, which lock a row).

Each request does its SQL in one transaction, then reads the items' quotes from Redis (one MGET,
`api.quotes.service.latest_quotes`) after that transaction has ended (`_with_quotes`). A write is
committed before its quotes are read, so when Redis fails at that point the answer is still the
write's success, with every `quote` null (and a warning logged): a 503 would invite a retry of a
change that already happened. A read answers 503 `redis_unavailable`, as the quote routes do.

An item names an instrument of the master, listed or halted (api.instruments.gate): 422
`unknown_instrument` or `instrument_not_tradable` (delisted) otherwise, checked against the
in-process catalog before the transaction. Items already stored stay when their instrument is
delisted later, so that nothing a user saved vanishes without a word.

A user only ever reaches their own watchlists: every query names the user, and someone else's
watchlist id is 404 `watchlist_not_found`, exactly like an id that does not exist. Every write
first locks the user's account row (`api.ledger.service.take_user_lock`, the lock that the ledger
takes too), so one user's watchlist writes run one at a time: the count limits and the "name
taken" / "already in the list" checks below are exact, and an item is never added to a
watchlist that a concurrent request is deleting. The UNIQUE constraints are the second guard.
Nothing here commits: `Database` does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import Conflict, NotFound, Unprocessable
from api.instruments.codes import checked_code, unique_codes
from api.instruments.gate import known_instruments
from api.ledger.service import take_user_lock
from api.models import Watchlist, WatchlistItem
from api.quotes.service import latest_quotes
from api.resources import Resources
from api.watchlists.schemas import (
    WatchlistItemOut,
    WatchlistOut,
    WatchlistsOut,
    WatchlistSummaryOut,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Contents:
    """A watchlist and its items in the order they were added, as stored."""

    watchlist: Watchlist
    items: list[WatchlistItem]

    @property
    def codes(self) -> list[str]:
        return [item.code for item in self.items]


# --- requests: one unit of work, then the quotes ------------------------------------------------


async def overview(resources: Resources, user_id: int) -> WatchlistsOut:
    """The user's watchlists with their number of items (no quotes)."""
    return WatchlistsOut(watchlists=[
        WatchlistSummaryOut(id=watchlist.id, name=watchlist.name,
                            created_at=watchlist.created_at, item_count=count)
        for watchlist, count in await resources.db.read(list_watchlists, user_id)
    ])


async def show(resources: Resources, user_id: int, watchlist_id: int) -> WatchlistOut:
    contents = await resources.db.read(get_watchlist, user_id, watchlist_id)
    return await _with_quotes(resources, contents, committed=False)


async def create(resources: Resources, user_id: int, name: str,
                 code_texts: Iterable[str]) -> WatchlistOut:
    settings = resources.settings
    codes = unique_codes(code_texts)
    await known_instruments(resources, codes)
    contents = await resources.db.run_retrying(
        create_watchlist, user_id, name, codes,
        max_per_user=settings.watchlists_max_per_user, max_items=settings.watchlist_max_items)
    return await _with_quotes(resources, contents, committed=True)


async def rename(resources: Resources, user_id: int, watchlist_id: int,
                 name: str) -> WatchlistOut:
    contents = await resources.db.run_retrying(rename_watchlist, user_id, watchlist_id, name)
    return await _with_quotes(resources, contents, committed=True)


async def delete(resources: Resources, user_id: int, watchlist_id: int) -> None:
    await resources.db.run_retrying(delete_watchlist, user_id, watchlist_id)


async def add(resources: Resources, user_id: int, watchlist_id: int,
              code_text: str) -> WatchlistOut:
    code = checked_code(code_text)
    await known_instruments(resources, [code])
    contents = await resources.db.run_retrying(add_item, user_id, watchlist_id, code,
                                               max_items=resources.settings.watchlist_max_items)
    return await _with_quotes(resources, contents, committed=True)


async def remove(resources: Resources, user_id: int, watchlist_id: int, code_text: str) -> None:
    await resources.db.run_retrying(remove_item, user_id, watchlist_id, code_text)


async def _with_quotes(resources: Resources, contents: Contents, *,
                       committed: bool) -> WatchlistOut:
    """The watchlist with the latest quote of each item; when the transaction has `committed`,
    a Redis failure gives null quotes instead of a 503 (see the module docstring)."""
    try:
        quotes = await latest_quotes(resources, contents.codes)
    except RedisError as exc:
        if not committed:
            raise
        logger.warning("watchlist %s changed, but its quotes are unreadable: %s",
                       contents.watchlist.id, exc)
        quotes = dict.fromkeys(contents.codes)
    watchlist = contents.watchlist
    return WatchlistOut(
        id=watchlist.id, name=watchlist.name, created_at=watchlist.created_at,
        item_count=len(contents.items),
        items=[WatchlistItemOut(code=item.code, added_at=item.added_at, quote=quotes[item.code])
               for item in contents.items],
    )


# --- checks --------------------------------------------------------------------------------------


def _check_room(count: int, max_items: int) -> None:
    if count > max_items:
        raise Unprocessable(f"a watchlist holds at most {max_items} instruments",
                            code="watchlist_full", max_items=max_items)


def _name_taken() -> Conflict:
    return Conflict("you already have a watchlist with this name",
                    code="watchlist_name_taken")


def _item_exists(code: str) -> Conflict:
    return Conflict(f"{code} is already in this watchlist", code="watchlist_item_exists")


def _check_name_free(session: Session, user_id: int, name: str,
                     renaming: int | None = None) -> None:
    # Letter case is ignored, as MariaDB's default collation does for the UNIQUE constraint,
    # so that SQLite (binary comparison) answers the same.
    query = select(Watchlist.id).where(Watchlist.user_id == user_id,
                                       func.lower(Watchlist.name) == func.lower(name))
    if renaming is not None:
        query = query.where(Watchlist.id != renaming)
    if session.scalar(query.limit(1)) is not None:
        raise _name_taken()


def _flush_name(session: Session) -> None:
    """Flush a new or renamed watchlist: under the account lock the check above decides, and
    the UNIQUE constraint (user_id, name) is the guard if anything bypassed it."""
    try:
        session.flush()
    except IntegrityError as exc:
        raise _name_taken() from exc


# --- reading -------------------------------------------------------------------------------------


def _owned(session: Session, user_id: int, watchlist_id: int) -> Watchlist:
    """The user's watchlist of this id; 404 if there is none, or it is someone else's."""
    watchlist = session.scalar(select(Watchlist).where(Watchlist.id == watchlist_id,
                                                       Watchlist.user_id == user_id))
    if watchlist is None:
        raise NotFound(f"you have no watchlist {watchlist_id}", code="watchlist_not_found")
    return watchlist


def _contents(session: Session, watchlist: Watchlist) -> Contents:
    # populate_existing: items written in this transaction are read back as stored (DATETIME
    # drops the microseconds), so a write's answer equals a later read.
    items = session.scalars(select(WatchlistItem)
                            .where(WatchlistItem.watchlist_id == watchlist.id)
                            .order_by(WatchlistItem.id)
                            .execution_options(populate_existing=True))
    return Contents(watchlist, list(items))


def _item_count(session: Session, watchlist_id: int) -> int:
    return session.scalar(select(func.count()).select_from(WatchlistItem)
                          .where(WatchlistItem.watchlist_id == watchlist_id)) or 0


def list_watchlists(session: Session, user_id: int) -> list[tuple[Watchlist, int]]:
    """The user's watchlists, oldest first, each with its number of items."""
    count = (select(func.count(WatchlistItem.id))
             .where(WatchlistItem.watchlist_id == Watchlist.id)
             .correlate(Watchlist).scalar_subquery())
    rows = session.execute(select(Watchlist, count).where(Watchlist.user_id == user_id)
                           .order_by(Watchlist.id))
    return [(watchlist, int(items)) for watchlist, items in rows]


def get_watchlist(session: Session, user_id: int, watchlist_id: int) -> Contents:
    return _contents(session, _owned(session, user_id, watchlist_id))


# --- writing -------------------------------------------------------------------------------------


def create_watchlist(session: Session, user_id: int, name: str, code_texts: Iterable[str], *,
                     max_per_user: int, max_items: int) -> Contents:
    """A new watchlist named `name` (already trimmed), holding `code_texts` in order."""
    codes = unique_codes(code_texts)
    _check_room(len(codes), max_items)
    take_user_lock(session, user_id)
    _check_name_free(session, user_id, name)
    owned = session.scalar(select(func.count()).select_from(Watchlist)
                           .where(Watchlist.user_id == user_id)) or 0
    if owned >= max_per_user:
        raise Unprocessable(f"at most {max_per_user} watchlists per user; delete one first",
                            code="watchlist_limit_reached", max_watchlists=max_per_user)
    watchlist = Watchlist(user_id=user_id, name=name)
    session.add(watchlist)
    _flush_name(session)
    session.add_all(WatchlistItem(watchlist_id=watchlist.id, code=code) for code in codes)
    session.flush()
    session.refresh(watchlist)  # created_at as stored
    return _contents(session, watchlist)


def rename_watchlist(session: Session, user_id: int, watchlist_id: int, name: str) -> Contents:
    take_user_lock(session, user_id)
    watchlist = _owned(session, user_id, watchlist_id)
    _check_name_free(session, user_id, name, renaming=watchlist.id)
    watchlist.name = name
    _flush_name(session)
    return _contents(session, watchlist)


def delete_watchlist(session: Session, user_id: int, watchlist_id: int) -> None:
    """The watchlist and its items (ON DELETE CASCADE)."""
    take_user_lock(session, user_id)
    session.delete(_owned(session, user_id, watchlist_id))
    session.flush()


def add_item(session: Session, user_id: int, watchlist_id: int, code_text: str, *,
             max_items: int) -> Contents:
    """The instrument appended to the watchlist; 409 `watchlist_item_exists` if it is in it."""
    code = checked_code(code_text)
    take_user_lock(session, user_id)
    watchlist = _owned(session, user_id, watchlist_id)
    if session.scalar(select(WatchlistItem.id).where(WatchlistItem.watchlist_id == watchlist.id,
                                                     WatchlistItem.code == code)) is not None:
        raise _item_exists(code)
    _check_room(_item_count(session, watchlist.id) + 1, max_items)
    session.add(WatchlistItem(watchlist_id=watchlist.id, code=code))
    try:
        session.flush()  # the UNIQUE constraint (watchlist_id, code) is the second guard
    except IntegrityError as exc:
        raise _item_exists(code) from exc
    return _contents(session, watchlist)


def remove_item(session: Session, user_id: int, watchlist_id: int, code_text: str) -> None:
    code = checked_code(code_text)
    take_user_lock(session, user_id)
    watchlist = _owned(session, user_id, watchlist_id)
    item = session.scalar(select(WatchlistItem).where(WatchlistItem.watchlist_id == watchlist.id,
                                                      WatchlistItem.code == code))
    if item is None:
        raise NotFound(f"{code} is not in this watchlist", code="watchlist_item_not_found")
    session.delete(item)
    session.flush()
