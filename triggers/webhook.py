"""``incidentsTrigger`` and ``serviceTrigger``: PagerDuty V3 webhook triggers.

This module turns a delivered body into the trigger's output, the parsed event
plus the request headers, as the reference's example payload shows. The
subscription lifecycle (deploy/teardown) and signature checks build on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from component.errors import InputError
from component.registry import trigger

EVENT_FIELDS = ("id", "event_type", "resource_type", "occurred_at", "agent", "client", "data")


@dataclass(frozen=True)
class WebhookTrigger:
    """A trigger fed by a V3 webhook subscription for one resource type."""

    key: str
    resource_type: str

    def parse(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """Return ``{"event": {...}, "headers": {...}}`` or raise ``InputError``."""
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(self.key, "body", f"is not JSON ({exc})") from None
        event = document.get("event") if isinstance(document, dict) else None
        if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
            raise InputError(self.key, "body", "is not a PagerDuty V3 webhook event")
        parsed = {name: event.get(name) for name in EVENT_FIELDS}
        return {"event": parsed, "headers": {k.lower(): v for k, v in headers.items()}}


incidents_trigger = trigger("incidentsTrigger")(WebhookTrigger("incidentsTrigger", "incident"))
service_trigger = trigger("serviceTrigger")(WebhookTrigger("serviceTrigger", "service"))
