"""The Starlette application: ``create_app`` wires settings, store, engine and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from starlette.applications import Starlette

from pagerduty_connector.component.client import ClientSettings
from pagerduty_connector.component.errors import ConfigurationError
from pagerduty_connector.component.manifest import Manifest, load_manifest
from pagerduty_connector.component.redact import get_logger
from pagerduty_connector.component.registry import check_implementations
from pagerduty_connector.runtime.engine import started
from pagerduty_connector.runtime.errors import EXCEPTION_HANDLERS
from pagerduty_connector.runtime.routes import ROUTES
from pagerduty_connector.runtime.settings import RuntimeSettings
from pagerduty_connector.runtime.worker import FlowWorkers

log = get_logger("app")


def create_app(
    settings: RuntimeSettings,
    *,
    manifest: Manifest | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    client_settings: ClientSettings | None = None,
) -> Starlette:
    """The runtime app; startup validates the manifest, migrates, resumes executions and
    starts the flow workers, if any."""
    if not settings.serves:
        raise ConfigurationError("PDC_ROLE=worker serves no HTTP: start it with pdc serve")
    checked = manifest or load_manifest()
    check_implementations(checked)
    if settings.flow_workers and (manifest or transport or client_settings):
        # Workers load the packaged manifest and reach PagerDuty from the environment.
        raise ConfigurationError(
            "PDC_FLOW_WORKERS: workers cannot share an injected manifest, transport or "
            "client settings; run the flows in this process (PDC_FLOW_WORKERS=0)"
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with started(
            settings, checked, transport=transport, client_settings=client_settings
        ) as engine:
            app.state.engine = engine
            workers = FlowWorkers(settings)
            await workers.start()
            app.state.workers = workers
            if settings.flow_workers:
                log.info("%d flow workers run the flows", settings.flow_workers)
            elif not settings.runs_flows:
                log.info("flows run in worker processes (pdc serve --role worker)")
            log.info("runtime ready at %s", settings.public_url)
            try:
                yield
            finally:
                await workers.stop()

    return Starlette(
        routes=ROUTES,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
