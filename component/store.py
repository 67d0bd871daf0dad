"""The runtime's store: SQLAlchemy 2 (async) on SQLite by default, PostgreSQL when asked.

Connections keep their secret inputs sealed by ``SecretBox``; executions are
written before a webhook is answered so nothing received is lost. The schema is
created and upgraded by Alembic (``component/migrations``) at startup.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy import select as _select
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def now() -> datetime:
    """Timezone-aware current time in UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A random identifier for rows created by the runtime."""
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    """Declarative base of every table."""


class ConnectionRow(Base):
    """A configured connection; ``secrets`` holds the sealed secret inputs."""

    __tablename__ = "connections"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class InstanceRow(Base):
    """A deployed instance: its flows, connection and deploy state."""

    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    connection_id: Mapped[str | None] = mapped_column(
        ForeignKey("connections.id", ondelete="RESTRICT"), nullable=True
    )
    flows: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class ExecutionRow(Base):
    """One received webhook and the run of its flow (the integration log)."""

    __tablename__ = "executions"
    __table_args__ = (UniqueConstraint("instance_id", "webhook_id", name="uq_execution_webhook"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(String(100), index=True)
    flow: Mapped[str] = mapped_column(String(200))
    webhook_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    received_body: Mapped[str] = mapped_column(Text, default="")
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SubscriptionRow(Base):
    """A PagerDuty webhook subscription held for one instance flow, with its secret."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (UniqueConstraint("instance_id", "flow", "subscription_id"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(String(100), index=True)
    flow: Mapped[str] = mapped_column(String(200))
    subscription_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class OAuthStateRow(Base):
    """A started OAuth consent: its ``state``, connection and sealed PKCE verifier."""

    __tablename__ = "oauth_states"
    state: Mapped[str] = mapped_column(String(100), primary_key=True)
    connection_id: Mapped[str] = mapped_column(String(64), index=True)
    verifier: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def _upgrade(connection: SyncConnection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection SQLite settings: WAL journal, durable commits, a busy timeout."""
    # WAL lets readers work while a writer commits and makes each commit cheaper;
    # synchronous=FULL keeps every commit durable (a 202 promises the record).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Store:
    """The database: an async engine, sessions, and migrations."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # A pre-ping is a round trip per checkout; a local SQLite file never goes away.
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)
        self.session = async_sessionmaker(self.engine, expire_on_commit=False)

    async def migrate(self) -> None:
        """Create or upgrade the schema to the newest Alembic revision."""
        if self.is_sqlite:
            database = self.url.split("///", 1)[-1]
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        async with self.engine.begin() as connection:
            await connection.run_sync(_upgrade)

    async def close(self) -> None:
        """Dispose of the connection pool."""
        await self.engine.dispose()


select = _select
