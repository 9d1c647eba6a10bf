"""the KRX instruments master (issue 12)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28

Creates `instruments` and loads the master files shipped in relayer/master_files/, so that
every new database (the tests' templates included) knows every instrument at once. Operators
refresh it daily with `python -m api.instruments import` (docs/OPERATIONS.md). The rows are
built here from the parser (relayer.master) and the initials function, not from the model, so
that later columns cannot change what this revision inserts.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from api.instruments.hangul import initials
from relayer.master import by_code, read_master, shipped_paths

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "instruments",
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("isin", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("name_en", sa.String(length=128), nullable=True),
        sa.Column("market", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("base_price", sa.BigInteger(), nullable=True),
        sa.Column("market_cap", sa.BigInteger(), nullable=True),
        sa.Column("initials", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("status IN ('LISTED', 'HALTED', 'DELISTED')",
                           name=op.f("ck_instruments_status_known")),
        sa.CheckConstraint("market IN ('KOSPI', 'KOSDAQ', 'KONEX')",
                           name=op.f("ck_instruments_market_known")),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_instruments")),
    )
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    records = by_code([read_master(path) for path in shipped_paths()])
    op.bulk_insert(table, [
        {"code": record.code, "isin": record.isin, "name": record.name, "name_en": None,
         "market": record.market.value, "kind": record.kind.value,
         "status": record.status.value, "base_price": record.base_price,
         "market_cap": record.market_cap, "initials": initials(record.name), "updated_at": now}
        for record in records.values()
    ])


def downgrade() -> None:
    op.drop_table("instruments")
