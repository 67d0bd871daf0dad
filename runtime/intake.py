"""Cached routing for webhook intake.

``IntakeCache`` keeps what intake needs to route and verify a delivery (the
instance's flows, whether it is enabled, the signing secrets) for a few seconds; an
entry just past that is still used while it is read again.
A process that changes an instance drops its entry and ``announce``s the change; on
PostgreSQL every process sharing the database hears it (LISTEN/NOTIFY) and drops its
entry too. Before refusing a delivery, intake reads the instance again (``refresh``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from pagerduty_connector.component.redact import get_logger
from pagerduty_connector.runtime.store import (
    ConnectionRow,
    InstanceRow,
    Store,
    SubscriptionRow,
    select,
)
from pagerduty_connector.runtime.store.outage import why

if TYPE_CHECKING:
    from pagerduty_connector.runtime.crypto import SecretBox

log = get_logger("intake")
CHANNEL = "pdc_intake"
# Seconds between checks of the LISTEN connection (and its timeout).
LISTEN_CHECK = 5.0
EVERYTHING = "*"


@dataclass(frozen=True)
class IntakeTarget:
    """What intake needs of an instance: its flows, state and signing secrets per flow."""

    instance_id: str
    enabled: bool
    flows: dict[str, dict[str, Any]]
    secrets: dict[str, list[str]]
    connection: ConnectionRow | None
    # The flows that have a wait step (their runs go to the patient queue).
    patient: frozenset[str] = frozenset()


class IntakeCache:
    """Short-lived, explicitly invalidated cache of ``IntakeTarget`` by instance id."""

    def __init__(self, store: Store, box: SecretBox, ttl: float = 2.0) -> None:
        self.store, self.box, self.ttl = store, box, ttl
        self._entries: dict[str, tuple[float, IntakeTarget | None]] = {}
        # Connections by id for the steps of runs: (generation, read at, row).
        self._connections: dict[str, tuple[int, float, ConnectionRow | None]] = {}
        self._loading: dict[str, asyncio.Future[IntakeTarget | None]] = {}
        # Bumped by every drop, so a read that started before a change is not kept.
        self._generation = 0
        self._listener: Any = None
        self._listening: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """On PostgreSQL, listen for other processes' changes, from now on and after every
        reconnection (``_listen``)."""
        if self.store.is_sqlite:
            return
        await self._connect()
        self._listening = asyncio.create_task(self._listen())

    async def _connect(self) -> None:
        import asyncpg

        dsn = make_url(self.store.url).set(drivername="postgresql")
        listener = await asyncpg.connect(dsn.render_as_string(hide_password=False), timeout=5)
        await listener.add_listener(CHANNEL, self._heard)
        self._listener = listener

    async def _listen(self) -> None:
        """Keep the LISTEN connection: check it every ``LISTEN_CHECK`` seconds and, once it
        is lost (a PostgreSQL restart, a dropped connection), connect again with backoff.
        Changes announced while it was away were not heard, so every entry is dropped."""
        delay = 0.5
        while True:
            await asyncio.sleep(LISTEN_CHECK if self._listener is not None else delay)
            try:
                if self._listener is not None:
                    await asyncio.wait_for(self._listener.execute("SELECT 1"), LISTEN_CHECK)
                    continue
                await self._connect()
            except Exception as exc:  # lost, refused, timed out: all mean connect again
                if self._listener is not None:
                    log.warning("intake stopped hearing changes (%s); reconnecting", why(exc))
                    self._listener.terminate()
                    self._listener = None
                    delay = 0.5
                else:
                    delay = min(delay * 2, 5.0)
                continue
            log.info("intake hears changes again")
            self.clear()

    def _heard(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self._drop(payload)

    def _drop(self, instance_id: str) -> None:
        if instance_id == EVERYTHING:
            self.clear()
        else:
            self.forget(instance_id)

    async def announce(self, instance_id: str = EVERYTHING) -> None:
        """Drop an instance (or, by default, every entry) here and in every process."""
        self._drop(instance_id)
        if not self.store.is_sqlite:
            async with self.store.engine.begin() as connection:
                await connection.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": CHANNEL, "payload": instance_id},
                )

    async def stop(self) -> None:
        """Stop listening."""
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)
            self._listening = None
        if self._listener is not None:
            with contextlib.suppress(Exception):  # a broken connection may not close cleanly
                await asyncio.wait_for(self._listener.close(), 5)
            self._listener = None

    def forget(self, instance_id: str) -> None:
        """Drop an instance after this process changed it."""
        self._generation += 1
        self._entries.pop(instance_id, None)
        self._loading.pop(instance_id, None)

    def clear(self) -> None:
        """Drop every entry (a connection changed; several instances may use it)."""
        self._generation += 1
        self._entries.clear()
        self._loading.clear()

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
        if cached:
            age = time.monotonic() - cached[0]
            if age < self.ttl:
                return cached[1]
            if age < self.ttl * 2:
                # Just expired: read again, and meanwhile go on with what was read (a
                # change made here or announced was dropped, not expired). Under load
                # that read waits on a busy thread and database, and every delivery
                # arriving meanwhile waited with it: a tenth of a second, every ttl.
                self._load_once(instance_id)
                return cached[1]
        # One read per instance at a time: every delivery arriving meanwhile waits for
        # that read instead of making its own.
        return await asyncio.shield(self._load_once(instance_id))

    def _load_once(self, instance_id: str) -> asyncio.Future[IntakeTarget | None]:
        """The read of ``instance_id`` going on, or a new one."""
        loading = self._loading.get(instance_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load_and_keep(instance_id, self._generation))
            self._loading[instance_id] = loading
            loading.add_done_callback(lambda done: self._finished(instance_id, done))
        return loading

    async def connection(self, connection_id: str) -> ConnectionRow | None:
        """A stored connection for a run's step, read again after ``ttl`` seconds or once
        any entry was dropped (every change to a connection drops them all): a read per
        step attempt was a fifth of a run's database work."""
        cached = self._connections.get(connection_id)
        if cached and cached[0] == self._generation and time.monotonic() - cached[1] < self.ttl:
            return cached[2]
        generation = self._generation
        async with self.store.session() as db:
            row = await db.get(ConnectionRow, connection_id)
        if generation == self._generation:
            self._connections[connection_id] = (generation, time.monotonic(), row)
        return row

    def _finished(self, instance_id: str, done: asyncio.Future[IntakeTarget | None]) -> None:
        # Only this read's slot: after a drop, a newer read may already hold it.
        if self._loading.get(instance_id) is done:
            del self._loading[instance_id]
        # A read nobody waited for (the entry was served meanwhile) that failed: the
        # next delivery reads again, and past twice the lifetime waits for it and fails.
        if not done.cancelled():
            done.exception()

    async def _load_and_keep(self, instance_id: str, generation: int) -> IntakeTarget | None:
        target = await self._load(instance_id)
        if generation == self._generation:  # not dropped while it was being read
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
            patient=patient_flows(instance.flows),
        )


def patient_flows(flows: list[dict[str, Any]]) -> frozenset[str]:
    """The names of the flows that have a wait step."""
    from pagerduty_connector.runtime.flows import Flow, waits

    return frozenset(f["name"] for f in flows if waits(Flow.model_validate(f)))
