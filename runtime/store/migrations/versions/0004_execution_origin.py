"""Executions started by a retry or a replay point at the execution they came from.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    """Add ``retry_of`` and ``replay_of``."""
    with op.batch_alter_table("executions") as table:
        table.add_column(sa.Column("retry_of", sa.String(64), nullable=True))
        table.add_column(sa.Column("replay_of", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("executions") as table:
        table.drop_column("replay_of")
        table.drop_column("retry_of")
