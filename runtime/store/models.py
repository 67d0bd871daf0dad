"""The runtime's tables: connections, instances, executions, subscriptions, OAuth states.

Connections keep their secret inputs sealed by ``SecretBox``; executions are
written before a webhook is answered so nothing received is lost.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def now() -> datetime:
    """Timezone-aware current time in UTC."""
    return datetime.now(UTC)


_last_stamp = 0
_stamp_lock = threading.Lock()


def new_id() -> str:
    """An identifier for rows created by the runtime: 32 hex digits, the first 14 the
    microseconds since the epoch (strictly increasing within a process), the rest random.

    Ordered by creation: DBOS breaks ties between runs queued in the same millisecond by
    workflow id (an execution's id), so runs sharing a ``concurrencyKey`` start in the
    order their deliveries arrived.
    """
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.time_ns() // 1000, _last_stamp + 1)
        stamp = _last_stamp
    return f"{stamp:014x}{secrets.token_hex(9)}"


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
    __table_args__ = (
        UniqueConstraint("instance_id", "webhook_id", name="uq_execution_webhook"),
        # A delivery replayed under a new X-Webhook-Id (migration 0007).
        Index("uq_execution_event", "instance_id", "flow", "event_id", unique=True),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    # No index of its own: uq_execution_webhook leads with it (migration 0006).
    instance_id: Mapped[str] = mapped_column(String(100))
    flow: Mapped[str] = mapped_column(String(200))
    webhook_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # PagerDuty's event.id for a signed delivery; empty for test runs, replays, retries.
    event_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
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
    retry_of: Mapped[str | None] = mapped_column(String(64), nullable=True)
    replay_of: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A retry's flow: "deployed" (the failed run's) or "current" (migration 0009), and
    # that flow when it is not the one the run first planned.
    flow_version: Mapped[str | None] = mapped_column(String(16), nullable=True)
    flow_definition: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


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


class StateRow(Base):
    """One value of an instance's key/value store (the ``state`` step)."""

    __tablename__ = "state"
    instance_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    # Bumped by every change: a change names the version it read, so two at once cannot
    # both apply (an increment read twice would count once).
    version: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class ExecutorRow(Base):
    """A runtime process (DBOS executor) and when it last said it was alive."""

    __tablename__ = "executors"
    executor_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
