"""An execution's status holds ``succeeded_with_errors`` (21 characters): measured
before, PostgreSQL refused to record such a run's end (``varchar(20)``), and the run
was settled as failed by the sweeper. SQLite does not enforce the length.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    """Widen ``executions.status`` to 32 characters (PostgreSQL alters it in place)."""
    if op.get_bind().dialect.name == "sqlite":
        return  # no length enforced; a batch alter would copy the whole table
    op.alter_column(
        "executions", "status", type_=sa.String(32), existing_type=sa.String(20), nullable=False
    )


def downgrade() -> None:
    """Back to 20 characters (fails while a status is longer)."""
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "executions", "status", type_=sa.String(20), existing_type=sa.String(32), nullable=False
    )
