"""realized P&L of each sale, on its fill (issue 15)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29

- fills.cost_basis_sold: the part of its position's book cost a sale took (NULL on buys).
- fills.realized_pnl: the sale's realized P&L, value - commission - tax - cost_basis_sold
  (NULL on buys). From now on api.orders.execution.sell_from sets both, in the update that
  moves the position's cost_basis and realized_pnl, so that a position's realized P&L is the
  sum of its sales' (tests/support/invariants.py).

Earlier sales are filled in by replaying each (user, code)'s fills in id order with the
average-cost rules apply_fill has applied since positions exist (migration 0004): a buy adds
its value plus commission to the book cost; a sale takes the sold shares' part of it, rounded
down (all of it with the last share). The replay is written out here on purpose, not imported:
a migration must not change when the code does.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

logger = logging.getLogger("alembic.runtime.migration")

# Fills read per page (by id), whose sales are then updated in one executemany: memory stays
# bounded on a large table, and no read cursor is open while the table is written.
PAGE = 5000


def upgrade() -> None:
    with op.batch_alter_table("fills") as batch:
        batch.add_column(sa.Column("cost_basis_sold", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("realized_pnl", sa.BigInteger(), nullable=True))
    # GET /api/v1/fills without a code: a user's fills newest first, read from an index.
    op.create_index("ix_fills_user_id_id", "fills", ["user_id", "id"])
    _replay_sales()


def _replay_sales() -> None:
    """Each sale's book cost and P&L from the fills before it, oldest first (module doc)."""
    connection = op.get_bind()
    page = sa.text("SELECT id, user_id, code, side, quantity, value, commission, tax "
                   "FROM fills WHERE id > :after ORDER BY id LIMIT :page")
    update = sa.text("UPDATE fills SET cost_basis_sold = :cost, realized_pnl = :pnl "
                     "WHERE id = :id")
    # Per (user, code): shares held and their book cost; the realized P&L of its sales.
    held: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    realized: dict[tuple[int, str], int] = defaultdict(int)
    after = 0
    while fills := connection.execute(page, {"after": after, "page": PAGE}).all():
        sales: list[dict[str, int]] = []
        for fill_id, user_id, code, side, quantity, value, commission, tax in fills:
            position = held[user_id, code]
            if side == "BUY":
                position[0] += quantity
                position[1] += value + commission
                continue
            shares, cost = position
            cost_sold = cost if quantity >= shares else cost * quantity // shares
            position[0] = max(0, shares - quantity)
            position[1] = cost - cost_sold
            pnl = value - commission - tax - cost_sold
            realized[user_id, code] += pnl
            sales.append({"id": fill_id, "cost": cost_sold, "pnl": pnl})
        if sales:
            connection.execute(update, sales)
        after = fills[-1][0]
    _report_disagreements(connection, realized)


def _report_disagreements(connection: sa.Connection,
                          realized: dict[tuple[int, str], int]) -> None:
    """Say so when a position's realized P&L is not the sum of its replayed sales (a row
    changed by hand, say): the fills keep the replay, which is what the rules give."""
    differ = [(user_id, code) for user_id, code, pnl in connection.execute(sa.text(
        "SELECT user_id, code, realized_pnl FROM positions"))
        if pnl != realized.get((user_id, code), 0)]
    if differ:
        logger.warning("0013: %d position(s) whose realized P&L is not the sum of their "
                       "replayed sales, e.g. (user, code) %s", len(differ), differ[:5])


def downgrade() -> None:
    op.drop_index("ix_fills_user_id_id", table_name="fills")
    with op.batch_alter_table("fills") as batch:
        batch.drop_column("realized_pnl")
        batch.drop_column("cost_basis_sold")
