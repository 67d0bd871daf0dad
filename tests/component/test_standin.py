"""The stand-in PagerDuty (``pdc mock``): holding the next request on demand, its request log."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx2
import pytest

from pagerduty_connector.component.client import ClientSettings, PagerDutyClient, RetryPolicy
from pagerduty_connector.component.context import StepContext
from pagerduty_connector.component.manifest import Manifest
from pagerduty_connector.component.requester import run_step
from pagerduty_connector.component.standin.server import (
    FAIL_PATH,
    HOLD_PATH,
    REQUESTS_PATH,
    running,
)
from pagerduty_connector.component.standin.world import DOCUMENTED, success
from pagerduty_connector.connections import ConnectionConfig
from tests.support import DATA
from tests.support.examples import examples
from tests.support.openapi import validate_response


def test_the_next_request_named_is_held_once() -> None:
    with running() as pagerduty, httpx2.Client(base_url=pagerduty.url) as client:
        asked = client.post(HOLD_PATH, json={"method": "get", "path": "/abilities", "seconds": 0.4})
        assert asked.status_code == 204
        started = time.monotonic()
        assert client.get("/abilities").status_code == 200
        held = time.monotonic() - started
        started = time.monotonic()
        assert client.get("/abilities").status_code == 200
        after = time.monotonic() - started
    assert held >= 0.4 > after
    assert pagerduty.requests == [("GET", "/abilities")] * 2  # the control call is not one


def test_the_request_log_lists_each_request_with_its_time_and_body() -> None:
    with running() as pagerduty, httpx2.Client(base_url=pagerduty.url) as client:
        before = time.time()
        client.get("/incidents/Q1")
        note = {"note": {"content": "seen"}}
        posted = client.post("/incidents/Q1/notes", json=note, headers={"From": "a@example.com"})
        assert posted.status_code == 200  # as PagerDuty's document has it
        listed = client.get(REQUESTS_PATH).json()
        later = client.get(REQUESTS_PATH, params={"since": listed["next"] - 1}).json()
    assert [(r["method"], r["path"], r["body"]) for r in listed["requests"]] == [
        ("GET", "/incidents/Q1", None),
        ("POST", "/incidents/Q1/notes", note),
    ]
    assert all(before <= r["at"] <= time.time() for r in listed["requests"])
    assert listed["next"] == 2  # the log's own reads are not in it
    assert [r["path"] for r in later["requests"]] == ["/incidents/Q1/notes"]


def test_each_request_is_echoed_on_one_line() -> None:
    lines: list[str] = []
    with running(echo=lines.append) as pagerduty, httpx2.Client(base_url=pagerduty.url) as c:
        c.get("/incidents/Q1")
        c.post("/incidents/Q1/notes", json={"note": {"content": "Investigating: " + "x" * 300}})
    assert lines[0] == "GET /incidents/Q1"
    assert lines[1].startswith('POST /incidents/Q1/notes {"note": {"content": "Investigating: x')
    assert len(lines[1]) == 160 and lines[1].endswith("…") and "\n" not in lines[1]


@pytest.fixture
def account() -> Iterator[httpx2.Client]:
    """``pdc mock``'s stand-in (no incident made up on demand), as a client with a
    requester (``From``), as the connector sends it."""
    with (
        running(count=3, autocreate=False) as pagerduty,
        httpx2.Client(base_url=pagerduty.url, headers={"From": "jane.doe@example.com"}) as client,
    ):
        yield client


def test_an_unknown_incident_is_a_404_and_the_readme_incident_exists(
    account: httpx2.Client,
) -> None:
    missing = account.get("/incidents/NOPE")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 2100
    assert account.post("/incidents/NOPE/notes", json={"note": {"content": "x"}}).status_code == 404
    known = account.get("/incidents/Q1P5").json()["incident"]
    assert (known["title"], known["status"], known["urgency"]) == (
        "Server is on fire",
        "triggered",
        "high",
    )


def test_incidents_are_created_listed_with_filters_and_updated(account: httpx2.Client) -> None:
    new = {
        "incident": {
            "type": "incident",
            "title": "Checkout is slow",
            "urgency": "low",
            "service": {"id": "PSVC002", "type": "service_reference"},
        }
    }
    anonymous = httpx2.post(str(account.base_url).rstrip("/") + "/incidents", json=new)
    assert anonymous.status_code == 400  # PagerDuty wants a From requester
    made = account.post("/incidents", json=new)
    assert made.status_code == 201, made.text
    incident = made.json()["incident"]
    assert account.get(f"/incidents/{incident['id']}").json()["incident"] == incident
    # The service it refers to is one the account has, and lists.
    service = account.get(f"/services/{incident['service']['id']}").json()["service"]
    assert service["name"] == "Payments"
    assert incident["service"]["id"] in {
        s["id"] for s in account.get("/services").json()["services"]
    }
    assignee = incident["assignments"][0]["assignee"]["id"]
    assert account.get(f"/users/{assignee}").status_code == 200
    listed = account.get("/incidents", params={"total": "true"}).json()
    assert listed["total"] == 5  # Q1P5, three generated, this one
    low = account.get("/incidents", params={"urgencies[]": "low", "service_ids[]": "PSVC002"})
    assert [i["id"] for i in low.json()["incidents"]] == [incident["id"]]
    mine = account.get("/incidents", params={"user_ids[]": assignee}).json()["incidents"]
    assert incident["id"] in {i["id"] for i in mine}

    priority = account.get("/priorities").json()["priorities"][0]
    change = {"incident": {"type": "incident", "status": "acknowledged", "priority": priority}}
    updated = account.put(f"/incidents/{incident['id']}", json=change).json()["incident"]
    assert updated["status"] == "acknowledged" and updated["priority"]["id"] == priority["id"]
    assert updated["acknowledgements"][0]["acknowledger"]["id"] == "PUSR001"  # From: Jane
    acknowledged = account.get("/incidents", params={"statuses[]": "acknowledged"}).json()
    assert [i["id"] for i in acknowledged["incidents"]] == [incident["id"]]
    resolve = {"incidents": [{"id": incident["id"], "type": "incident", "status": "resolved"}]}
    assert account.put("/incidents", json=resolve).json()["incidents"][0]["status"] == "resolved"
    reopen = {"incident": {"type": "incident", "status": "acknowledged"}}
    assert account.put(f"/incidents/{incident['id']}", json=reopen).status_code == 400


def test_notes_and_alerts_are_kept_per_incident(account: httpx2.Client) -> None:
    assert account.get("/incidents/Q1P5/notes").json() == {"notes": []}
    posted = account.post("/incidents/Q1P5/notes", json={"note": {"content": "Investigating"}})
    assert posted.status_code == 200
    notes = account.get("/incidents/Q1P5/notes").json()["notes"]
    assert [n["content"] for n in notes] == ["Investigating"]
    assert notes[0]["user"]["id"] == "PUSR001" and notes[0]["id"] == posted.json()["note"]["id"]
    assert account.get("/incidents/Q000000000001/notes").json() == {"notes": []}
    alerts = account.get("/incidents/Q1P5/alerts").json()["alerts"]
    assert len(alerts) == 1 and alerts[0]["incident"]["id"] == "Q1P5"
    one = account.get(f"/incidents/Q1P5/alerts/{alerts[0]['id']}")
    assert one.json()["alert"] == alerts[0]
    assert account.get("/incidents/Q1P5/alerts/NOPE").status_code == 404


def test_merge_moves_the_alerts_and_resolves_the_sources(account: httpx2.Client) -> None:
    sources = {"source_incidents": [{"id": "Q000000000001", "type": "incident_reference"}]}
    merged = account.put("/incidents/Q1P5/merge", json=sources)
    assert merged.status_code == 200, merged.text
    assert merged.json()["incident"]["type"] == "incident_reference"
    target = account.get("/incidents/Q1P5").json()["incident"]
    assert target["alert_counts"]["all"] == 2
    source = account.get("/incidents/Q000000000001").json()["incident"]
    assert source["status"] == "resolved"
    assert source["resolve_reason"]["incident"]["id"] == "Q1P5"
    assert len(account.get("/incidents/Q1P5/alerts").json()["alerts"]) == 2
    itself = {"source_incidents": [{"id": "Q1P5", "type": "incident_reference"}]}
    assert account.put("/incidents/Q1P5/merge", json=itself).status_code == 400
    unknown = {"source_incidents": [{"id": "NOPE", "type": "incident_reference"}]}
    assert account.put("/incidents/Q1P5/merge", json=unknown).status_code == 404


def test_only_an_acknowledged_incident_is_snoozed(account: httpx2.Client) -> None:
    snooze = {"duration": 3600}
    refused = account.post("/incidents/Q1P5/snooze", json=snooze)
    assert refused.status_code == 400 and "not acknowledged" in refused.json()["error"]["message"]
    ack = {"incident": {"type": "incident", "status": "acknowledged"}}
    assert account.put("/incidents/Q1P5", json=ack).status_code == 200
    snoozed = account.post("/incidents/Q1P5/snooze", json=snooze)
    assert snoozed.status_code == 201
    assert snoozed.json()["incident"]["pending_actions"][0]["type"] == "unacknowledge"
    assert account.post("/incidents/Q1P5/snooze", json={"duration": 0}).status_code == 400


def test_failures_are_injected_on_demand(account: httpx2.Client) -> None:
    asked = {"method": "get", "path": "/incidents/Q1P5", "status": 429, "times": 2}
    assert account.post(FAIL_PATH, json=asked).status_code == 204
    first, second = account.get("/incidents/Q1P5"), account.get("/incidents/Q1P5")
    assert first.status_code == second.status_code == 429
    assert first.headers["ratelimit-reset"] == "1"
    assert account.get("/incidents/Q1P5").status_code == 200
    # The list too (served from its cache of encoded pages otherwise), once.
    once = {"method": "GET", "path": "/incidents", "status": 500}
    assert account.post(FAIL_PATH, json=once).status_code == 204
    assert account.get("/incidents").status_code == 500
    assert account.get("/incidents").status_code == 200


# PagerDuty's example ids (in the manifest's input examples) as the stand-in's account
# has them: the README's incident, generated ones, its service, user and priority.
ACCOUNT_IDS = {
    "PT4KHLK": "Q1P5",
    "P8JOGX7": "Q000000000001",
    "PPVZH9X": "Q000000000002",
    "PQMF62U": "Q000000000000",
    "PYJ9K7I": "Q000000000003",
    "PWIXJZS": "PSVC001",
    "PIJ90N7": "PSVC001",
    "PXPGF42": "PUSR001",
    "P53ZZH5": "PPRI001",
}
# Where PagerDuty's own document disagrees with itself, narrowly: its example schedule
# lists users where the schema wants objects, it gives GET .../overrides a 201, and its
# example rendered template has a list of warnings where the schema wants an object.
DOCUMENT_DEFECTS = {"getSchedule", "listScheduleOverrides", "renderTemplate"}


class Recording(httpx2.AsyncHTTPTransport):
    """A real transport that keeps every answer, body read."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[httpx2.Response] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        await response.aread()
        self.answers.append(response)
        return response


def test_the_documented_statuses_are_the_documents() -> None:
    """``world.DOCUMENTED`` (the stand-in ships without the document) against it."""
    document = json.loads((DATA / "pagerduty" / "rest-openapiv3.json").read_text())
    for (method, template), status in DOCUMENTED.items():
        codes = [c for c in document["paths"][template][method.lower()]["responses"] if c < "300"]
        assert codes == [str(status)], (method, template, codes)
    for key, (method, template) in {
        "createIncident": ("POST", "/incidents"),
        "deleteService": ("DELETE", "/services/{id}"),
        "updateIncident": ("PUT", "/incidents/{id}"),
    }.items():
        codes = [c for c in document["paths"][template][method.lower()]["responses"] if c < "300"]
        assert codes == [str(success(method, template))], key


async def test_every_action_is_answered_as_the_openapi_document_says(manifest: Manifest) -> None:
    """Each action of the manifest with a request, run by the connector with its example
    inputs against ``pdc mock``'s stand-in: answered 2xx, and the answer valid against
    PagerDuty's OpenAPI document."""
    transport = Recording()
    with running(count=4, autocreate=False) as pagerduty:
        made = httpx2.post(
            f"{pagerduty.url}/webhook_subscriptions",
            json={
                "webhook_subscription": {
                    "delivery_method": {"type": "http_delivery_method", "url": "https://x.test"},
                    "events": ["incident.triggered"],
                    "filter": {"type": "account_reference"},
                    "type": "webhook_subscription",
                }
            },
        ).json()["webhook_subscription"]["id"]
        ids = {**ACCOUNT_IDS, "sampleWebhookId": made}
        connection = ConnectionConfig("apiKey", "u+stand-in", "jane.doe@example.com", "us")
        settings = ClientSettings(api_url=pagerduty.url, retry=RetryPolicy(max_retries=0))
        async with PagerDutyClient(connection, settings, transport=transport) as client:
            ctx = StepContext(manifest=manifest, client=client)
            # Deletions last: what they delete, the others use.
            ordered = sorted(
                manifest.actions, key=lambda a: bool(a.request and a.request.method == "DELETE")
            )
            for action in ordered:
                if action.request is None:
                    continue
                text = json.dumps(examples(action))
                for example_id, ours in ids.items():
                    text = text.replace(f'"{example_id}"', f'"{ours}"')
                inputs = json.loads(text)
                if "alertId" in inputs:
                    inputs["alertId"] = "AQ1P5"
                await run_step(ctx, action.key, inputs)  # raises on anything but 2xx
                answer = transport.answers[-1]
                if action.key in DOCUMENT_DEFECTS:
                    continue
                # The document names PagerDuty's host; the request is the same otherwise.
                sent = answer.request
                moved = httpx2.Request(
                    sent.method,
                    sent.url.copy_with(scheme="https", host="api.pagerduty.com", port=None),
                    headers=sent.headers,
                    content=sent.content,
                )
                as_pagerduty = httpx2.Response(
                    answer.status_code, headers=answer.headers, content=answer.content
                )
                as_pagerduty.request = moved
                validate_response(as_pagerduty)


def test_a_client_gone_before_its_answer_prints_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A runtime killed while the stand-in holds its request: no traceback on the
    stand-in's console (``pdc mock``'s, or a test's output)."""
    with running(hold=("GET", "/incidents/Q1", 0.3)) as pagerduty:
        host, port = pagerduty.server_address[:2]
        with socket.create_connection((host, port)) as sock:
            sock.sendall(b"GET /incidents/Q1 HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        time.sleep(0.6)  # the held answer meets a reset connection
        assert httpx2.get(f"{pagerduty.url}/abilities").status_code == 200
    assert "Traceback" not in capsys.readouterr().err
