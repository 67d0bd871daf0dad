"""A key/value store per instance, for flows (the ``state`` step): a value as JSON, an
optional expiry, and a version that makes a change conditional (an increment is atomic
across runs and replicas).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    """Create ``state``."""
    op.create_table(
        "state",
        sa.Column("instance_id", sa.String(100), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.JSON, nullable=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_state_expires_at", "state", ["expires_at"])


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_state_expires_at", table_name="state")
    op.drop_table("state")
