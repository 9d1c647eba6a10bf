"""intraday equity samples (issue 15)

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29

- intraday_snapshots: one row per (account, sample time), written by the fills worker's
  intraday job every INTRADAY_SAMPLE_INTERVAL_S while a session is on
  (api.performance.intraday): cash, market value and equity at the quotes, the account's last
  ledger row then (`ledger_upto`: the flows between two points are the rows between), and how
  many positions lacked a quote. PRIMARY KEY (user_id, at): a rerun, or a second worker, never
  writes a sample twice, and today's series of a user is one range of it. Indexed on `at` for
  the purge of rows older than INTRADAY_RETENTION_DAYS.

Nothing is backfilled: no price history is kept that could be replayed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when the models do.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "intraday_snapshots",
        sa.Column("user_id", BIG_ID, autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("cash", sa.BigInteger(), nullable=False),
        sa.Column("market_value", sa.BigInteger(), nullable=False),
        sa.Column("equity", sa.BigInteger(), nullable=False),
        sa.Column("ledger_upto", sa.BigInteger(), nullable=False),
        sa.Column("unpriced_positions", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_intraday_snapshots_user_id_users")),
        sa.PrimaryKeyConstraint("user_id", "at", name=op.f("pk_intraday_snapshots")),
    )
    op.create_index("ix_intraday_snapshots_at", "intraday_snapshots", ["at"])


def downgrade() -> None:
    op.drop_index("ix_intraday_snapshots_at", table_name="intraday_snapshots")
    op.drop_table("intraday_snapshots")
