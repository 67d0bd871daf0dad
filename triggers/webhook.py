"""``incidentsTrigger`` and ``serviceTrigger``: PagerDuty V3 webhook triggers.

Each trigger fulfils the ``Trigger`` contract (``component/contracts.py``): it checks
its inputs at deploy, says which subscription a flow needs, keeps PagerDuty's
subscriptions exact on deploy and deletes them on teardown
(``triggers/subscriptions.py``), verifies a delivery's signature and turns the body
into the trigger's output: the parsed event plus the request headers, as the
reference's example payload shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pagerduty_connector.component.client import PagerDutyClient
from pagerduty_connector.component.documents import DocumentError, load_json
from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.inputs import CleanedInputs
from pagerduty_connector.component.registry import trigger
from pagerduty_connector.triggers.signature import HEADER, verify_signature
from pagerduty_connector.triggers.subscriptions import (
    Desired,
    Held,
    SyncResult,
    UrlFilter,
    delete_subscriptions,
    sync_subscriptions,
)

EVENT_FIELDS = ("id", "event_type", "resource_type", "occurred_at", "agent", "client", "data")
PING = "pagey.ping"


@dataclass(frozen=True)
class WebhookTrigger:
    """A trigger fed by a V3 webhook subscription for one resource type."""

    key: str
    resource_type: str

    def check(self, owner: str, inputs: CleanedInputs) -> None:
        """Rules the manifest cannot declare: the filter id (the events are the manifest's
        own list, so a misspelt or foreign one is refused with the nearest name)."""
        if inputs.get("filterType") != "account_reference" and not inputs.get("filterId"):
            raise InputError(
                owner, "filterId", f"is required when filterType is {inputs.get('filterType')}"
            )

    def subscription(self, flow: str, url: str, inputs: Mapping[str, Any]) -> Desired:
        """The subscription a flow with these (cleaned) inputs needs at ``url``."""
        return Desired(
            flow=flow,
            url=url,
            events=tuple(dict.fromkeys(inputs.get("events") or [])),
            description=str(inputs.get("webhookDescription") or ""),
            filter_type=str(inputs.get("filterType") or "account_reference"),
            filter_id=inputs.get("filterId") or None,
        )

    async def deploy(
        self, client: PagerDutyClient, desired: list[Desired], held: list[Held], owned: UrlFilter
    ) -> SyncResult:
        """Deploy hook: exactly one subscription per desired flow (see ``sync_subscriptions``)."""
        return await sync_subscriptions(client, desired, held, owned)

    async def teardown(self, client: PagerDutyClient, owned: UrlFilter) -> list[str]:
        """Teardown hook: delete every subscription delivering to an owned URL."""
        return await delete_subscriptions(client, owned)

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Iterable[str]) -> None:
        """Raise ``SignatureError`` unless the delivery is signed with one of ``secrets``."""
        verify_signature(body, headers.get(HEADER), secrets)

    def output(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """Return ``{"event": {...}, "headers": {...}}`` or raise ``InputError``."""
        try:
            document = load_json(body)
        except DocumentError as exc:
            raise InputError(self.key, "body", str(exc)) from None
        event = document.get("event") if isinstance(document, dict) else None
        if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
            raise InputError(self.key, "body", "is not a PagerDuty V3 webhook event")
        parsed = {name: event.get(name) for name in EVENT_FIELDS}
        return {"event": parsed, "headers": {k.lower(): v for k, v in headers.items()}}

    def skip_reason(self, output: dict[str, Any], inputs: Mapping[str, Any]) -> str | None:
        """Why a parsed delivery runs no steps (a ping, an event not selected), or ``None``."""
        event_type = output["event"]["event_type"]
        if event_type == PING:
            return "pagey.ping acknowledged; pings run no steps"
        if event_type not in (inputs.get("events") or []):
            return f"event type {event_type} is not selected by this flow"
        return None


incidents_trigger = trigger("incidentsTrigger")(WebhookTrigger("incidentsTrigger", "incident"))
service_trigger = trigger("serviceTrigger")(WebhookTrigger("serviceTrigger", "service"))
