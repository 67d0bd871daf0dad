"""The Starlette application: ``create_app`` wires settings, store, engine and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from starlette.applications import Starlette

from pagerduty_connector.component.client import ClientSettings
from pagerduty_connector.component.manifest import Manifest, load_manifest
from pagerduty_connector.component.redact import get_logger
from pagerduty_connector.component.registry import check_implementations
from pagerduty_connector.runtime.engine import Engine
from pagerduty_connector.runtime.errors import EXCEPTION_HANDLERS
from pagerduty_connector.runtime.routes import ROUTES
from pagerduty_connector.runtime.settings import RuntimeSettings
from pagerduty_connector.runtime.store import Store

log = get_logger("app")


def create_app(
    settings: RuntimeSettings,
    *,
    manifest: Manifest | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    client_settings: ClientSettings | None = None,
) -> Starlette:
    """The runtime app; startup validates the manifest, migrates and resumes executions."""
    checked = manifest or load_manifest()
    check_implementations(checked)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = Store(settings.resolved_database_url())
        await store.migrate()
        engine = Engine(
            settings, checked, store, transport=transport, client_settings=client_settings
        )
        app.state.engine = engine
        await engine.start()
        log.info("runtime ready at %s", settings.public_url)
        try:
            yield
        finally:
            await engine.shutdown()
            await store.close()

    return Starlette(
        routes=ROUTES,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
