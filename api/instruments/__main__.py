"""`python -m api.instruments import FILE...`: import Korea Investment's master files
(`kospi_code.mst`, `kosdaq_code.mst`, `konex_code.mst`, plain or gzipped) into `instruments`,
and print what changed. `--shipped` imports the copies shipped in relayer/master_files/
(start_services.sh does, cheaply when nothing changed). Only DATABASE_URL is read, as for
`python -m api.migrate`. API workers see the result within INSTRUMENTS_REFRESH_S.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from api.db import Database, make_engine
from api.instruments.importer import import_files
from api.settings import DatabaseSettings
from relayer.master import MasterFormatError, shipped_paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.instruments")
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser("import", help="import master files")
    importing.add_argument("files", nargs="*", type=Path,
                           help="kospi_code.mst, kosdaq_code.mst, konex_code.mst (or .mst.gz)")
    importing.add_argument("--shipped", action="store_true",
                           help="the files shipped in relayer/master_files/")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths: list[Path] = list(arguments.files) + (shipped_paths() if arguments.shipped else [])
    if not paths:
        parser.error("name the files to import, or --shipped")
    db = Database(make_engine(DatabaseSettings().database_url, pool_size=1))
    try:
        report = db.call(import_files, paths)
    except (OSError, MasterFormatError, ValueError) as exc:
        print(f"import failed, nothing changed: {exc}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    print(report.summary())
    for code, old, new in report.renamed:
        print(f"  renamed {code}: {old} -> {new}")
    if report.added:
        print(f"  added: {' '.join(report.added[:50])}{' ...' if len(report.added) > 50 else ''}")
    if report.delisted:
        print(f"  delisted: {' '.join(report.delisted)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
