"""user events: the outbox of each user's `orders` stream (issue 14)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29

- user_events: one row per order change, fill and cash movement, written in the transaction
  that makes the change; its id is the stream's offset (api.streams.events). AUTOINCREMENT on
  SQLite, so that an id is never handed out twice after the purge deletes the newest rows.
- user_event_watermarks: per user, the highest event id the purge deleted (the `reset` rule).

Nothing is backfilled: a stream starts with the changes made after this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Frozen copies of the model types: a migration must not change when the models do.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "user_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_user_events_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_events")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_user_events_user_id_id", "user_events", ["user_id", "id"])
    op.create_index("ix_user_events_created_at", "user_events", ["created_at"])
    op.create_table(
        "user_event_watermarks",
        sa.Column("user_id", BIG_ID, autoincrement=False, nullable=False),
        sa.Column("purged_upto", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_user_event_watermarks_user_id_users")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_event_watermarks")),
    )


def downgrade() -> None:
    op.drop_table("user_event_watermarks")
    op.drop_index("ix_user_events_created_at", table_name="user_events")
    op.drop_index("ix_user_events_user_id_id", table_name="user_events")
    op.drop_table("user_events")
