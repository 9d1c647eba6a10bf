"""SQL databases for tests: a fresh MariaDB/MySQL database per test when a server is reachable
(TEST_DATABASE_URL, default mysql+pymysql://root@127.0.0.1:3306/test), else a SQLite file."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from api.migrate import upgrade

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
    server = make_url(MYSQL_SERVER_URL)
    name = f"stocking_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url, configure_logging=False)
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@contextmanager
def fresh_sqlite_database(folder: Path) -> Iterator[str]:
    url = f"sqlite:///{folder / 'stocking.db'}"
    upgrade(url, configure_logging=False)
    yield url
