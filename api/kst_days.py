"""KST calendar days as bounds on UTC timestamps: the date filters of the lists (`from`/`to` on
`/transactions` and `/fills`) and the daily deposit cap count days as a Korean user does."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute

from api.market.rules import KST


def kst_day(at: datetime) -> date:
    """The KST calendar date of an instant."""
    return at.astimezone(KST).date()


def kst_midnight(day: date) -> datetime | None:
    """The first instant of a KST calendar day, in UTC; None when it is not representable
    (0001-01-01, whose KST midnight is still year 0 in UTC): such a bound lies before every
    row, so it filters nothing."""
    try:
        return datetime.combine(day, time(), tzinfo=KST).astimezone(UTC)
    except OverflowError:
        return None


def kst_day_around(now: datetime) -> tuple[datetime, datetime]:
    """The KST calendar day that `now` falls in, as [start, end) in UTC."""
    today = now.astimezone(KST).date()
    start, end = kst_midnight(today), kst_midnight(today + timedelta(days=1))
    assert start is not None and end is not None  # a real "now" is far from year 1 or 9999
    return start, end


def on_kst_days(column: InstrumentedAttribute[datetime], start: date | None,
                end: date | None) -> list[ColumnElement[bool]]:
    """Conditions for `column` (a UTC timestamp) falling on the KST days `start` through `end`,
    both included (None: unbounded); a bound no timestamp can reach is left out."""
    first = None if start is None else kst_midnight(start)
    after_last = (None if end is None or end == date.max
                  else kst_midnight(end + timedelta(days=1)))
    return [*([] if first is None else [column >= first]),
            *([] if after_last is None else [column < after_last])]
