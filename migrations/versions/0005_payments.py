"""payments, handled webhooks, premium status and clawbacks owed

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when the models do.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("product_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("order_name", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("credit", sa.BigInteger(), nullable=False),
        sa.Column("premium_days", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("portone_status", sa.String(length=32), nullable=True),
        sa.Column("cancelled_amount", sa.BigInteger(), nullable=False),
        sa.Column("clawed_back", sa.BigInteger(), nullable=False),
        sa.Column("premium_revoked_s", sa.BigInteger(), nullable=False),
        sa.Column("mismatch", sa.String(length=255), nullable=True),
        sa.Column("paid_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_amount_positive")),
        sa.CheckConstraint("cancelled_amount >= 0 AND cancelled_amount <= amount",
                           name=op.f("ck_payments_cancelled_within_amount")),
        sa.CheckConstraint("credit >= 0 AND clawed_back >= 0 AND clawed_back <= credit",
                           name=op.f("ck_payments_clawed_back_within_credit")),
        sa.CheckConstraint("premium_days >= 0 AND premium_revoked_s >= 0",
                           name=op.f("ck_payments_premium_not_negative")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_payments_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_payments_payment_id")),
    )
    op.create_index("ix_payments_user_id_id", "payments", ["user_id", "id"])
    op.create_table(
        "webhook_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("webhook_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("webhook_id", name=op.f("uq_webhook_events_webhook_id")),
    )
    with op.batch_alter_table("users") as users:
        users.add_column(sa.Column("premium_until", sa.DateTime(), nullable=True))
    with op.batch_alter_table("accounts") as accounts:
        accounts.add_column(sa.Column("clawback_due", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        accounts.create_check_constraint(op.f("ck_accounts_clawback_due_not_negative"),
                                         "clawback_due >= 0")


def downgrade() -> None:
    with op.batch_alter_table("accounts") as accounts:
        accounts.drop_constraint(op.f("ck_accounts_clawback_due_not_negative"), type_="check")
        accounts.drop_column("clawback_due")
    with op.batch_alter_table("users") as users:
        users.drop_column("premium_until")
    op.drop_table("webhook_events")
    op.drop_index("ix_payments_user_id_id", table_name="payments")
    op.drop_table("payments")
