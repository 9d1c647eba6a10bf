"""payments credit the portfolio chosen at prepare (issue 15)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29

- payments.account_id (NOT NULL, FK users.id): the account a payment's virtual cash credits and
  a refund takes back from, the portfolio chosen at prepare (api.payments). `user_id` stays the
  payer: payments are listed per user, and premium days are the user's.

Every existing payment credited its payer's own account, the default portfolio's (migration
0015), so `account_id = user_id` for all of them: what was credited and clawed back stays where
it is. Added nullable, filled, then made NOT NULL, in batches so that SQLite (which cannot alter
a column) rebuilds the table.

No index of its own: nothing looks payments up by account (they are listed by `user_id`, and
synced by `payment_id`). MariaDB keeps the index a foreign key needs by itself.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# A frozen copy of the model type: a migration must not change when the models do.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("account_id", BIG_ID, nullable=True))
    op.execute("UPDATE payments SET account_id = user_id")
    with op.batch_alter_table("payments") as batch:
        batch.alter_column("account_id", existing_type=BIG_ID, nullable=False)
        batch.create_foreign_key(op.f("fk_payments_account_id_users"), "users",
                                 ["account_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.drop_constraint(op.f("fk_payments_account_id_users"), type_="foreignkey")
        batch.drop_column("account_id")
