"""What the runtime tests share: a flow, an event, and helpers to drive the API.

The fixtures that start the runtime (``runtime_settings``, ``subs``, ``api``) live
in ``conftest.py``; these are the plain values and functions they and the tests use.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx2
import respx
from cryptography.fernet import Fernet
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.settings import RuntimeSettings, load_settings
from pagerduty_connector.triggers.signature import sign

API_KEY = "u+RUNTIME-secret-key-5566"
ADMIN = "admin-token-for-tests-0001"
PUBLIC = "https://pdc.example.com"
REST = "https://api.pagerduty.com"
INCIDENT = {"incident": {"id": "Q1P5", "title": "Server is on fire", "urgency": "high"}}
EVENT = {
    "event": {
        "id": "01DEN0M0L0OCDNR0CDEVP4SRGH",
        "event_type": "incident.triggered",
        "resource_type": "incident",
        "occurred_at": "2024-01-15T10:30:00.000Z",
        "agent": None,
        "client": None,
        "data": {"id": "Q1P5", "type": "incident", "title": "Server is on fire"},
    }
}
FLOW = {
    "name": "on-incident",
    "trigger": {
        "type": "incidentsTrigger",
        "inputs": {
            "events": ["incident.triggered"],
            "webhookDescription": "ops",
            "filterType": "account_reference",
        },
    },
    "steps": [
        {
            "name": "incident",
            "action": "getIncident",
            "inputs": {"id": "{{ trigger.event.data.id }}"},
        },
        {
            "name": "note",
            "action": "createIncidentNote",
            "inputs": {
                "id": "{{ steps.incident.data.incident.id }}",
                "note": "Investigating: {{ steps.incident.data.incident.title }}",
            },
        },
    ],
}
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def drain(client: TestClient) -> None:
    client.portal.call(client.app.state.engine.drain)  # type: ignore[union-attr]


def make_connection(api: httpx2.Client, key: str = API_KEY) -> dict[str, Any]:
    """Create the API-key connection ``ops`` (a TestClient or a client of a real server)."""
    answer = api.post(
        "/api/connections",
        json={
            "name": "ops",
            "type": "pagerduty-api-key",
            "config": {"apiKey": key, "from": "oncall@example.com"},
        },
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def secret_for(subs: FakeSubscriptions, path: str) -> str:
    """The signing secret PagerDuty gave the subscription delivering to ``path``."""
    url = f"{PUBLIC}{path}"
    sub_id = next(i for i, s in subs.subscriptions.items() if s["delivery_method"]["url"] == url)
    return subs.secrets[sub_id]


def deliver(
    api: TestClient,
    subs: FakeSubscriptions,
    path: str,
    webhook_id: str = "wh-1",
    event: dict[str, Any] = EVENT,
    event_id: str | None = None,
) -> httpx2.Response:
    """Post ``event`` to ``path`` signed as PagerDuty would sign it. Each delivery is a
    PagerDuty event of its own (its id made from ``webhook_id``) unless ``event_id``
    names one: the runtime runs one event once per flow, whatever its webhook id."""
    event = {**event, "event": {**event["event"], "id": event_id or f"ev-{webhook_id}"}}
    body = json.dumps(event).encode()
    headers = {
        "X-Webhook-Id": webhook_id,
        "X-PagerDuty-Signature": sign(body, secret_for(subs, path)),
    }
    return api.post(path, content=body, headers=headers)


def answer_incident(pd: respx.MockRouter) -> None:
    """PagerDuty answers the example flow's two steps: the incident, then its note."""
    pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})


def count_incident_steps(pd: respx.MockRouter) -> dict[str, Any]:
    """PagerDuty answers the example flow's two steps and counts what it was sent:
    ``get`` (reads of the incident) and ``notes`` (each note's time and content)."""
    sent: dict[str, Any] = {"get": 0, "notes": []}

    def get(request: httpx2.Request) -> httpx2.Response:
        sent["get"] += 1
        return httpx2.Response(200, json=INCIDENT)

    def note(request: httpx2.Request) -> httpx2.Response:
        content = json.loads(request.content)["note"]["content"]
        sent["notes"].append({"at": time.monotonic(), "content": content})
        return httpx2.Response(201, json={"note": {"id": "N1"}})

    pd.get(f"{REST}/incidents/Q1P5").mock(side_effect=get)
    pd.post(f"{REST}/incidents/Q1P5/notes").mock(side_effect=note)
    return sent


def deploy_acme(api: TestClient, flows: list[dict[str, Any]] | None = None) -> None:
    """Create the connection ``ops`` and deploy the instance ``acme`` (the example flow)."""
    make_connection(api)
    answer = api.post(
        "/api/instances", json={"name": "acme", "connection": "ops", "flows": flows or [FLOW]}
    )
    assert answer.status_code == 201, answer.text


def execution(api: TestClient, execution_id: str) -> dict[str, Any]:
    """An execution's record, as the API answers it."""
    return dict(api.get(f"/api/executions/{execution_id}").json())


def settings_for(database_url: str, data_dir: Path, **overrides: Any) -> RuntimeSettings:
    """Runtime settings on a test's database, with the known admin token and a fresh key."""
    return load_settings(
        data_dir=data_dir,
        database_url=database_url,
        admin_token=ADMIN,
        secret_key=Fernet.generate_key().decode(),
        public_url=PUBLIC,
        **overrides,
    )
