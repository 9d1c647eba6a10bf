"""Cursor pagination, newest first: a page names its last row in an opaque cursor, and the next
page continues below that row's id. Each endpoint has its own cursor kind, so a cursor from one
listing is refused by another instead of silently skipping rows."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from api.errors import Unprocessable
from api.ids import MAX_ROW_ID

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200

Row = TypeVar("Row")


@dataclass(frozen=True)
class Page(Generic[Row]):
    items: list[Row]
    next_cursor: str | None


def encode_cursor(kind: str, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    """The row id a cursor continues below; 422 `invalid_cursor` for anything this endpoint
    did not hand out, an id beyond the id columns' range included (SQLite cannot bind one)."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != kind or not number.isascii() or not number.isdigit() \
                or not 0 < int(number) <= MAX_ROW_ID:
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Unprocessable("this cursor was not issued by this endpoint",
                            code="invalid_cursor") from None


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise Unprocessable(f"limit is between 1 and {MAX_PAGE_SIZE}", code="invalid_limit")


def page_of(kind: str, rows: Sequence[Row], limit: int, row_id: Callable[[Row], int],
            ) -> Page[Row]:
    """A page from up to `limit + 1` rows fetched newest first: the extra row only says that
    there is more, and the cursor names the page's last row."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return Page(items, encode_cursor(kind, row_id(items[-1])) if more else None)
