"""The periods statistics are asked for (`1W`, `1M`, `3M`, `1Y`, `all`) and the span of time
each one covers: whole KST calendar days ending today, never before the account was opened
(docs/api/STATS.md, "The period")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import cached_property

from api.kst_days import kst_day, kst_midnight


class Period(StrEnum):
    WEEK = "1W"
    MONTH = "1M"
    QUARTER = "3M"
    YEAR = "1Y"
    ALL = "all"


# How many KST calendar days each fixed period covers, today included.
PERIOD_DAYS = {Period.WEEK: 7, Period.MONTH: 30, Period.QUARTER: 90, Period.YEAR: 365}


@dataclass(frozen=True)
class Window:
    """The KST days `first_day` to `last_day`, both included, as the instants [start, end)."""

    period: Period
    first_day: date
    last_day: date

    @classmethod
    def of(cls, period: Period, now: datetime, opened_at: datetime) -> Window:
        """The days `period` covers at `now`: the last N ending today (`all`: every day since
        the account was opened), none before the day the account was opened."""
        today = kst_day(now)
        opened = kst_day(opened_at)
        first = opened if period is Period.ALL else max(
            opened, today - timedelta(days=PERIOD_DAYS[period] - 1))
        # An account opened "after" the clock's today (a clock set back) still gets one day.
        return cls(period, min(first, today), today)

    # Cached: every fill of the account is tested against them.
    @cached_property
    def start(self) -> datetime:
        return _midnight(self.first_day)

    @cached_property
    def end(self) -> datetime:
        return _midnight(self.last_day + timedelta(days=1))

    def __contains__(self, at: datetime) -> bool:
        return self.start <= at < self.end


def _midnight(day: date) -> datetime:
    start = kst_midnight(day)
    assert start is not None  # days of accounts and clocks, far from year 1
    return start
