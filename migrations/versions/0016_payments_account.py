"""payments credit the portfolio chosen at prepare (issue 15)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29

A slot kept for work in progress: it changes nothing yet.
"""

from __future__ import annotations

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
