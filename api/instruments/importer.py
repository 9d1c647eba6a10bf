"""Importing Korea Investment's master files into `instruments` (`python -m api.instruments
import FILE...`, api.instruments.__main__; docs/OPERATIONS.md, "The instruments master").

Every record is upserted; an instrument of an imported market that its file no longer lists
becomes DELISTED, never deleted (orders, fills and positions name it). One file is one whole
market: importing only `konex_code.mst` delists nothing on KOSPI or KOSDAQ. Idempotent: a second
import of the same files changes no row. `name_en` is never touched (the files have none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.instruments.hangul import initials
from api.models import Instrument, utc_now
from relayer.krx import Market
from relayer.master import ListingStatus, MasterFile, MasterRecord, by_code, read_master


@dataclass
class ImportReport:
    markets: list[Market]
    records: int = 0
    added: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)  # (code, old, new)
    delisted: list[str] = field(default_factory=list)
    relisted: list[str] = field(default_factory=list)  # DELISTED before, in the master again
    updated: int = 0  # rows changed in any field (the renamed and relisted among them)
    skipped_lines: int = 0  # lines that did not fit the layout
    without_bus_code: int = 0  # records with no `A` + 6 code (beneficiary certificates)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.delisted or self.updated)

    def summary(self) -> str:
        markets = ", ".join(market.value for market in self.markets)
        return (f"{markets}: {self.records} instruments; added {len(self.added)}, renamed "
                f"{len(self.renamed)}, delisted {len(self.delisted)}, relisted "
                f"{len(self.relisted)}, updated {self.updated}; skipped {self.skipped_lines} "
                f"unreadable lines and {self.without_bus_code} records without an A-code")


def _values(record: MasterRecord) -> dict[str, object]:
    return {"isin": record.isin, "name": record.name, "market": record.market.value,
            "kind": record.kind.value, "status": record.status.value,
            "base_price": record.base_price, "market_cap": record.market_cap,
            "initials": initials(record.name)}


def apply_master(session: Session, files: list[MasterFile], now: datetime) -> ImportReport:
    """Unit of work: upsert the records of `files`, delist what their markets no longer list."""
    markets = sorted({master.market for master in files})
    records = by_code(files)
    report = ImportReport(markets, records=len(records),
                          skipped_lines=sum(len(master.skipped) for master in files),
                          without_bus_code=sum(master.without_bus_code for master in files))
    rows = {row.code: row for row in session.scalars(select(Instrument).with_for_update())}
    for code, record in records.items():
        values = _values(record)
        row = rows.get(code)
        if row is None:
            session.add(Instrument(code=code, name_en=None, updated_at=now, **values))
            report.added.append(code)
            continue
        changes = {name: value for name, value in values.items()
                   if getattr(row, name) != value}
        if not changes:
            continue
        if "name" in changes:
            report.renamed.append((code, row.name, record.name))
        if row.status == ListingStatus.DELISTED:
            report.relisted.append(code)
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at = now
        report.updated += 1
    for code, row in rows.items():
        if (code not in records and Market(row.market) in markets
                and row.status != ListingStatus.DELISTED):
            row.status = ListingStatus.DELISTED.value
            row.updated_at = now
            report.delisted.append(code)
    return report


def read_files(paths: list[Path]) -> list[MasterFile]:
    """Parse master files (`.mst` or `.mst.gz`, the market from each name). One file a market:
    two files of one market would delist each other's instruments."""
    files = [read_master(path) for path in paths]
    markets = [master.market for master in files]
    repeated = {market for market in markets if markets.count(market) > 1}
    if repeated:
        raise ValueError(f"more than one file for {', '.join(sorted(repeated))}")
    return files


def import_files(session: Session, paths: list[Path]) -> ImportReport:
    """Unit of work: read and apply master files (the command line's import)."""
    return apply_master(session, read_files(paths), utc_now())
