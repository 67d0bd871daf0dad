"""``sendEvent`` and ``sendChangeEvent``: PagerDuty's Events API v2.

The Events API authenticates by the ``routing_key`` inside the body, not by the
connection, so these actions check the event's required fields before sending
and register the routing key as a secret: it is never logged or echoed.
"""

from __future__ import annotations

import re
from typing import Any

from pagerduty_connector.component.context import StepContext
from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.inputs import CleanedInputs
from pagerduty_connector.component.redact import register_secret
from pagerduty_connector.component.registry import action

SEVERITIES = ("critical", "error", "warning", "info")
_BARE_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")
EVENT_ACTIONS = ("trigger", "acknowledge", "resolve")


def _require(owner: str, obj: dict[str, Any], dotted: str) -> Any:
    node: Any = obj
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None or node == "":
        raise InputError(owner, "event", f"'{dotted}' is required")
    return node


def _checked_event(owner: str, inputs: CleanedInputs) -> dict[str, Any]:
    event = inputs["event"]
    if not isinstance(event, dict):
        raise InputError(owner, "event", "expected a JSON object")
    routing_key = _require(owner, event, "routing_key")
    if not isinstance(routing_key, str):
        raise InputError(owner, "event", "'routing_key' must be a string")
    register_secret(routing_key)
    return _rfc3339_timestamp(event)


def _rfc3339_timestamp(event: dict[str, Any]) -> dict[str, Any]:
    """Write ``payload.timestamp`` offsets as ``+00:00``, not ``+0000``.

    PagerDuty's own examples use ``2015-07-17T08:42:58.315+0000``, which is ISO 8601
    but not the RFC 3339 ``date-time`` its OpenAPI document asks for.
    """
    payload = event.get("payload")
    stamp = payload.get("timestamp") if isinstance(payload, dict) else None
    if isinstance(stamp, str) and _BARE_OFFSET.search(stamp):
        payload = {**payload, "timestamp": _BARE_OFFSET.sub(r"\1:\2", stamp)}
        return {**event, "payload": payload}
    return event


async def _enqueue(ctx: StepContext, path: str, event: dict[str, Any]) -> dict[str, Any]:
    body = await ctx.client.request_json("POST", path, base="events", json=event)
    return {"data": body}


@action("sendEvent")
async def send_event(ctx: StepContext, inputs: CleanedInputs) -> dict[str, Any]:
    """Trigger, acknowledge or resolve an alert through ``/enqueue``."""
    owner = "sendEvent"
    event = _checked_event(owner, inputs)
    verb = _require(owner, event, "event_action")
    if verb not in EVENT_ACTIONS:
        raise InputError(
            owner, "event", f"'event_action' must be one of {', '.join(EVENT_ACTIONS)}"
        )
    if verb == "trigger":
        for field in ("payload.summary", "payload.source", "payload.severity"):
            _require(owner, event, field)
        if event["payload"]["severity"] not in SEVERITIES:
            raise InputError(
                owner, "event", f"'payload.severity' must be one of {', '.join(SEVERITIES)}"
            )
    else:
        _require(owner, event, "dedup_key")
    return await _enqueue(ctx, "/enqueue", event)


@action("sendChangeEvent")
async def send_change_event(ctx: StepContext, inputs: CleanedInputs) -> dict[str, Any]:
    """Record a change event through ``/change/enqueue``."""
    owner = "sendChangeEvent"
    event = _checked_event(owner, inputs)
    _require(owner, event, "payload.summary")
    return await _enqueue(ctx, "/change/enqueue", event)
