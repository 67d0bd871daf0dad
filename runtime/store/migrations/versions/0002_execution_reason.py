"""Executions get a ``reason``: why a delivery ran no steps (ping, unselected, disabled).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    """Add the nullable ``reason`` column."""
    op.add_column("executions", sa.Column("reason", sa.Text, nullable=True))


def downgrade() -> None:
    """Drop it again."""
    op.drop_column("executions", "reason")
