"""portfolio resets (issue 15)

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29

- portfolio_resets: one row per `POST /api/v1/portfolios/{id}/reset` (api.portfolios.reset):
  when, and what the account held just before (cash, the positions at their closing prices,
  their sum) and the cash it was set to; how many orders were cancelled and positions closed.
  The history and the stats mark a reset with it. The money itself moves through the
  account's usual rows: the orders' cancellations, the closing fills (rule `portfolio_reset`,
  no commission, no tax) and one ledger row of the new type RESET, so nothing here is needed
  to check an account's invariants.

Ledger types and fill rules are plain strings (no enum or CHECK in SQL): RESET and
`portfolio_reset` need no schema change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when the models do.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "portfolio_resets",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("portfolio_id", BIG_ID, nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("reset_at", sa.DateTime(), nullable=False),
        sa.Column("cash_before", sa.BigInteger(), nullable=False),
        sa.Column("market_value_before", sa.BigInteger(), nullable=False),
        sa.Column("equity_before", sa.BigInteger(), nullable=False),
        sa.Column("cash_after", sa.BigInteger(), nullable=False),
        sa.Column("orders_cancelled", sa.Integer(), nullable=False),
        sa.Column("positions_closed", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["portfolio_id"], ["portfolios.id"], ondelete="CASCADE",
                                name=op.f("fk_portfolio_resets_portfolio_id_portfolios")),
        sa.ForeignKeyConstraint(["account_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_portfolio_resets_account_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portfolio_resets")),
    )
    op.create_index("ix_portfolio_resets_account_id_id", "portfolio_resets",
                    ["account_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_portfolio_resets_account_id_id", table_name="portfolio_resets")
    op.drop_table("portfolio_resets")
