"""`python -m api.migrate`: bring the SQL schema to the newest migration (alembic upgrade head).

Used by start_services.sh, the compose file's migrations service and the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from api.settings import DatabaseSettings

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "migrations" / "alembic.ini"


def alembic_config(database_url: str, *, configure_logging: bool = True) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = configure_logging
    return config


def upgrade(database_url: str, *, configure_logging: bool = True) -> None:
    command.upgrade(alembic_config(database_url, configure_logging=configure_logging), "head")


def main() -> int:
    # Only DATABASE_URL: a migrations job needs no JWT key or Redis.
    upgrade(DatabaseSettings().database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
