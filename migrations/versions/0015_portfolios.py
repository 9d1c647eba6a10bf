"""several portfolios per user (issue 15)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29

- portfolios: a user's portfolios (api.portfolios). A portfolio's money, orders and history are
  its account's: a users row, the owner himself for the default portfolio and a new
  `portfolio`-role user for any other. `account_id` is UNIQUE (an account is one portfolio's);
  `deleted_at` marks a deleted portfolio, whose account keeps its rows. Both foreign keys
  cascade: deleting a user (an operator's SQL) deletes his portfolios' rows, as it does his
  refresh tokens; the money rows of the accounts never cascade.

Every existing user gets its default portfolio: account_id = owner_id = the user's id, named
"기본 포트폴리오", created when the user was (it is the account the user has had since then).
Nothing else changes: every row keyed by a user id is now that portfolio's.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# Frozen copies of the model types and of the default name: a migration must not change when
# the code does.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DEFAULT_NAME = "기본 포트폴리오"


def upgrade() -> None:
    op.create_table(
        "portfolios",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("owner_id", BIG_ID, nullable=False),
        sa.Column("account_id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_portfolios_owner_id_users")),
        sa.ForeignKeyConstraint(["account_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_portfolios_account_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portfolios")),
        sa.UniqueConstraint("account_id", name=op.f("uq_portfolios_account_id")),
    )
    op.create_index("ix_portfolios_owner_id", "portfolios", ["owner_id"])
    op.get_bind().execute(sa.text(
        "INSERT INTO portfolios (owner_id, account_id, name, is_default, created_at) "
        "SELECT id, id, :name, :is_default, created_at FROM users ORDER BY id"),
        {"name": DEFAULT_NAME, "is_default": True})


def downgrade() -> None:
    op.drop_index("ix_portfolios_owner_id", table_name="portfolios")
    op.drop_table("portfolios")
