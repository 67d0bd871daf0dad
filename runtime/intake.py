"""Cached routing for webhook intake.

``IntakeCache`` keeps what intake needs to route and verify a delivery (the
instance's flows, whether it is enabled, the signing secrets) for a few seconds;
this process drops an entry whenever it changes the instance, and the expiry
bounds staleness when another process changed it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pagerduty_connector.component.redact import get_logger
from pagerduty_connector.runtime.store import (
    ConnectionRow,
    InstanceRow,
    Store,
    SubscriptionRow,
    select,
)

if TYPE_CHECKING:
    from pagerduty_connector.runtime.crypto import SecretBox

log = get_logger("intake")


@dataclass(frozen=True)
class IntakeTarget:
    """What intake needs of an instance: its flows, state and signing secrets per flow."""

    instance_id: str
    enabled: bool
    flows: dict[str, dict[str, Any]]
    secrets: dict[str, list[str]]
    connection: ConnectionRow | None


class IntakeCache:
    """Short-lived, explicitly invalidated cache of ``IntakeTarget`` by instance id."""

    def __init__(self, store: Store, box: SecretBox, ttl: float = 2.0) -> None:
        self.store, self.box, self.ttl = store, box, ttl
        self._entries: dict[str, tuple[float, IntakeTarget | None]] = {}

    def forget(self, instance_id: str) -> None:
        """Drop an instance after this process changed it."""
        self._entries.pop(instance_id, None)

    def clear(self) -> None:
        """Drop every entry (a connection changed; several instances may use it)."""
        self._entries.clear()

    async def refresh(self, instance_id: str, min_age: float = 0.05) -> IntakeTarget | None:
        """The instance read again, unless it was read less than ``min_age`` seconds ago.

        For a delivery the cached view refuses (unknown flow, no matching secret): another
        process may have just redeployed. ``min_age`` bounds the reads a flood of forged
        deliveries can cause.
        """
        cached = self._entries.get(instance_id)
        if cached and time.monotonic() - cached[0] < min_age:
            return cached[1]
        self.forget(instance_id)
        return await self.get(instance_id)

    async def get(self, instance_id: str) -> IntakeTarget | None:
        """The instance's intake view, or ``None`` if there is no such instance."""
        cached = self._entries.get(instance_id)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        target = await self._load(instance_id)
        self._entries[instance_id] = (time.monotonic(), target)
        return target

    async def _load(self, instance_id: str) -> IntakeTarget | None:
        async with self.store.session() as db:
            instance = await db.get(InstanceRow, instance_id)
            if instance is None:
                return None
            query = select(SubscriptionRow.flow, SubscriptionRow.secret).where(
                SubscriptionRow.instance_id == instance_id
            )
            sealed = (await db.execute(query)).all()
            connection = (
                await db.get(ConnectionRow, instance.connection_id)
                if instance.connection_id
                else None
            )
        secrets: dict[str, list[str]] = {}
        for flow, token in sealed:
            secrets.setdefault(flow, []).append(self.box.open(token).get("secret", ""))
        return IntakeTarget(
            instance_id=instance.id,
            enabled=instance.enabled,
            flows={f["name"]: f for f in instance.flows},
            secrets=secrets,
            connection=connection,
        )
