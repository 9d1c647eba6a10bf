"""daily snapshots: each account at each trading day's close (issue 15)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29

- account_snapshots: one row per (user, trading day), written by the fills worker's snapshot
  job after the day's close (api.performance.snapshots): cash, market value and equity at the
  quotes of `priced_at`, the previous snapshot's equity (`base_equity`), the flows, fees and
  taxes of the ledger rows since the previous snapshot (up to `ledger_upto`), the cumulative
  realized P&L, how many positions lacked a quote, and whether it was taken late (after the
  next trading day began). UNIQUE (user_id, day): a rerun, or a second worker, never writes a
  day twice; and the history reads a user's days through it.

Nothing is backfilled: the job's first run snapshots the latest closed trading day, whose rows
count everything since each account was opened (docs/api/PERFORMANCE.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when the models do.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account_snapshots",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("cash", sa.BigInteger(), nullable=False),
        sa.Column("market_value", sa.BigInteger(), nullable=False),
        sa.Column("equity", sa.BigInteger(), nullable=False),
        sa.Column("base_equity", sa.BigInteger(), nullable=False),
        sa.Column("net_flows", sa.BigInteger(), nullable=False),
        sa.Column("realized_pnl", sa.BigInteger(), nullable=False),
        sa.Column("fees", sa.BigInteger(), nullable=False),
        sa.Column("taxes", sa.BigInteger(), nullable=False),
        sa.Column("ledger_upto", sa.BigInteger(), nullable=False),
        sa.Column("unpriced_positions", sa.Integer(), nullable=False),
        sa.Column("priced_at", sa.DateTime(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_account_snapshots_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_snapshots")),
        sa.UniqueConstraint("user_id", "day", name="uq_account_snapshots_user_id_day"),
    )
    op.create_index("ix_account_snapshots_day", "account_snapshots", ["day"])


def downgrade() -> None:
    op.drop_index("ix_account_snapshots_day", table_name="account_snapshots")
    op.drop_table("account_snapshots")
