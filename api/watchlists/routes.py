"""HTTP routes of api.watchlists: CRUD of the signed-in user's watchlists and their items.

Each route does its SQL in one transaction, then reads the items' quotes from Redis (one MGET)
after that transaction has ended. A write is committed before its quotes are read, so when Redis
fails at that point the answer is still the write's success, with every `quote` null (and a
warning logged): a 503 would invite a retry of a change that already happened. A read answers
503 `redis_unavailable`, as the quote routes do.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, status
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from api.auth.deps import CurrentUser
from api.deps import DatabaseDep, ResourcesDep, SettingsDep
from api.ids import RowId
from api.openapi import problems
from api.quotes.service import latest_quotes
from api.resources import Resources
from api.watchlists import service
from api.watchlists.schemas import (
    ItemAdd,
    WatchlistCreate,
    WatchlistItemOut,
    WatchlistOut,
    WatchlistRename,
    WatchlistsOut,
    WatchlistSummaryOut,
)

logger = logging.getLogger(__name__)

router = APIRouter(tags=["watchlists"])

WatchlistId = RowId

_NOT_FOUND = "`watchlist_not_found` (no such id, or someone else's), `account_not_found`"


async def _answer(resources: Resources, contents: service.Contents, *,
                  committed: bool) -> WatchlistOut:
    """The watchlist with the latest quote of each item."""
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


def _list(session: Session, user_id: int) -> WatchlistsOut:
    return WatchlistsOut(watchlists=[
        WatchlistSummaryOut(id=watchlist.id, name=watchlist.name,
                            created_at=watchlist.created_at, item_count=count)
        for watchlist, count in service.list_watchlists(session, user_id)
    ])


@router.get("/watchlists", responses=problems({}))
async def list_watchlists(principal: CurrentUser, db: DatabaseDep) -> WatchlistsOut:
    """The signed-in user's watchlists, oldest first, with their number of items (no quotes)."""
    return await db.read(_list, principal.user_id)


@router.post("/watchlists", status_code=status.HTTP_201_CREATED, responses=problems({
    404: "`account_not_found`",
    409: "`watchlist_name_taken`",
    422: "`validation_error` (name empty or over 64 characters), `invalid_code`, "
         "`watchlist_full`, `watchlist_limit_reached`",
}))
async def create_watchlist(body: WatchlistCreate, principal: CurrentUser, db: DatabaseDep,
                           settings: SettingsDep, resources: ResourcesDep) -> WatchlistOut:
    """A new watchlist, optionally with its first instruments; answered with their quotes."""
    contents = await db.run_retrying(
        service.create_watchlist, principal.user_id, body.name, body.codes,
        max_per_user=settings.watchlists_max_per_user, max_items=settings.watchlist_max_items)
    return await _answer(resources, contents, committed=True)


@router.get("/watchlists/{watchlist_id}", responses=problems({
    404: "`watchlist_not_found` (no such id, or someone else's)",
}))
async def get_watchlist(watchlist_id: WatchlistId, principal: CurrentUser, db: DatabaseDep,
                        resources: ResourcesDep) -> WatchlistOut:
    """The watchlist with its items in the order added, each with its latest quote (`stale`
    when older than QUOTE_MAX_AGE_S, null when there is none)."""
    contents = await db.read(service.get_watchlist, principal.user_id, watchlist_id)
    return await _answer(resources, contents, committed=False)


@router.patch("/watchlists/{watchlist_id}", responses=problems({
    404: _NOT_FOUND,
    409: "`watchlist_name_taken`",
    422: "`validation_error` (name empty or over 64 characters)",
}))
async def rename_watchlist(watchlist_id: WatchlistId, body: WatchlistRename,
                           principal: CurrentUser, db: DatabaseDep,
                           resources: ResourcesDep) -> WatchlistOut:
    """Rename the watchlist."""
    contents = await db.run_retrying(service.rename_watchlist, principal.user_id, watchlist_id,
                                     body.name)
    return await _answer(resources, contents, committed=True)


@router.delete("/watchlists/{watchlist_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=problems({404: _NOT_FOUND}))
async def delete_watchlist(watchlist_id: WatchlistId, principal: CurrentUser,
                           db: DatabaseDep) -> None:
    """Delete the watchlist and its items."""
    await db.run_retrying(service.delete_watchlist, principal.user_id, watchlist_id)


@router.post("/watchlists/{watchlist_id}/items", status_code=status.HTTP_201_CREATED,
             responses=problems({
                 404: _NOT_FOUND,
                 409: "`watchlist_item_exists`",
                 422: "`validation_error`, `invalid_code`, `watchlist_full`",
             }))
async def add_item(watchlist_id: WatchlistId, body: ItemAdd, principal: CurrentUser,
                   db: DatabaseDep, settings: SettingsDep,
                   resources: ResourcesDep) -> WatchlistOut:
    """Append an instrument; answered with the whole watchlist and its quotes."""
    contents = await db.run_retrying(service.add_item, principal.user_id, watchlist_id,
                                     body.code, max_items=settings.watchlist_max_items)
    return await _answer(resources, contents, committed=True)


@router.delete("/watchlists/{watchlist_id}/items/{code}",
               status_code=status.HTTP_204_NO_CONTENT, responses=problems({
                   404: f"{_NOT_FOUND}, `watchlist_item_not_found`",
                   422: "`invalid_code`",
               }))
async def remove_item(watchlist_id: WatchlistId, code: str, principal: CurrentUser,
                      db: DatabaseDep) -> None:
    """Remove an instrument (`A005930` or `005930`) from the watchlist."""
    await db.run_retrying(service.remove_item, principal.user_id, watchlist_id, code)
