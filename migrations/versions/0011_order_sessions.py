"""orders follow the market session: reservation orders and the session an order was accepted
in (issue 13)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28

- orders.activates_at: when the fills worker activates a reservation order (status RESERVED),
  its trading day's opening auction; null for every other order.
- orders.session: the market session the order was accepted in. Orders placed before this
  revision were accepted in the only session there was, continuous trading.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("activates_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("session", sa.String(16), nullable=False,
                                   server_default="CONTINUOUS"))
        batch.create_index("ix_orders_status_activates_at", ["status", "activates_at"])


def downgrade() -> None:
    # RESERVED orders would mean nothing to the older code: they end as cancelled, and what
    # they hold is released as a user's cancel releases it (cash, or the shares' hold).
    op.execute("UPDATE accounts SET held_cash = held_cash - (SELECT COALESCE(SUM(o.held_cash), 0) "
               "FROM orders o WHERE o.user_id = accounts.user_id AND o.status = 'RESERVED')")
    op.execute("UPDATE positions SET held_quantity = held_quantity - (SELECT "
               "COALESCE(SUM(o.quantity - o.filled_quantity), 0) FROM orders o WHERE "
               "o.user_id = positions.user_id AND o.code = positions.code AND o.side = 'SELL' "
               "AND o.status = 'RESERVED')")
    op.execute("UPDATE orders SET status = 'CANCELLED', reason = 'user', held_cash = 0 "
               "WHERE status = 'RESERVED'")
    with op.batch_alter_table("orders") as batch:
        batch.drop_index("ix_orders_status_activates_at")
        batch.drop_column("session")
        batch.drop_column("activates_at")
