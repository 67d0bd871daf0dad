"""A retry records which flow it runs: ``flow_version`` is ``deployed`` (the flow the
failed run ran) or ``current`` (the instance's flow at the retry), and
``flow_definition`` that flow when it is not the one the run first planned. Empty for
every run that is not a retry.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    """Add the two nullable columns."""
    with op.batch_alter_table("executions") as table:
        table.add_column(sa.Column("flow_version", sa.String(16), nullable=True))
        table.add_column(sa.Column("flow_definition", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("executions") as table:
        table.drop_column("flow_definition")
        table.drop_column("flow_version")
