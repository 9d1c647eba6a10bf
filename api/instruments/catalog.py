"""Every instrument, in process memory: what order placement, quote reads and search ask
about an instrument on their hot paths, without a SQL query per request.

The master is a few thousand rows (about 4,000 on KOSPI, KOSDAQ and KONEX together), loaded in
one query and swapped in whole, so readers never see half a refresh. A copy older than
INSTRUMENTS_REFRESH_S is refreshed in the background while the old one keeps answering; only
the very first load is awaited. While the database is down the last copy keeps serving (a
refresh that fails is logged and tried again at the next interval); before any copy was ever
loaded, `snapshot()` raises `CatalogUnavailable` (503), never a 500.

An import in this process (`api.instruments.importer`) calls `invalidate()`, so its result is
visible at once; other processes see it within INSTRUMENTS_REFRESH_S.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import Database
from api.errors import ServiceUnavailable
from api.instruments.search import SearchIndex
from api.models import Instrument
from relayer.krx import Market, PriceRules, SecurityKind, price_rules
from relayer.master import ListingStatus

if TYPE_CHECKING:
    from api.resources import Resources

logger = logging.getLogger(__name__)

# Kinds never tradable here: an ELW's limits follow its underlying, and rights (신주인수권) are
# not modelled (docs/TRADING.md, "Instruments").
UNTRADABLE_KINDS = frozenset({SecurityKind.ELW, SecurityKind.RIGHTS})


class CatalogUnavailable(ServiceUnavailable):
    code = "instruments_unavailable"


@dataclass(frozen=True, slots=True)
class InstrumentInfo:
    code: str
    isin: str
    name: str
    name_en: str | None
    market: Market
    kind: SecurityKind
    status: ListingStatus
    base_price: int | None  # the master's 기준가 (the previous close when it was imported)
    market_cap: int | None  # 억원, the master's previous-day figure
    initials: str
    updated_at: datetime

    @property
    def tradable(self) -> bool:
        """Listed and of a kind this market models (not halted, delisted, ELW or rights)."""
        return self.status is ListingStatus.LISTED and self.kind not in UNTRADABLE_KINDS

    @property
    def price_rules(self) -> PriceRules:
        """The tick grid and daily limit of this instrument (relayer.krx.price_rules)."""
        return price_rules(self.market, self.kind)


def info_of(row: Instrument) -> InstrumentInfo:
    return InstrumentInfo(
        code=row.code, isin=row.isin, name=row.name, name_en=row.name_en,
        market=Market(row.market), kind=SecurityKind(row.kind), status=ListingStatus(row.status),
        base_price=row.base_price, market_cap=row.market_cap, initials=row.initials,
        updated_at=row.updated_at)


def read_instruments(session: Session) -> list[InstrumentInfo]:
    """Unit of work: every instrument row."""
    return [info_of(row) for row in session.scalars(select(Instrument))]


async def load_instruments(resources: Resources) -> None:
    """Startup hook (api.app STARTUP): the first copy, before the worker serves."""
    await resources.instruments.load()


class CatalogSnapshot:
    """One loaded copy of the master: lookups by code and the search index over it."""

    def __init__(self, instruments: Iterable[InstrumentInfo], loaded_at: float) -> None:
        self.by_code: dict[str, InstrumentInfo] = {info.code: info for info in instruments}
        self.index = SearchIndex(self.by_code.values())
        self.loaded_at = loaded_at

    def get(self, code: str) -> InstrumentInfo | None:
        return self.by_code.get(code)

    def __len__(self) -> int:
        return len(self.by_code)


class InstrumentCatalog:
    """The process's copy of the master (module docstring). One per process, on
    `api.resources.Resources.instruments`."""

    def __init__(self, db: Database, refresh_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._refresh_s = refresh_s
        self._clock = clock
        self._snapshot: CatalogSnapshot | None = None
        self._loading: asyncio.Task[CatalogSnapshot] | None = None
        self._stale = False
        self._due_at = 0.0  # when the copy is next refreshed (monotonic)

    async def snapshot(self) -> CatalogSnapshot:
        """The current copy: loaded now if there is none (503 `instruments_unavailable` if the
        database cannot give it), refreshed in the background when older than the interval or
        invalidated."""
        current = self._snapshot
        if current is None:
            return await self._load()
        if self._stale:  # an import in this process changed the master: wait for it
            try:
                return await self._load()
            except CatalogUnavailable:
                return current
        if self._clock() >= self._due_at and self._loading is None:
            self._start_load()
        return current

    async def get(self, code: str) -> InstrumentInfo | None:
        """The instrument with this bus code (`A005930`), or None if the master has none."""
        return (await self.snapshot()).get(code)

    def cached(self) -> CatalogSnapshot | None:
        """The current copy without waiting for anything: None while none was loaded. Starts a
        load in the background when there is none or it is due, so that a path that never
        waits (quote reads, which must not depend on the database) still keeps it fresh."""
        # Due at once before the first load; after a failed one, one interval later.
        if (self._stale or self._clock() >= self._due_at) and self._loading is None:
            self._start_load()
        return self._snapshot

    def peek(self, code: str) -> InstrumentInfo | None:
        """Like `get` without any I/O or wait: the last loaded copy, None before the first."""
        return None if self._snapshot is None else self._snapshot.get(code)

    async def load(self) -> CatalogSnapshot:
        """Read the master now (the app's startup hook): the database's own error if it
        cannot, so that the startup retries it in the background (api.startup)."""
        return await asyncio.shield(self._start_load())

    def invalidate(self) -> None:
        """The master changed (an import in this process): the next `snapshot()` reloads."""
        self._stale = True

    def _start_load(self) -> asyncio.Task[CatalogSnapshot]:
        if self._loading is None:
            self._loading = asyncio.create_task(self._read(), name="instruments-refresh")
            self._loading.add_done_callback(self._loaded)
        return self._loading

    async def _load(self) -> CatalogSnapshot:
        try:
            # shield: one caller going away must not cancel the load the others wait for.
            return await asyncio.shield(self._start_load())
        except Exception as exc:  # the database's errors: logged in _loaded
            raise CatalogUnavailable(
                "the instruments master cannot be read now; try again shortly") from exc

    async def _read(self) -> CatalogSnapshot:
        self._stale = False  # an invalidation from now on needs another read
        started = self._clock()
        instruments = await self._db.read(read_instruments)
        return CatalogSnapshot(instruments, started)

    def _loaded(self, task: asyncio.Task[CatalogSnapshot]) -> None:
        self._loading = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # Keep serving the last copy; try again one interval from now, not per request.
            self._due_at = self._clock() + self._refresh_s
            logger.warning("instruments: the master could not be read (%s: %s); %s",
                           type(exc).__name__, exc,
                           "serving the last copy" if self._snapshot else "none loaded yet")
            return
        self._snapshot = task.result()
        self._due_at = self._snapshot.loaded_at + self._refresh_s
        logger.debug("instruments: %d loaded", len(self._snapshot))
