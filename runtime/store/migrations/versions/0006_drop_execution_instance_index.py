"""Drop the executions' index on ``instance_id`` alone: the unique index on
(``instance_id``, ``webhook_id``) serves every lookup by instance, and each index is
one more write for every delivery recorded.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    """Drop ``ix_executions_instance_id``."""
    op.drop_index("ix_executions_instance_id", table_name="executions")


def downgrade() -> None:
    """Create it again."""
    op.create_index("ix_executions_instance_id", "executions", ["instance_id"])
