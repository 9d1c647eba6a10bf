"""portfolio resets (issue 15)

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29

A slot kept for work in progress: it changes nothing yet.
"""

from __future__ import annotations

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
