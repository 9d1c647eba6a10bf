"""The simulator's instruments, from the KRX master files (`relayer.master`) the API reads too.

`instruments_of` turns master records into the plain mapping `relayer.sim.market.Market` takes:
code -> (base price, `PriceRules` of its market and security kind). `load_instruments` reads the
files; it is called once, by the entry point, before the event loop starts, never per tick. A
file that cannot be read or parsed raises (`OSError`, `MasterFormatError`): the simulator must
not start on prices it was not meant to print.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from relayer.krx import price_rules
from relayer.master import MasterFile, MasterFormatError, MasterRecord, by_code, read_master
from relayer.sim.market import Instrument

log = logging.getLogger(__name__)


def instruments_of(records: Iterable[MasterRecord]) -> dict[str, Instrument]:
    """Each record's base price (None when the file gives none) and price rules, by bus code.

    Halted records are kept: the simulator plays the market, not the listing status, and the
    API refuses orders for them on its own (api.instruments).
    """
    return {
        record.code: Instrument(record.base_price, price_rules(record.market, record.kind))
        for record in records
    }


def load_instruments(paths: Sequence[Path]) -> dict[str, Instrument]:
    """The instruments of the given master files (`.mst` or `.mst.gz`); empty for no paths.
    Raises `OSError` or `MasterFormatError`, naming the file."""
    files: list[MasterFile] = []
    for path in paths:
        try:
            files.append(read_master(path))
        except MasterFormatError as exc:
            raise MasterFormatError(f"{path}: {exc}") from exc
    instruments = instruments_of(by_code(files).values())
    for master in files:
        if master.skipped:
            log.warning("%s master: %d records skipped (first: line %d, %s)", master.market,
                        len(master.skipped), *master.skipped[0])
    log.info("simulator instruments: %d from %d master files (%s)", len(instruments), len(files),
             ", ".join(path.name for path in paths) or "none: every code synthetic")
    return instruments
