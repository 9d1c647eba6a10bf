"""HTTP routes of api.watchlists: CRUD of the signed-in user's watchlists and their items.

Each route calls one function of api.watchlists.service, which does the SQL in one transaction
and then joins the items' quotes (and says why a write whose quotes are unreadable still
succeeds).
"""

from __future__ import annotations

from fastapi import APIRouter, status

from api.auth.deps import CurrentUser
from api.deps import ResourcesDep
from api.ids import RowId
from api.openapi import problems
from api.watchlists import service
from api.watchlists.schemas import (
    ItemAdd,
    WatchlistCreate,
    WatchlistOut,
    WatchlistRename,
    WatchlistsOut,
)

router = APIRouter(tags=["watchlists"])

WatchlistId = RowId

_NOT_FOUND = "`watchlist_not_found` (no such id, or someone else's), `account_not_found`"


@router.get("/watchlists")
async def list_watchlists(principal: CurrentUser, resources: ResourcesDep) -> WatchlistsOut:
    """The signed-in user's watchlists, oldest first, with their number of items (no quotes)."""
    return await service.overview(resources, principal.user_id)


@router.post("/watchlists", status_code=status.HTTP_201_CREATED, responses=problems({
    404: "`account_not_found`",
    409: "`watchlist_name_taken`",
    422: "`validation_error` (name empty or over 64 characters), `invalid_code`, "
         "`watchlist_full`, `watchlist_limit_reached`",
}))
async def create_watchlist(body: WatchlistCreate, principal: CurrentUser,
                           resources: ResourcesDep) -> WatchlistOut:
    """A new watchlist, optionally with its first instruments; answered with their quotes."""
    return await service.create(resources, principal.user_id, body.name, body.codes)


@router.get("/watchlists/{watchlist_id}", responses=problems({
    404: "`watchlist_not_found` (no such id, or someone else's)",
}))
async def get_watchlist(watchlist_id: WatchlistId, principal: CurrentUser,
                        resources: ResourcesDep) -> WatchlistOut:
    """The watchlist with its items in the order added, each with its latest quote (`stale`
    when older than QUOTE_MAX_AGE_S, null when there is none)."""
    return await service.show(resources, principal.user_id, watchlist_id)


@router.patch("/watchlists/{watchlist_id}", responses=problems({
    404: _NOT_FOUND,
    409: "`watchlist_name_taken`",
    422: "`validation_error` (name empty or over 64 characters)",
}))
async def rename_watchlist(watchlist_id: WatchlistId, body: WatchlistRename,
                           principal: CurrentUser, resources: ResourcesDep) -> WatchlistOut:
    """Rename the watchlist."""
    return await service.rename(resources, principal.user_id, watchlist_id, body.name)


@router.delete("/watchlists/{watchlist_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=problems({404: _NOT_FOUND}))
async def delete_watchlist(watchlist_id: WatchlistId, principal: CurrentUser,
                           resources: ResourcesDep) -> None:
    """Delete the watchlist and its items."""
    await service.delete(resources, principal.user_id, watchlist_id)


@router.post("/watchlists/{watchlist_id}/items", status_code=status.HTTP_201_CREATED,
             responses=problems({
                 404: _NOT_FOUND,
                 409: "`watchlist_item_exists`",
                 422: "`validation_error`, `invalid_code`, `watchlist_full`",
             }))
async def add_item(watchlist_id: WatchlistId, body: ItemAdd, principal: CurrentUser,
                   resources: ResourcesDep) -> WatchlistOut:
    """Append an instrument; answered with the whole watchlist and its quotes."""
    return await service.add(resources, principal.user_id, watchlist_id, body.code)


@router.delete("/watchlists/{watchlist_id}/items/{code}",
               status_code=status.HTTP_204_NO_CONTENT, responses=problems({
                   404: f"{_NOT_FOUND}, `watchlist_item_not_found`",
                   422: "`invalid_code`",
               }))
async def remove_item(watchlist_id: WatchlistId, code: str, principal: CurrentUser,
                      resources: ResourcesDep) -> None:
    """Remove an instrument (`A005930` or `005930`) from the watchlist."""
    await service.remove(resources, principal.user_id, watchlist_id, code)
