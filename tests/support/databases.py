"""SQL databases for tests: MariaDB/MySQL when a server is reachable (TEST_DATABASE_URL, default
mysql+pymysql://root@127.0.0.1:3306/test), else SQLite files.

Migrating a new database costs ~130 ms of alembic per test, most of the setup of an API test. So
each test worker migrates once: `ReusedMySQLDatabase` is one migrated database emptied before each
test (what a fresh one holds: nothing but the instruments master that migration 0008 loads, and
counters at 1), `SQLiteTemplate` one migrated file
copied for each test. `fresh_mysql_database` / `fresh_sqlite_database` remain for what needs a
database of its own (a module-scoped app, the migration checks).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api.instruments.importer import import_files
from api.migrate import upgrade
from relayer.master import shipped_paths

MYSQL_SERVER_URL = os.environ.get("TEST_DATABASE_URL",
                                  "mysql+pymysql://root@127.0.0.1:3306/test")


@functools.cache
def mysql_unreachable_reason() -> str | None:
    """None when the MySQL/MariaDB server answers, else why not (said loudly by the tests)."""
    try:
        engine = create_engine(MYSQL_SERVER_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except (OperationalError, ImportError) as exc:
        return f"no MySQL/MariaDB at {make_url(MYSQL_SERVER_URL).render_as_string()}: {exc}"


@contextmanager
def fresh_mysql_database() -> Iterator[str]:
    """A new, empty, migrated database on the MySQL/MariaDB server; dropped afterwards."""
    with empty_mysql_database() as url:
        upgrade(url, configure_logging=False)
        yield url


@contextmanager
def empty_mysql_database() -> Iterator[str]:
    """A new database without any table (for a migration test to take step by step)."""
    server = make_url(MYSQL_SERVER_URL)
    name = f"stocking_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@contextmanager
def fresh_sqlite_database(folder: Path, name: str = "stocking.db") -> Iterator[str]:
    url = f"sqlite:///{folder / name}"
    upgrade(url, configure_logging=False)
    yield url


# Tables the migrations fill (the instruments master): kept between tests, not TRUNCATEd, and
# put back as migrated when a test changed them.
REFERENCE_TABLES = ("instruments",)


class ReusedMySQLDatabase:
    """One migrated database on the MySQL/MariaDB server, emptied for each test that asks."""

    def __init__(self) -> None:
        self._fresh = fresh_mysql_database()
        self.url = self._fresh.__enter__()
        self._engine: Engine = create_engine(self.url)
        self._tables = [name for name in inspect(self._engine).get_table_names()
                        if name not in ("alembic_version", *REFERENCE_TABLES)]
        self._reference = self._checksums()
        self._dirty = False
        self._test: str | None = None

    def emptied(self, test: str) -> str:
        """The database's URL, with every table as a fresh migration leaves it; emptied once
        per test (`test` is its node id), however many of its fixtures ask."""
        if test == self._test:
            return self.url
        self._test = test
        if self._dirty:
            with self._engine.begin() as connection:
                # A test that leaked an open transaction would make TRUNCATE wait forever.
                connection.execute(text("SET SESSION lock_wait_timeout = 20"))
                connection.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
                for table in self._used_tables(connection):
                    # TRUNCATE, not DELETE: AUTO_INCREMENT starts at 1 again, as in a new table.
                    connection.execute(text(f"TRUNCATE TABLE `{table}`"))
                connection.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
            if self._checksums() != self._reference:
                self._reload_master()
        self._dirty = True
        return self.url

    def _checksums(self) -> dict[str, int]:
        with self._engine.connect() as connection:
            return {table: connection.execute(text(f"CHECKSUM TABLE `{table}`")).one()[1]
                    for table in REFERENCE_TABLES}

    def _reload_master(self) -> None:
        """A test changed the instruments master that migration 0008 loads: put the shipped
        one back (the rows are equal but for `updated_at`, hence the new checksum)."""
        with Session(self._engine) as session, session.begin():
            session.execute(text("DELETE FROM instruments"))
            import_files(session, shipped_paths())
        self._reference = self._checksums()

    def _used_tables(self, connection: Any) -> list[str]:
        # TRUNCATE costs ~1.5 ms a table even when empty; most tests touch a few tables.
        counters = dict(connection.execute(text(
            "SELECT TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE()")).all())
        return [table for table in self._tables
                if (counters.get(table) or 1) > 1
                or connection.execute(text(f"SELECT 1 FROM `{table}` LIMIT 1")).first()]

    def drop(self) -> None:
        self._engine.dispose()
        self._fresh.__exit__(None, None, None)


class SQLiteTemplate:
    """One migrated SQLite file, copied for each test that asks."""

    def __init__(self, folder: Path) -> None:
        self._file = folder / "template.db"
        with fresh_sqlite_database(folder, name=self._file.name):
            pass
        # Everything into the one file, so that a copy of it is the whole database.
        with contextlib.closing(sqlite3.connect(self._file)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def copy_into(self, folder: Path) -> str:
        target = folder / "stocking.db"
        shutil.copyfile(self._file, target)
        return f"sqlite:///{target}"


@pytest.fixture(params=["sqlite", "mariadb"], name="database_url")
def database_url_on_both_backends(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """`database_url` for a module that imports this: every test runs on SQLite and on
    MariaDB (skipped, and saying so, where MariaDB is unreachable), instead of the one backend
    of tests/conftest.py."""
    if request.param == "sqlite":
        template: SQLiteTemplate = request.getfixturevalue("sqlite_template")
        return template.copy_into(tmp_path)
    reason = mysql_unreachable_reason()
    if reason is not None:
        pytest.skip(f"SKIPPED MySQL-only check: {reason}")
    reused: ReusedMySQLDatabase = request.getfixturevalue("reused_mysql_database")
    return reused.emptied(request.node.nodeid)
