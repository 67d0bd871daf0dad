"""OAuth consent: one row per started consent, single use, with its sealed PKCE verifier.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    """Create ``oauth_states``."""
    op.create_table(
        "oauth_states",
        sa.Column("state", sa.String(100), primary_key=True),
        sa.Column("connection_id", sa.String(64), nullable=False, index=True),
        sa.Column("verifier", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("oauth_states")
