"""The execution engine: turns recorded executions into flow runs.

A webhook's execution is stored as ``received`` before it is answered; the engine
then runs it in a background task, at most ``flow_concurrency`` at a time per
flow. Executions still ``received`` or ``running`` when the process stopped are
resumed at the next start, so nothing received is lost.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx2

from pagerduty_connector.component.client import ClientSettings, PagerDutyClient
from pagerduty_connector.component.context import StepContext
from pagerduty_connector.component.errors import ComponentError, ConfigurationError
from pagerduty_connector.component.manifest import Manifest
from pagerduty_connector.component.redact import get_logger, redact
from pagerduty_connector.component.requester import run_step
from pagerduty_connector.connections import ConnectionConfig
from pagerduty_connector.connections.oauth import OAUTH_TYPE, RefreshingAuth
from pagerduty_connector.runtime.crypto import SecretBox
from pagerduty_connector.runtime.deploy import DeployLocks
from pagerduty_connector.runtime.flows import Flow, run_flow
from pagerduty_connector.runtime.intake import IntakeCache
from pagerduty_connector.runtime.settings import RuntimeSettings
from pagerduty_connector.runtime.store import (
    ConnectionRow,
    ExecutionRow,
    InstanceRow,
    Store,
    now,
    select,
)
from pagerduty_connector.runtime.store.writer import ExecutionWriter
from pagerduty_connector.runtime.tokens import TokenManager

log = get_logger("engine")


@dataclass(frozen=True)
class Known:
    """What running an execution needs: its trigger output, flow, and instance."""

    trigger: dict[str, Any]
    flow: str
    instance_id: str
    flows: dict[str, dict[str, Any]]
    connection: ConnectionRow | None


UNFINISHED = ("received", "running")


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
        self.client_settings = client_settings or ClientSettings.from_env()
        self._limits: dict[tuple[str, str], asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.flow_concurrency)
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[tuple[str, str], int] = defaultdict(int)
        self.intake = IntakeCache(store, self.box)
        self.oauth = TokenManager(self)
        self._clients: dict[str, tuple[tuple[str, str], PagerDutyClient]] = {}
        self._retired: list[PagerDutyClient] = []
        self.writer = ExecutionWriter(store)
        self.deploys = DeployLocks(store)

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

    def submit(
        self, execution_id: str, instance_id: str, flow: str, known: Known | None = None
    ) -> None:
        """Run an execution in the background; ``known`` spares reading back what intake
        just recorded (the trigger output, the instance and its connection)."""
        task = asyncio.create_task(self._guarded(execution_id, instance_id, flow, known))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(
        self, execution_id: str, instance_id: str, flow: str, known: Known | None
    ) -> None:
        key = (instance_id, flow)
        self._waiting[key] += 1
        try:
            await self._limits[key].acquire()
        finally:
            self._waiting[key] -= 1
        try:
            await self.execute(execution_id, known)
        except Exception as exc:  # an engine bug must not kill the worker
            log.exception("execution %s crashed", execution_id)
            await self._finish(execution_id, "failed", error=redact(repr(exc)))
        finally:
            self._limits[key].release()

    def waiting(self, instance_id: str, flow: str) -> int:
        """How many executions of a flow wait for its concurrency limit now."""
        return self._waiting[(instance_id, flow)]

    async def resume(self) -> int:
        """Submit every execution left unfinished by a previous process."""
        async with self.store.session() as db:
            rows = (
                await db.execute(
                    select(ExecutionRow)
                    .where(ExecutionRow.status.in_(UNFINISHED))
                    .order_by(ExecutionRow.received_at)
                )
            ).scalars()
            pending = [(r.id, r.instance_id, r.flow) for r in rows]
        for execution_id, instance_id, flow in pending:
            self.submit(execution_id, instance_id, flow)
        if pending:
            log.info("resuming %d unfinished executions", len(pending))
        return len(pending)

    async def _recall(self, execution_id: str) -> Known | None:
        """What an execution needs, read from the store (resumed executions)."""
        async with self.store.session() as db:
            execution = await db.get(ExecutionRow, execution_id)
            if execution is None or execution.status not in UNFINISHED:
                return None
            instance = await db.get(InstanceRow, execution.instance_id)
            connection = (
                await db.get(ConnectionRow, instance.connection_id)
                if instance and instance.connection_id
                else None
            )
        flows = {f["name"]: f for f in instance.flows} if instance else {}
        return Known(
            execution.trigger or {}, execution.flow, execution.instance_id, flows, connection
        )

    async def execute(self, execution_id: str, known: Known | None = None) -> None:
        """Run the flow of one recorded execution and store every step's record."""
        known = known or await self._recall(execution_id)
        if known is None:
            return
        await self.writer.update(execution_id, {"status": "running", "started_at": now()})
        flow_data = known.flows.get(known.flow)
        if flow_data is None:
            await self._finish(
                execution_id, "failed", error="the instance or flow no longer exists"
            )
            return
        flow = Flow.model_validate(flow_data)
        urls = {name: self.webhook_url(known.instance_id, name) for name in known.flows}
        connection = known.connection
        try:
            client = self.client_for(connection)
        except ComponentError as exc:
            await self._finish(execution_id, "failed", error=str(exc))
            return
        ctx = StepContext(manifest=self.manifest, client=client, webhook_urls=urls)
        status, records = await run_flow(
            flow,
            self.manifest,
            known.trigger,
            lambda key, inputs: run_step(ctx, key, inputs),
        )
        await self._finish(execution_id, status, steps=records)

    async def _finish(
        self,
        execution_id: str,
        status: str,
        *,
        steps: list[dict[str, Any]] | None = None,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status, "finished_at": now()}
        if steps is not None:
            values["steps"] = steps
            failed = next((s for s in steps if s.get("status") == "failed"), None)
            error = error or (failed or {}).get("error")
        values["error"] = error
        await self.writer.update(execution_id, values)

    async def drain(self) -> None:
        """Wait for the executions running now (tests, graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def shutdown(self) -> None:
        """Cancel running executions; they are resumed at the next start."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.writer.close()
        for client in [*(c for _, c in self._clients.values()), *self._retired]:
            await client.aclose()
