"""The fills history (체결 내역): the request of `GET /fills` and its SQL query.

A read only: it never locks the account, so it never waits on a user's orders. Rows come
newest first by fill id (the order they were recorded in), filtered in SQL by code, side and
the KST calendar days of `created_at`; the instrument's name comes from the in-process
catalog, not from a join.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import Unprocessable
from api.executions.schemas import FillHistoryOut, FillsPage
from api.instruments.codes import checked_code
from api.kst_days import on_kst_days
from api.models import Fill, Side
from api.pagination import DEFAULT_PAGE_SIZE, Page, check_limit, decode_cursor, page_of
from api.resources import Resources

CURSOR_KIND = "fill"


async def fills_page(resources: Resources, user_id: int, *, code: str | None,
                     side: Side | None, start: date | None, end: date | None,
                     cursor: str | None, limit: int) -> FillsPage:
    page = await resources.db.read(list_fills, user_id,
                                   None if code is None else checked_code(code), side, start,
                                   end, cursor, limit)
    catalog = await resources.instruments.snapshot()

    def name_of(code: str) -> str | None:
        info = catalog.get(code)
        return None if info is None else info.name

    return FillsPage(items=[FillHistoryOut.of(fill, name_of(fill.code)) for fill in page.items],
                     next_cursor=page.next_cursor)


def list_fills(session: Session, user_id: int, code: str | None = None,
               side: Side | None = None, start: date | None = None, end: date | None = None,
               cursor: str | None = None, limit: int = DEFAULT_PAGE_SIZE) -> Page[Fill]:
    """Unit of work: the user's fills, newest first; `start` and `end` are inclusive KST
    calendar days (422 `invalid_date_range` when `start` is after `end`)."""
    check_limit(limit)
    if start is not None and end is not None and start > end:
        raise Unprocessable("`from` is after `to`", code="invalid_date_range")
    query = select(Fill).where(Fill.user_id == user_id, *on_kst_days(Fill.created_at, start, end))
    if code is not None:
        query = query.where(Fill.code == code)
    if side is not None:
        query = query.where(Fill.side == side.value)
    if cursor is not None:
        query = query.where(Fill.id < decode_cursor(CURSOR_KIND, cursor))
    rows = list(session.scalars(query.order_by(Fill.id.desc()).limit(limit + 1)))
    return page_of(CURSOR_KIND, rows, limit, lambda fill: fill.id)
