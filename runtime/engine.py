"""The execution engine: what runs need (clients per connection, the writer, caches),
and the door to durable execution.

A webhook's execution is stored as ``received`` before it is answered; the engine then
queues its durable run (``runtime/durable.py``, on DBOS), which checkpoints every step.
At start, DBOS resumes the runs this executor left unfinished and every execution not
yet queued is queued, so nothing received is lost and no finished step runs twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

import httpx2
from sqlalchemy import func

from pagerduty_connector.component.client import ClientSettings, PagerDutyClient
from pagerduty_connector.component.context import StepContext
from pagerduty_connector.component.errors import ConfigurationError
from pagerduty_connector.component.manifest import Manifest
from pagerduty_connector.component.redact import get_logger, redact
from pagerduty_connector.component.requester import run_step
from pagerduty_connector.connections import ConnectionConfig
from pagerduty_connector.connections.oauth import OAUTH_TYPE, RefreshingAuth
from pagerduty_connector.runtime import metrics, schedules
from pagerduty_connector.runtime.crypto import SecretBox
from pagerduty_connector.runtime.deploy import DeployLocks
from pagerduty_connector.runtime.durable import UNFINISHED, Durable, partition, workflow_table
from pagerduty_connector.runtime.intake import IntakeCache
from pagerduty_connector.runtime.outbound import CREDENTIAL_TYPES, Outbound
from pagerduty_connector.runtime.settings import RuntimeSettings
from pagerduty_connector.runtime.store import (
    ConnectionRow,
    ExecutionRow,
    Store,
    now,
    select,
)
from pagerduty_connector.runtime.store.outage import patiently, why
from pagerduty_connector.runtime.store.writer import ExecutionWriter
from pagerduty_connector.runtime.tokens import TokenManager

log = get_logger("engine")
# Seconds each readiness check (a database write, the writer's connection) may take.
READINESS_LIMIT = 3.0


class Engine:
    """Runs flows for recorded executions, with per-flow concurrency limits."""

    def __init__(
        self,
        settings: RuntimeSettings,
        manifest: Manifest,
        store: Store,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        client_settings: ClientSettings | None = None,
    ) -> None:
        self.settings = settings
        self.manifest = manifest
        self.store = store
        self.box = SecretBox(settings.secret_key or "")
        self.transport = transport
        # Every client this engine makes tells the metrics what PagerDuty answered.
        self.client_settings = dataclasses.replace(
            client_settings or ClientSettings.from_env(), observer=metrics.OBSERVER
        )
        self.intake = IntakeCache(store, self.box)
        self.oauth = TokenManager(self)
        self._clients: dict[str, tuple[tuple[str, str], PagerDutyClient]] = {}
        self._retired: list[PagerDutyClient] = []
        self.writer = ExecutionWriter(store, settings.secret_key or "")
        self.deploys = DeployLocks(store)
        self.durable = Durable(self)
        self.outbound = Outbound(settings.http_allow)
        self.started = False
        self.stopping = False
        self._readiness: asyncio.Future[dict[str, str]] | None = None
        self._readiness_at = 0.0

    def webhook_url(self, instance_id: str, flow_name: str) -> str:
        """The public URL PagerDuty delivers a flow's webhooks to."""
        return f"{self.settings.public_url.rstrip('/')}/webhooks/{instance_id}/{flow_name}"

    def connection_config(self, row: ConnectionRow) -> ConnectionConfig:
        """The decrypted connection a client is built from."""
        secrets = self.box.open(row.secrets)
        if row.type == OAUTH_TYPE:
            # The token is fetched (and refreshed) per request by the manager.
            return ConnectionConfig(
                kind="oauth2",
                secret=secrets.get("accessToken") or "awaiting-consent",
                from_email=row.config.get("from"),
                region=row.config.get("region") or "us",
                refreshing=RefreshingAuth(self.oauth, row.id),
            )
        token = secrets.get("apiKey")
        if not token:
            raise ConfigurationError(f"connection '{row.name}' has no usable token")
        return ConnectionConfig(
            kind="apiKey",
            secret=token,
            from_email=row.config.get("from"),
            region=row.config.get("region") or "us",
        )

    def client(self, config: ConnectionConfig | None) -> PagerDutyClient:
        """A new PagerDuty client for ``config`` (tests inject the transport)."""
        return PagerDutyClient(config, self.client_settings, transport=self.transport)

    def client_for(self, connection: ConnectionRow | None) -> PagerDutyClient:
        """The shared client of a stored connection, so its steps share one request
        budget and kept-alive connections; a new one after the connection changes."""
        key = connection.id if connection else ""
        # An OAuth client asks the token manager for every request, so refreshed tokens
        # (new sealed secrets) must not replace it; an API key is part of the client.
        sealed = connection.secrets if connection and connection.type != OAUTH_TYPE else ""
        version = (sealed, repr(connection.config)) if connection else ("", "")
        cached = self._clients.get(key)
        if cached and cached[0] == version:
            return cached[1]
        if cached:
            self._retired.append(cached[1])  # may still serve a running step
        client = self.client(self.connection_config(connection) if connection else None)
        self._clients[key] = (version, client)
        return client

    async def credential(self, name: str) -> tuple[str, dict[str, Any]]:
        """An http step's credential by connection name: its type and its values (the
        sealed ones opened). ``ConfigurationError`` if it is missing or not such a type."""
        async with self.store.session() as db:
            query = select(ConnectionRow).where(ConnectionRow.name == name)
            row = (await db.execute(query)).scalar_one_or_none()
        if row is None or row.type not in CREDENTIAL_TYPES:
            raise ConfigurationError(f"connection '{name}' is not an http credential")
        return row.type, {**row.config, **self.box.open(row.secrets)}

    async def run_action(
        self,
        connection: ConnectionRow | None,
        key: str,
        inputs: dict[str, Any],
        urls: dict[str, str],
    ) -> dict[str, Any]:
        """Run one action or data source with a stored connection (test runs, flows)."""
        ctx = StepContext(
            manifest=self.manifest, client=self.client_for(connection), webhook_urls=urls
        )
        return await run_step(ctx, key, inputs)

    async def waiting(self, instance_id: str, flow: str) -> int:
        """How many recorded executions of a flow have not started yet."""
        async with self.store.session() as db:
            query = select(func.count()).where(
                ExecutionRow.instance_id == instance_id,
                ExecutionRow.flow == flow,
                ExecutionRow.status == "received",
            )
            return int((await db.execute(query)).scalar_one())

    async def unfinished(
        self, *, unqueued: bool = False, older_than: float | None = None
    ) -> list[tuple[str, str, str, str | None]]:
        """(id, instance, flow, the execution it retries) of the executions received or
        running, oldest first; with ``unqueued``, only those DBOS holds no workflow for;
        with ``older_than``, only those received that many seconds ago or more."""
        query = (
            select(
                ExecutionRow.id, ExecutionRow.instance_id, ExecutionRow.flow, ExecutionRow.retry_of
            )
            .where(ExecutionRow.status.in_(UNFINISHED))
            .order_by(ExecutionRow.received_at)
        )
        if older_than is not None:
            query = query.where(ExecutionRow.received_at <= now() - timedelta(seconds=older_than))
        if unqueued:
            workflows = workflow_table(self.store)
            known = select(workflows.c.workflow_uuid).where(
                workflows.c.workflow_uuid == ExecutionRow.id
            )
            query = query.where(~known.exists())
        async with self.store.session() as db:
            return [tuple(row) for row in (await db.execute(query)).all()]  # type: ignore[misc]

    async def requeue_unfinished(self, older_than: float | None = None) -> int:
        """Queue the unfinished executions DBOS has no workflow for (recorded before the
        run was queued in the same transaction, or a retry whose fork was cut off: it is
        forked again, from the same step); the others DBOS resumes or dequeues itself."""
        rows = await self.unfinished(unqueued=True, older_than=older_than)
        for execution_id, instance_id, flow, retry_of in rows:
            async with self.store.session() as db:
                original = await db.get(ExecutionRow, retry_of) if retry_of else None
            patient = await self.patient(instance_id, flow)
            if original is None:
                await self.durable.submit(execution_id, instance_id, flow, patient=patient)
                continue
            point = await self.durable.retry_point(original)
            place = partition(instance_id, flow)
            await self.durable.fork(original.id, point, execution_id, place, patient=patient)
        return len(rows)

    async def patient(self, instance_id: str, flow: str) -> bool:
        """Whether a flow has a wait step (its runs use the patient queue)."""
        target = await self.intake.get(instance_id)
        return bool(target and flow in target.patient)

    async def finish(
        self,
        execution_id: str,
        status: str,
        *,
        steps: list[dict[str, Any]] | None = None,
        error: str | None = None,
    ) -> None:
        """Record how an execution ended."""
        values: dict[str, Any] = {"status": status, "finished_at": now()}
        if steps is not None:
            values["steps"] = steps
            failed = next((s for s in steps if s.get("status") == "failed"), None)
            error = error or (failed or {}).get("error")
        values["error"] = error
        await patiently(
            partial(self.writer.update, execution_id, values), f"execution {execution_id}"
        )
        metrics.EXECUTIONS.labels(status).inc()

    async def drain(self) -> None:
        """Wait for the executions this process queued (tests, graceful shutdown)."""
        await self.durable.drain()

    async def start(self) -> None:
        """Start durable execution and queue what a stopped process left unfinished."""
        # The writer process spends its first second importing: it does that while DBOS
        # launches here, and must be ready before anything is recorded or requeued.
        writer = asyncio.ensure_future(self.writer.start())
        try:
            if self.settings.serves:
                await self.intake.start()
            await self.durable.start()
        finally:
            await writer
        if self.settings.serves:
            # What a crash between storing an instance and scheduling it left behind.
            try:
                for change in await schedules.sync(self):
                    log.info("%s", change)
            except Exception as exc:  # the next deploy, or start, mends it
                log.warning("schedules not synchronised at start: %s", why(exc))
        count = await self.requeue_unfinished()
        if count:
            log.info("%d unfinished executions are queued", count)
        self.started = True

    async def readiness(self) -> dict[str, str]:
        """What keeps this process from recording a delivery now, by part (empty: ready):
        the engine not started or stopping, the database not taking a write (this
        process's heartbeat row), the writer process without a working connection. Each
        check has ``READINESS_LIMIT`` seconds; the answer is kept for a second and shared
        by the probes asking meanwhile, so probes cannot load the database."""
        loop = asyncio.get_running_loop()
        if self._readiness is None or (
            self._readiness.done() and loop.time() - self._readiness_at > 1.0
        ):
            self._readiness = asyncio.ensure_future(self._check_readiness())
            self._readiness_at = loop.time()
        return dict(await asyncio.shield(self._readiness))

    async def _check_readiness(self) -> dict[str, str]:
        if self.stopping:
            return {"engine": "stopping"}
        if not self.started:
            return {"engine": "starting"}
        problems: dict[str, str] = {}
        for part, check in (("database", self.durable.beat), ("writer", self.writer.ping)):
            try:
                await asyncio.wait_for(check(), READINESS_LIMIT)
            except TimeoutError:
                problems[part] = f"no answer within {READINESS_LIMIT:g} s"
            except Exception as exc:
                problems[part] = redact(why(exc))
        return problems

    async def shutdown(self) -> None:
        """Stop durable execution (unfinished runs resume at the next start) and the writer."""
        self.stopping = True
        await self.durable.stop()
        await self.intake.stop()
        await self.writer.close()
        for client in [*(c for _, c in self._clients.values()), *self._retired]:
            await client.aclose()
        await self.outbound.aclose()


@asynccontextmanager
async def started(
    settings: RuntimeSettings,
    manifest: Manifest,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    client_settings: ClientSettings | None = None,
) -> AsyncIterator[Engine]:
    """A migrated store and a started engine, shut down on exit (the app and workers)."""
    store = Store(settings.resolved_database_url())
    await store.migrate()
    engine = Engine(settings, manifest, store, transport=transport, client_settings=client_settings)
    await engine.start()
    # What start-up loaded (modules, the manifest, DBOS, SQLAlchemy) lives as long as the
    # process: frozen, the garbage collector stops scanning it again and again, which
    # cost intake a fifth of its requests per second.
    gc.freeze()
    try:
        yield engine
    finally:
        await engine.shutdown()
        await store.close()
