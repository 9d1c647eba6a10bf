"""`alembic upgrade head` on an empty database leaves no difference from the models."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from api.models import Base
from tests.support.databases import fresh_sqlite_database


def drift(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    return list(differences)


def test_sqlite_migrations_match_the_models(tmp_path: Path) -> None:
    with fresh_sqlite_database(tmp_path) as url:
        assert drift(url) == []


def test_mysql_migrations_match_the_models(mysql_database_url: str) -> None:
    assert drift(mysql_database_url) == []


def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    from api.migrate import upgrade

    with fresh_sqlite_database(tmp_path) as url:
        upgrade(url, configure_logging=False)  # already at head: nothing to do, no error
        assert drift(url) == []
