"""The component specification: every entry with a JSON Schema of its inputs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from pagerduty_connector.component.schema import component_document
from pagerduty_connector.runtime.http import engine_of


async def component_spec(request: Request) -> JSONResponse:
    """
    summary: The component specification, with a JSON Schema per action's inputs
    responses:
      200: {description: "connections, triggers, data sources and actions"}
    """
    return JSONResponse(component_document(engine_of(request).manifest))
