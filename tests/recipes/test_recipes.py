"""The ten automations of ``examples/recipes/``, each deployed as the file is (YAML, as a
builder would send it), its event delivered signed (or its schedule fired), and what
reached PagerDuty (respx, every request checked against PagerDuty's OpenAPI document)
or the stand-in Slack asserted."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
import respx
import yaml
from dbos import DBOS, SetWorkflowID
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime import schedules
from pagerduty_connector.runtime.app import create_app
from tests.conftest import EVENTS, REST
from tests.support.receiver import Slack, pass_through
from tests.support.runtime import (
    AUTH,
    deliver,
    drain,
    execution,
    make_connection,
    settings_for,
)

RECIPES = Path(__file__).resolve().parents[2] / "examples" / "recipes"
CHECKOUT = {"id": "PSVC001", "type": "service_reference", "summary": "Checkout API"}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite: the constructs each recipe uses are tested on both databases elsewhere."""
    return f"sqlite+aiosqlite:///{tmp_path / 'pdc.db'}"


@pytest.fixture
def api(database_url: str, tmp_path: Path, subs: FakeSubscriptions) -> Iterator[TestClient]:
    settings = settings_for(database_url, tmp_path, http_allow="127.0.0.1")
    with TestClient(create_app(settings), headers=AUTH) as client:
        make_connection(client)
        yield client


def recipe(name: str) -> tuple[bytes, dict[str, Any]]:
    """A recipe's file, and what it says."""
    text = (RECIPES / name).read_bytes()
    return text, yaml.safe_load(text)


def deploy(api: TestClient, document: bytes | dict[str, Any]) -> None:
    """Deploy a recipe as its YAML file is (or a document changed by the test)."""
    if isinstance(document, dict):
        document = yaml.safe_dump(document).encode()
    answer = api.post(
        "/api/instances", content=document, headers={"Content-Type": "application/yaml"}
    )
    assert answer.status_code == 201, answer.text


def v3_event(event_type: str, event_id: str, data: dict[str, Any], **event: Any) -> dict:
    """A V3 webhook event as PagerDuty sends it."""
    return {
        "event": {
            "id": event_id,
            "event_type": event_type,
            "resource_type": event_type.split(".")[0],
            "occurred_at": event.get("occurred_at", "2026-12-04T10:05:00Z"),
            "agent": None,
            "client": None,
            "data": data,
        }
    }


def incident_event(event_type: str, n: int, **data: Any) -> dict[str, Any]:
    """An incident's event (incident ``Q<n>`` on the checkout service unless told)."""
    occurred = {"occurred_at": data.pop("occurred_at")} if "occurred_at" in data else {}
    incident = {
        "id": f"Q{n}",
        "type": "incident",
        "self": f"https://api.pagerduty.com/incidents/Q{n}",
        "html_url": f"https://acme.pagerduty.com/incidents/Q{n}",
        "number": n,
        "status": "triggered",
        "title": "Server is on fire",
        "urgency": "high",
        "created_at": "2026-12-04T10:00:00Z",
        "service": CHECKOUT,
        "priority": None,
    }
    return v3_event(event_type, f"01EVENT{n:019d}", {**incident, **data}, **occurred)


def send(api: TestClient, subs: FakeSubscriptions, instance: str, flow: str, event: dict) -> str:
    path = f"/webhooks/{instance}/{flow}"
    answer = deliver(api, subs, path, webhook_id=event["event"]["id"], event=event)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["execution"])


def notes_at(pd: respx.MockRouter, incident: str = "Q1") -> list[str]:
    """Record every note PagerDuty is sent for ``incident``; the list fills as they come."""
    sent: list[str] = []

    def note(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content)["note"]["content"])
        return httpx2.Response(201, json={"note": {"id": f"N{len(sent)}"}})

    pd.post(f"{REST}/incidents/{incident}/notes").mock(side_effect=note)
    return sent


def test_01_a_note_on_high_urgency_incidents_only(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    text, _ = recipe("01-high-urgency-note.yaml")
    deploy(api, text)
    notes = notes_at(pd)
    high = send(
        api,
        subs,
        "high-urgency-notes",
        "note-high-urgency",
        incident_event("incident.triggered", 1),
    )
    low_event = incident_event("incident.triggered", 2, urgency="low")
    low = send(api, subs, "high-urgency-notes", "note-high-urgency", low_event)
    drain(api)
    assert notes == ["High urgency: Server is on fire on Checkout API"]
    assert execution(api, high)["status"] == "succeeded"
    skipped = execution(api, low)
    assert skipped["status"] == "succeeded"
    assert skipped["steps"][0]["steps"][0]["status"] == "skipped"


def test_02_one_note_per_alert(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    text, _ = recipe("02-note-per-alert.yaml")
    deploy(api, text)
    alerts = [
        {"id": f"A{n}", "type": "alert", "summary": f"CPU high on web-{n}"} for n in (1, 2, 3)
    ]
    pd.get(f"{REST}/incidents/Q1/alerts").respond(json={"alerts": alerts, "more": False})
    notes = notes_at(pd)
    run = send(api, subs, "alert-notes", "note-per-alert", incident_event("incident.triggered", 1))
    drain(api)
    assert execution(api, run)["status"] == "succeeded"
    assert notes == [f"Alert {n} of 3: CPU high on web-{n}" for n in (1, 2, 3)]


def test_03_p1_reassigned_on_acknowledge_and_others_left_alone(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    text, _ = recipe("03-reassign-p1-on-acknowledge.yaml")
    deploy(api, text)
    update = pd.put(f"{REST}/incidents/Q1").respond(json={"incident": {"id": "Q1"}})
    other = pd.put(f"{REST}/incidents/Q2").respond(json={"incident": {"id": "Q2"}})
    p1 = {"id": "PPRI1", "type": "priority_reference", "summary": "P1"}
    p3 = {**p1, "summary": "P3"}
    for n, priority in ((1, p1), (2, p3), (3, None)):
        event = incident_event("incident.acknowledged", n, status="acknowledged", priority=priority)
        send(api, subs, "p1-reassign", "reassign-p1", event)
    drain(api)
    assert update.call_count == 1 and other.call_count == 0
    assert json.loads(update.calls.last.request.content) == {
        "incident": {
            "type": "incident_reference",
            "escalation_policy": {"id": "PMAJOR1", "type": "escalation_policy_reference"},
        }
    }
    assert update.calls.last.request.headers["From"] == "oncall@example.com"


def test_04_resolved_in_n_minutes(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    text, _ = recipe("04-resolved-in-minutes.yaml")
    deploy(api, text)
    notes = notes_at(pd)
    event = incident_event(
        "incident.resolved", 1, status="resolved", occurred_at="2026-12-04T10:42:20Z"
    )
    run = send(api, subs, "time-to-resolve", "resolved-note", event)
    drain(api)
    assert execution(api, run)["status"] == "succeeded"
    assert notes == ["Resolved in 42 minutes (10:42 London time)."]


def test_05_a_weekday_summary_as_a_change_event(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    text, document = recipe("05-weekday-summary.yaml")
    deploy(api, text)
    assert subs.subscriptions == {}  # a schedule: nothing at PagerDuty to subscribe
    upcoming = api.get("/api/instances/morning-summary").json()["schedules"]["weekday-summary"]
    assert all("T09:00:00-0" in when for when in upcoming["next"])  # 09:00 in New York
    open_incidents = [{"id": "Q1", "title": "Disk full"}, {"id": "Q2", "title": "Slow checkout"}]
    listed = pd.get(f"{REST}/incidents").respond(json={"incidents": open_incidents, "more": False})
    change = pd.post(f"{EVENTS}/change/enqueue").respond(
        202, json={"status": "success", "message": "Change event processed"}
    )
    # The tick of Monday 7 December, 09:00 in New York, as the scheduler fires it.
    inputs = document["flows"][0]["trigger"]["inputs"]
    context = {"instance": "morning-summary", "flow": "weekday-summary", **inputs}

    async def fire() -> str:
        with SetWorkflowID("tick-monday"):
            at = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
            handle = await DBOS.start_workflow_async(schedules.tick, at, context)
        return str(await handle.get_result())

    assert api.portal.call(fire) == "recorded"
    drain(api)
    assert listed.calls.last.request.url.params.get_list("statuses[]") == ["triggered"]
    sent = json.loads(change.calls.last.request.content)
    assert sent["payload"]["summary"] == "2 incidents triggered at Mon 09:00"
    assert sent["payload"]["custom_details"] == {"incidents": ["Disk full", "Slow checkout"]}
    assert sent["routing_key"] == "R0UTINGKEY0000000000000000000000"


@pytest.mark.no_spec  # the step's request goes to the stand-in Slack, not PagerDuty
def test_06_new_incidents_posted_to_a_slack_webhook(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions, slack: Slack
) -> None:
    pass_through(pd)
    secret_url = f"{slack.url}/services/T000/B000/slack-secret-xyz"
    created = api.post(
        "/api/connections",
        json={"name": "slack-webhook", "type": "http-url", "config": {"url": secret_url}},
    )
    assert created.status_code == 201, created.text
    text, _ = recipe("06-post-to-slack.yaml")
    deploy(api, text)
    run = send(api, subs, "slack-incidents", "to-slack", incident_event("incident.triggered", 1))
    drain(api)
    assert execution(api, run)["status"] == "succeeded"
    [posted] = slack.received
    assert posted["path"] == "/services/T000/B000/slack-secret-xyz"
    assert json.loads(posted["body"]) == {
        "text": ":rotating_light: <https://acme.pagerduty.com/incidents/Q1|Server is on fire> "
        "on Checkout API (high)"
    }
    assert "authorization" not in posted["headers"]  # PagerDuty's key never leaves for Slack
    assert "slack-secret-xyz" not in json.dumps(execution(api, run))


def test_07_escalated_after_the_wait_only_if_still_unacknowledged(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    _, document = recipe("07-escalate-if-unacknowledged.yaml")
    assert document["flows"][0]["steps"][0]["wait"] == {"for": "10m"}
    quick = copy.deepcopy(document)
    quick["flows"][0]["steps"][0]["wait"]["for"] = "1s"  # the test does not wait ten minutes
    deploy(api, quick)
    pd.get(f"{REST}/incidents/Q1").respond(json={"incident": {"id": "Q1", "status": "triggered"}})
    pd.get(f"{REST}/incidents/Q2").respond(
        json={"incident": {"id": "Q2", "status": "acknowledged"}}
    )
    escalate = pd.put(f"{REST}/incidents/Q1").respond(json={"incident": {"id": "Q1"}})
    leave = pd.put(f"{REST}/incidents/Q2").respond(json={"incident": {"id": "Q2"}})
    runs = [
        send(
            api,
            subs,
            "escalate-unacknowledged",
            "escalate-after-10m",
            incident_event("incident.triggered", n),
        )
        for n in (1, 2)
    ]
    assert {execution(api, r)["status"] for r in runs} <= {"received", "running", "waiting"}
    drain(api)
    assert escalate.call_count == 1 and leave.call_count == 0
    assert json.loads(escalate.calls.last.request.content) == {
        "incident": {"type": "incident_reference", "escalation_level": 2}
    }


CHECKOUT_SERVICE = {
    "id": "PSVC001",
    "type": "service",
    "name": "Checkout API",
    "description": "Takes the money",
    "status": "active",
}


def service_event(n: int) -> dict[str, Any]:
    """A service.updated event of the checkout service: its data as PagerDuty documents
    it (a reference, its summary and teams; not its fields)."""
    data = {
        "id": "PSVC001",
        "type": "service",
        "self": f"{REST}/services/PSVC001",
        "html_url": "https://acme.pagerduty.com/services/PSVC001",
        "summary": "Checkout API",
        "alert_creation": "create_alerts_and_incidents",
        "teams": [],
    }
    return v3_event("service.updated", f"01SERVICE{n:017d}", data)


def test_08_what_changed_on_a_service_is_reported(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    text, _ = recipe("08-service-changes.yaml")
    deploy(api, text)
    change = pd.post(f"{EVENTS}/change/enqueue").respond(
        202, json={"status": "success", "message": "Change event processed"}
    )
    service = pd.get(f"{REST}/services/PSVC001")
    service.respond(json={"service": CHECKOUT_SERVICE})
    first = send(api, subs, "service-changes", "what-changed", service_event(1))
    drain(api)
    assert change.call_count == 0  # nothing known before: nothing to compare
    assert execution(api, first)["status"] == "succeeded"
    changed = {**CHECKOUT_SERVICE, "name": "Checkout", "status": "warning"}
    service.respond(json={"service": changed})
    send(api, subs, "service-changes", "what-changed", service_event(2))
    drain(api)
    assert change.call_count == 1 and service.call_count == 2
    assert json.loads(change.calls.last.request.content)["payload"]["summary"] == (
        "Checkout changed: name: Checkout API -> Checkout; status: active -> warning; "
    )
    kept = api.get("/api/instances/service-changes/state").json()
    assert kept["service/PSVC001"]["value"] == {
        "name": "Checkout",
        "description": "Takes the money",
        "status": "warning",
    }


def test_09_incidents_within_five_minutes_on_one_service_are_merged(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    text, _ = recipe("09-merge-within-5-minutes.yaml")
    deploy(api, text)
    merge = pd.put(f"{REST}/incidents/Q1/merge").respond(json={"incident": {"id": "Q1"}})
    other_service = {**CHECKOUT, "id": "PSVC002", "summary": "Search"}
    for n, service in ((1, CHECKOUT), (2, CHECKOUT), (3, other_service), (4, CHECKOUT)):
        send(
            api,
            subs,
            "merge-bursts",
            "merge-into-first",
            incident_event("incident.triggered", n, service=service),
        )
        drain(api)
    assert merge.call_count == 2
    sources = [json.loads(c.request.content)["source_incidents"] for c in merge.calls]
    assert sources == [
        [{"id": "Q2", "type": "incident_reference"}],
        [{"id": "Q4", "type": "incident_reference"}],
    ]
    kept = api.get("/api/instances/merge-bursts/state").json()
    assert kept["first/PSVC001"]["value"] == "Q1" and kept["first/PSVC002"]["value"] == "Q3"
    assert kept["first/PSVC001"]["expiresAt"] is not None  # forgotten after five minutes


def test_10_a_fixed_flow_takes_over_the_failed_run_on_retry(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    text, document = recipe("10-fix-and-retry.yaml")
    broken = copy.deepcopy(document)
    note = broken["flows"][0]["steps"][1]["inputs"]
    note["note"] = note["note"].replace("incident.title", "incident.titel")
    deploy(api, broken)
    read = pd.get(f"{REST}/incidents/Q1").respond(
        json={"incident": {"id": "Q1", "title": "Server is on fire"}}
    )
    notes = notes_at(pd)
    failed = send(
        api, subs, "incident-notes", "investigating", incident_event("incident.triggered", 1)
    )
    drain(api)
    assert execution(api, failed)["status"] == "failed"
    fixed = api.put(
        "/api/instances/incident-notes", content=text, headers={"Content-Type": "application/yaml"}
    )
    assert fixed.status_code == 200, fixed.text
    retried = api.post(f"/api/executions/{failed}/retry", json={"flow": "current"})
    assert retried.status_code == 202, retried.text
    drain(api)
    retry = execution(api, retried.json()["execution"])
    assert retry["status"] == "succeeded" and retry["flowVersion"] == "current"
    assert notes == ["Investigating: Server is on fire"]
    assert read.call_count == 1  # the step before the failure was not sent again


def test_every_recipe_is_tested() -> None:
    tested = {
        name.split("_")[1] for name in globals() if name.startswith("test_") and name[5:7].isdigit()
    }
    assert tested == {path.name[:2] for path in RECIPES.glob("*.yaml")}
