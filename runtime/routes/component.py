"""The component specification: every entry with a JSON Schema of its inputs."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from pagerduty_connector.component.schema import component_document
from pagerduty_connector.runtime import flows as _flows  # noqa: F401  (registers the kinds)
from pagerduty_connector.runtime.http import engine_of
from pagerduty_connector.runtime.schedules import SCHEDULE, SCHEDULE_INPUTS, tick_output
from pagerduty_connector.runtime.steps import KINDS
from pagerduty_connector.runtime.templates import FILTERS, FUNCTIONS

EXAMPLE_TICK = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


async def component_spec(request: Request) -> JSONResponse:
    """
    summary: The component specification, with a JSON Schema per action's inputs and an
      example of its output, and the flow language (step kinds, the schedule trigger,
      template functions and filters)
    responses:
      200: {description: "connections, triggers, data sources, actions and flow constructs"}
    """
    document = component_document(engine_of(request).manifest)
    return JSONResponse({**document, "flows": flow_language()})


@cache
def flow_language() -> dict[str, Any]:
    """What a flow may hold beyond the component's actions, for editors and Try it: each
    step kind (its key, what it is for, a JSON Schema), the schedule trigger's inputs,
    and the functions and filters templates may use."""
    kinds = [
        {
            "key": key,
            "summary": model.SUMMARY,
            "schema": _inlined(model.model_json_schema(by_alias=True)),
        }
        for key, model in KINDS.items()
    ]
    return {
        "stepKinds": kinds,
        "triggers": [
            {
                "key": SCHEDULE,
                "label": "Schedule",
                "description": "Run the flow on a cron schedule in a time zone (no webhook).",
                "inputs": SCHEDULE_INPUTS,
                "output": {"example": tick_output({"cron": "0 9 * * 1-5"}, EXAMPLE_TICK)},
            }
        ],
        "templates": {"functions": sorted(FUNCTIONS), "filters": sorted(FILTERS)},
    }


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema whose top is a ``$ref`` (a kind that nests steps) with that definition
    at the top, its ``$defs`` kept for the nested steps."""
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    name = ref.rsplit("/", 1)[-1]
    return {**schema["$defs"][name], "$defs": schema["$defs"]}
