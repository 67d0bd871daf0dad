"""The runtime's routes, one module per resource, assembled in one list.

Public routes (webhook deliveries, health, the consent pages, the OpenAPI document)
come first; the management API is one ``Mount("/api")`` wrapped in ``AdminAuth``.
Handler docstrings are the OpenAPI operations served at ``/openapi.json``.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.schemas import SchemaGenerator

from pagerduty_connector.runtime import consent
from pagerduty_connector.runtime.console import CONSOLE
from pagerduty_connector.runtime.middleware import AdminAuth
from pagerduty_connector.runtime.routes import (
    component,
    connections,
    executions,
    instances,
    metrics,
)
from pagerduty_connector.runtime.routes.webhooks import AsgiRoute, health, ready, receive_webhook

schemas = SchemaGenerator(
    {"openapi": "3.0.3", "info": {"title": "PagerDuty connector runtime", "version": "0.1.0"}}
)


async def openapi(request: Request) -> Response:
    """The OpenAPI document of this API, built from the handlers' docstrings."""
    return JSONResponse(schemas.get_schema(routes=request.app.routes))


API: list[BaseRoute] = [
    Route("/component", component.component_spec, methods=["GET"]),
    Route("/connections", connections.create_connection, methods=["POST"]),
    Route("/connections", connections.list_connections, methods=["GET"]),
    Route("/connections/{ref}", connections.get_connection, methods=["GET"]),
    Route("/connections/{ref}", connections.update_connection, methods=["PUT"]),
    Route("/connections/{ref}", connections.delete_connection, methods=["DELETE"]),
    Route("/instances", instances.deploy_instance, methods=["POST"]),
    Route("/instances", instances.list_instances, methods=["GET"]),
    Route("/instances/{name}", instances.get_instance, methods=["GET"]),
    Route("/instances/{name}", instances.redeploy_instance, methods=["PUT"]),
    Route("/instances/{name}", instances.delete_instance, methods=["DELETE"]),
    Route("/instances/{name}/state", instances.instance_state, methods=["GET"]),
    Route("/instances/{name}/{action:str}", instances.set_enabled, methods=["POST"]),
    Route("/instances/{name}/flows/{flow}/test", instances.test_flow, methods=["POST"]),
    Route("/instances/{name}/flows/{flow}/stats", executions.flow_stats, methods=["GET"]),
    Route("/executions", executions.list_executions, methods=["GET"]),
    Route("/executions/{id}", executions.get_execution, methods=["GET"]),
    Route("/executions/{id}/retry", executions.retry_execution, methods=["POST"]),
    Route("/executions/{id}/replay", executions.replay_execution, methods=["POST"]),
    Route("/executions/{id}/cancel", executions.cancel_execution, methods=["POST"]),
    Route("/test-runs", executions.run_test_step, methods=["POST"]),
]

ROUTES: list[BaseRoute] = [
    # First, because routes are matched in order and deliveries are the hot path.
    AsgiRoute("/webhooks/{instance}/{flow}", receive_webhook, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/connections/{id}/oauth/start", consent.start, methods=["GET"]),
    Route("/oauth/callback", consent.callback, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    Route("/metrics", metrics.scrape, methods=["GET"], middleware=[Middleware(AdminAuth)]),
    Mount("/api", routes=API, middleware=[Middleware(AdminAuth)]),
    CONSOLE,
]
