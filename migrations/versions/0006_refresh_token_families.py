"""refresh token families: rotation, reuse detection and logout

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

Refresh tokens issued before this revision carry no family and are refused by /auth/refresh
(401 `invalid_token`): their holders log in again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when the models do.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "refresh_token_families",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_reason", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_refresh_token_families_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_token_families")),
    )
    op.create_index(op.f("ix_refresh_token_families_user_id"), "refresh_token_families",
                    ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_refresh_token_families_user_id"),
                  table_name="refresh_token_families")
    op.drop_table("refresh_token_families")
