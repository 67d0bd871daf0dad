"""Executions keep PagerDuty's ``event.id``, unique per instance and flow: a captured
signed delivery sent again under a new ``X-Webhook-Id`` is recognised and starts no
second run. Test runs, replays and retries leave it empty (NULLs never collide).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    """Add the nullable ``event_id`` column and its unique index."""
    with op.batch_alter_table("executions") as table:
        table.add_column(sa.Column("event_id", sa.String(200), nullable=True))
    op.create_index(
        "uq_execution_event", "executions", ["instance_id", "flow", "event_id"], unique=True
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("uq_execution_event", table_name="executions")
    with op.batch_alter_table("executions") as table:
        table.drop_column("event_id")
