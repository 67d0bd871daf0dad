"""Each runtime process's heartbeat, so the others can take over a dead one's runs.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    """Create ``executors``."""
    op.create_table(
        "executors",
        sa.Column("executor_id", sa.String(100), primary_key=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("executors")
