"""how each fill was priced, and one trade print's volume shared by every order it fills (issue 12)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28

`fills.rule` names the rule that set a fill's price (api.models.FillRule). Earlier fills are
labelled by what they were: a fill made in its request (`tick_id` `quote:{seq}`) of a market
order `market_order_last_trade`, of a limit order `aggressor_last_trade`; a fill from the
stream `resting_limit`. (Limit orders filled in their request before the aggressor rule were
priced at their limit; their price says so.)

`trade_prints` counts, per print and side, what limit orders have taken of its volume
(api.orders.prints). Filled here from the fills already made, with the volume they gave as the
print's volume (the print's own was not kept): a print processed again after the upgrade (a
pending stream entry) gives nothing more, rather than giving its volume a second time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trade_prints",
        sa.Column("print_id", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=True),
        sa.Column("volume", sa.BigInteger(), nullable=False),
        sa.Column("consumed", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("consumed >= 0 AND consumed <= volume",
                           name=op.f("ck_trade_prints_consumed_within_volume")),
        sa.PrimaryKeyConstraint("print_id", "side", name=op.f("pk_trade_prints")),
    )
    op.create_index("ix_trade_prints_created_at", "trade_prints", ["created_at"])
    with op.batch_alter_table("fills") as batch:
        batch.add_column(sa.Column("rule", sa.String(length=32), nullable=False,
                                   server_default="resting_limit"))
    op.execute(
        "UPDATE fills SET rule = CASE WHEN order_id IN "
        "(SELECT id FROM orders WHERE type = 'MARKET') THEN 'market_order_last_trade' "
        "ELSE 'aggressor_last_trade' END WHERE tick_id LIKE 'quote:%'")
    with op.batch_alter_table("fills") as batch:
        batch.alter_column("rule", existing_type=sa.String(length=32), existing_nullable=False,
                           server_default=None)
    op.execute(
        "INSERT INTO trade_prints (print_id, side, code, price, volume, consumed, created_at) "
        "SELECT tick_id, side, MIN(code), NULL, SUM(quantity), SUM(quantity), MIN(created_at) "
        "FROM fills "
        "WHERE rule <> 'market_order_last_trade' GROUP BY tick_id, side")


def downgrade() -> None:
    with op.batch_alter_table("fills") as batch:
        batch.drop_column("rule")
    op.drop_index("ix_trade_prints_created_at", table_name="trade_prints")
    op.drop_table("trade_prints")
