"""The Starlette application: ``create_app`` wires settings, store, engine and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

from pagerduty_connector.component.client import ClientSettings
from pagerduty_connector.component.errors import ComponentError, ConfigurationError
from pagerduty_connector.component.manifest import Manifest, load_manifest
from pagerduty_connector.component.redact import get_logger, redact
from pagerduty_connector.component.registry import check_implementations
from pagerduty_connector.runtime.console.session import SignInThrottle
from pagerduty_connector.runtime.engine import started
from pagerduty_connector.runtime.errors import EXCEPTION_HANDLERS, error_response
from pagerduty_connector.runtime.metrics import DELIVERIES
from pagerduty_connector.runtime.middleware import secured
from pagerduty_connector.runtime.routes import ROUTES
from pagerduty_connector.runtime.routes.webhooks import receive_webhook
from pagerduty_connector.runtime.settings import RuntimeSettings
from pagerduty_connector.runtime.store.outage import refused, unavailable, why
from pagerduty_connector.runtime.worker import FlowWorkers

log = get_logger("app")


class Runtime(Starlette):
    """The runtime's Starlette app, with webhook deliveries sent straight to their handler.

    A delivery, ``POST /webhooks/{instance}/{flow}``, is the one request that comes by
    the thousand; it skips Starlette's two exception middlewares and the router (about
    a tenth of intake's CPU) and gets the same answers: a refusal through the app's
    exception handlers, anything unforeseen a 500 that is raised again for the server to
    log, as ``ServerErrorMiddleware`` does. Every other request, and a delivery path of
    any other shape, goes through Starlette as before (the route is declared there too,
    for the OpenAPI document).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a delivery directly; anything else as Starlette does."""
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            # No name or filter holds a NUL, and PostgreSQL refuses one in any text.
            refused = error_response(400, "HTTPError", "the URL holds a NUL character (%00)")
            await refused(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            parts = scope["path"].split("/")
            if len(parts) == 4 and parts[1] == "webhooks" and parts[2] and parts[3]:
                scope["app"] = self
                scope["path_params"] = {"instance": parts[2], "flow": parts[3]}
                await self._deliver(scope, receive, send)
                return
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, self._one_line_startup_failure(send))
            return
        await super().__call__(scope, receive, secured(send) if scope["type"] == "http" else send)

    def _one_line_startup_failure(self, send: Send) -> Send:
        """``send`` for the lifespan, with a startup failure a person can fix (recorded
        by the lifespan as ``state.startup_error``) told in its one line instead of the
        traceback Starlette puts in the message uvicorn logs."""

        async def sending(message: Message) -> None:
            error = getattr(self.state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and error:
                message = {**message, "message": error}
            await send(message)

        return sending

    async def _deliver(self, scope: Scope, receive: Receive, send: Send) -> None:
        send = counted(send)
        try:
            await receive_webhook(scope, receive, send)
        except Exception as exc:
            handler = next(
                (
                    self.exception_handlers[k]
                    for k in type(exc).__mro__
                    if k in self.exception_handlers
                ),
                None,
            )
            if handler is None:
                await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
                raise
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)


def counted(send: Send) -> Send:
    """``send`` that counts the delivery's answer by status (``pdc_deliveries``)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            DELIVERIES.labels(str(message["status"])).inc()
        await send(message)

    return sending


def create_app(
    settings: RuntimeSettings,
    *,
    manifest: Manifest | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    client_settings: ClientSettings | None = None,
) -> Runtime:
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
        async with AsyncExitStack() as stack:
            try:
                engine = await stack.enter_async_context(
                    started(settings, checked, transport=transport, client_settings=client_settings)
                )
            except Exception as exc:
                # What a person can fix (the database is away, a setting is wrong) is
                # one line; uvicorn then says the startup failed. Anything else keeps
                # its traceback: it is ours to fix.
                if isinstance(exc, ComponentError):
                    app.state.startup_error = redact(f"cannot start: {exc}")
                elif unavailable(exc) or refused(exc):
                    app.state.startup_error = redact(
                        f"cannot start: {why(exc)}; check that the database is up and "
                        "that PDC_DATABASE_URL names it, its user and password"
                    )
                raise
            app.state.engine = engine
            workers = FlowWorkers(settings)
            await workers.start()
            stack.push_async_callback(workers.stop)
            app.state.workers = workers
            if settings.flow_workers:
                log.info("%d flow workers run the flows", settings.flow_workers)
            elif not settings.runs_flows:
                log.info("flows run in worker processes (pdc serve --role worker)")
            if mismatch := settings.public_url_mismatch():
                log.warning("%s", mismatch)
            log.info("runtime ready at %s", settings.public_url)
            yield

    runtime = Runtime(
        routes=ROUTES,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    runtime.state.sign_in_throttle = SignInThrottle()
    return runtime
