"""accounts keep the commissions and sell taxes paid, as running totals

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

`GET /api/v1/account` shows them; summing a user's FEE and TAX ledger rows on every read cost
15 ms for a user with 25,000 fills on MariaDB and grows with the history, so `post()` keeps them
next to `cash`, and the invariant checks hold them to the ledger. Filled here from the ledger.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("fees_paid", sa.BigInteger(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("taxes_paid", sa.BigInteger(), nullable=False,
                                   server_default="0"))
    for column, ledger_type in (("fees_paid", "FEE"), ("taxes_paid", "TAX")):
        op.execute(
            f"UPDATE accounts SET {column} = COALESCE((SELECT -SUM(amount) FROM ledger_entries "
            f"WHERE ledger_entries.user_id = accounts.user_id "
            f"AND ledger_entries.type = '{ledger_type}'), 0)")


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("taxes_paid")
        batch.drop_column("fees_paid")
