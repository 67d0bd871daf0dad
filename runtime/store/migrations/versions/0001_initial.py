"""Initial schema: connections, instances, executions, webhook subscriptions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the four tables."""
    op.create_table(
        "connections",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("secrets", sa.Text, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column(
            "connection_id",
            sa.String(64),
            sa.ForeignKey("connections.id", ondelete="RESTRICT"),
            nullable=True,
        ),
        sa.Column("flows", sa.JSON, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "executions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(100), nullable=False, index=True),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("webhook_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("received_body", sa.Text, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("response_status", sa.Integer, nullable=True),
        sa.Column("trigger", sa.JSON, nullable=True),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.UniqueConstraint("instance_id", "webhook_id", name="uq_execution_webhook"),
    )
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(100), nullable=False, index=True),
        sa.Column("flow", sa.String(200), nullable=False),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.UniqueConstraint("instance_id", "flow", "subscription_id"),
    )


def downgrade() -> None:
    """Drop the four tables."""
    for table in ("webhook_subscriptions", "executions", "instances", "connections"):
        op.drop_table(table)
