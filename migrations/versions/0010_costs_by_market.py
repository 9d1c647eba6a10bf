"""tax components per fill, the market and kind an order trades, and the fee-free purchase
value of positions (issue 12)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28

- orders.market, orders.security_kind: a sale's taxes depend on them (api.market.taxes); filled
  from the instruments master, KOSPI stock where the code is not in it.
- fills.securities_transaction_tax, fills.rural_special_tax: the two taxes of a sale, each
  rounded down to the won. Fills made before this revision had one tax at one rate: it is
  recorded as securities transaction tax, and the rural special tax as 0.
- positions.purchase_value: what the shares held were bought for without commissions
  (매입평균가 = purchase_value / quantity), rebuilt by replaying each position's fills in order
  with the rule api.orders.execution.apply_fill applies.
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("market", sa.String(8), nullable=False,
                                   server_default="KOSPI"))
        batch.add_column(sa.Column("security_kind", sa.String(16), nullable=False,
                                   server_default="STOCK"))
    for column, source in (("market", "market"), ("security_kind", "kind")):
        op.execute(
            f"UPDATE orders SET {column} = (SELECT instruments.{source} FROM instruments "
            f"WHERE instruments.code = orders.code) "
            f"WHERE EXISTS (SELECT 1 FROM instruments WHERE instruments.code = orders.code)")

    with op.batch_alter_table("fills") as batch:
        batch.add_column(sa.Column("securities_transaction_tax", sa.BigInteger(),
                                   nullable=False, server_default="0"))
        batch.add_column(sa.Column("rural_special_tax", sa.BigInteger(), nullable=False,
                                   server_default="0"))
    op.execute("UPDATE fills SET securities_transaction_tax = tax")

    with op.batch_alter_table("positions") as batch:
        batch.add_column(sa.Column("purchase_value", sa.BigInteger(), nullable=False,
                                   server_default="0"))
    _replay_purchase_values()
    with op.batch_alter_table("positions") as batch:
        batch.create_check_constraint("purchase_value_within_cost_basis",
                                      "purchase_value >= 0 AND purchase_value <= cost_basis")


def _replay_purchase_values() -> None:
    """Each position's purchase value from its fills, oldest first: a buy adds its value, a
    sale removes the sold shares' share of it, rounded down (all of it when all are sold)."""
    connection = op.get_bind()
    fills = connection.execute(sa.text(
        "SELECT user_id, code, side, quantity, value FROM fills ORDER BY id"))
    held: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])  # quantity, value
    for user_id, code, side, quantity, value in fills:
        position = held[user_id, code]
        if side == "BUY":
            position[0] += quantity
            position[1] += value
        elif position[0] > 0:
            sold = (position[1] if quantity >= position[0]
                    else position[1] * quantity // position[0])
            position[0] -= min(quantity, position[0])
            position[1] -= sold
    for (user_id, code), (_, value) in held.items():
        if value:
            # Never above the book cost (the CHECK below); equal or below by construction.
            connection.execute(sa.text(
                "UPDATE positions SET purchase_value = CASE WHEN :value < cost_basis "
                "THEN :value ELSE cost_basis END WHERE user_id = :user_id AND code = :code"),
                {"value": value, "user_id": user_id, "code": code})


def downgrade() -> None:
    with op.batch_alter_table("positions") as batch:
        batch.drop_constraint("purchase_value_within_cost_basis", type_="check")
        batch.drop_column("purchase_value")
    with op.batch_alter_table("fills") as batch:
        batch.drop_column("rural_special_tax")
        batch.drop_column("securities_transaction_tax")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("security_kind")
        batch.drop_column("market")
