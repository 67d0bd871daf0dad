"""The runtime over HTTP, on SQLite and on a real PostgreSQL: connections, deploys,
webhook intake, flow execution and the execution log. PagerDuty is mocked by respx."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import respx
import yaml
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.app import Runtime, create_app
from pagerduty_connector.runtime.settings import RuntimeSettings
from pagerduty_connector.runtime.store import Store
from pagerduty_connector.triggers.signature import sign
from tests.conftest import REST
from tests.support.processes import wait_until
from tests.support.runtime import (
    ADMIN,
    API_KEY,
    AUTH,
    EVENT,
    FLOW,
    INCIDENT,
    PUBLIC,
    answer_incident,
    deliver,
    deploy_acme,
    drain,
    make_connection,
    secret_for,
    settings_for,
)


def test_flow_runs_from_a_webhook_and_is_recorded(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    get = pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    note = pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    connection = make_connection(api)
    assert connection["secrets"] == {"apiKey": "***"}

    deployed = api.post(
        "/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]}
    )
    assert deployed.status_code == 201, deployed.text
    url = deployed.json()["webhookUrls"]["on-incident"]
    assert url == f"{PUBLIC}/webhooks/acme/on-incident"

    answer = deliver(api, subs, "/webhooks/acme/on-incident")
    assert answer.status_code == 202
    execution_id = answer.json()["execution"]
    drain(api)

    assert get.call_count == 1 and note.call_count == 1
    sent = note.calls.last.request
    assert json.loads(sent.content) == {"note": {"content": "Investigating: Server is on fire"}}
    assert sent.headers["From"] == "oncall@example.com"
    assert sent.headers["Authorization"] == f"Token token={API_KEY}"

    record = api.get(f"/api/executions/{execution_id}").json()
    assert record["status"] == "succeeded" and record["responseStatus"] == 202
    sent_event = {**EVENT, "event": {**EVENT["event"], "id": "ev-wh-1"}}  # see ``deliver``
    assert json.loads(record["receivedBody"]) == sent_event
    assert record["trigger"]["event"]["data"]["id"] == "Q1P5"
    assert [(s["name"], s["status"]) for s in record["steps"]] == [
        ("incident", "succeeded"),
        ("note", "succeeded"),
    ]
    assert record["steps"][1]["inputs"] == {
        "id": "Q1P5",
        "note": "Investigating: Server is on fire",
    }
    assert record["steps"][0]["result"] == {"data": INCIDENT}

    again = deliver(api, subs, "/webhooks/acme/on-incident")  # a redelivery: same X-Webhook-Id
    assert again.status_code == 200 and again.json()["duplicate"] is True
    drain(api)
    assert get.call_count == 1
    assert len(api.get("/api/executions", params={"instance": "acme"}).json()) == 1

    seen = [
        api.get("/api/connections").text,
        api.get("/api/connections/ops").text,
        api.get("/api/instances/acme").text,
        api.get("/api/executions").text,
        json.dumps(record),
        "\n".join(r.getMessage() for r in caplog.records),
    ]
    signing_secret = secret_for(subs, "/webhooks/acme/on-incident")
    secrets = (API_KEY, ADMIN, signing_secret)
    assert not [text_ for text_ in seen if any(secret in text_ for secret in secrets)]


async def test_secrets_are_encrypted_in_the_database(
    runtime_settings: RuntimeSettings, pd: respx.MockRouter
) -> None:
    with TestClient(create_app(runtime_settings), headers=AUTH) as client:
        make_connection(client)
    store = Store(runtime_settings.resolved_database_url())
    async with store.engine.connect() as raw:
        dump = [
            str(row)
            for table in ("connections", "instances", "executions")
            for row in (await raw.execute(text(f"SELECT * FROM {table}"))).all()
        ]
    await store.close()
    assert dump and not any(API_KEY in row for row in dump)


async def test_a_secret_quoted_in_a_delivery_is_masked_wherever_it_is_kept(
    runtime_settings: RuntimeSettings, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """Measured before: the body was masked but the trigger stored from it was not, so a
    key quoted in a payload was in the database, the API and the console. Also a key
    written with a JSON escape (``\\u002b`` for ``+``), and one in a header."""
    answer_incident(pd)
    path = "/webhooks/acme/on-incident"
    escaped = API_KEY.replace("+", "\\u002b")
    with TestClient(create_app(runtime_settings), headers=AUTH) as client:
        deploy_acme(client)
        secret = secret_for(subs, path)
        ids = []
        for n, title in enumerate([f"key {API_KEY} leaked", None]):
            event = copy.deepcopy(EVENT)
            event["event"]["id"] = f"leak-{n}"
            event["event"]["data"]["title"] = title or "marker"
            body = json.dumps(event).replace("marker", f"key {escaped} leaked").encode()
            answer = client.post(
                path,
                content=body,
                headers={
                    "X-PagerDuty-Signature": sign(body, secret),
                    "X-Webhook-Id": f"leak-{n}",
                    "X-Forwarded-Note": f"copied {API_KEY}",
                },
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["execution"])
        drain(client)
        shown = [client.get(f"/api/executions/{i}").json() for i in ids]
    for record in shown:
        assert record["status"] == "succeeded", record
        assert record["trigger"]["event"]["data"]["title"] == "key *** leaked"
        assert record["headers"]["x-forwarded-note"] == "copied ***"
        assert record["trigger"]["headers"]["x-forwarded-note"] == "copied ***"
        assert API_KEY not in json.dumps(record)
    store = Store(runtime_settings.resolved_database_url())
    async with store.engine.connect() as raw:
        rows = [str(r) for r in (await raw.execute(text("SELECT * FROM executions"))).all()]
    await store.close()
    assert len(rows) == 2 and not any(API_KEY in row for row in rows)


def test_an_event_sent_again_under_a_new_webhook_id_starts_nothing(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """A captured signed delivery replayed with a new X-Webhook-Id is the same PagerDuty
    event: recorded once, run once (measured before: a second run). The same event to
    another flow, an admin test run sent twice and a replay each still run."""
    answer_incident(pd)
    second_flow = {**FLOW, "name": "also"}
    deploy_acme(api, [FLOW, second_flow])
    event_id = EVENT["event"]["id"]
    first = deliver(api, subs, "/webhooks/acme/on-incident", "original", event_id=event_id)
    replayed = deliver(
        api, subs, "/webhooks/acme/on-incident", "captured-and-replayed", event_id=event_id
    )
    assert first.status_code == 202
    assert replayed.status_code == 200
    assert replayed.json() == {
        "duplicate": True,
        "webhookId": "captured-and-replayed",
        "eventId": event_id,
    }
    # The same event to another flow (its own subscription, its own webhook id) runs.
    other_flow = deliver(api, subs, "/webhooks/acme/also", "to-also", event_id=event_id)
    assert other_flow.status_code == 202
    tests = [
        api.post("/api/instances/acme/flows/on-incident/test", content=json.dumps(EVENT))
        for _ in range(2)
    ]
    assert [t.status_code for t in tests] == [202, 202]
    replay = api.post(f"/api/executions/{first.json()['execution']}/replay")
    assert replay.status_code == 202, replay.text
    drain(api)
    executions = api.get("/api/executions").json()
    assert sorted(e["flow"] for e in executions) == ["also"] + ["on-incident"] * 4
    assert {e["status"] for e in executions} == {"succeeded"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f["steps"][0].update(action="getIncidnt"), "unknown action 'getIncidnt'"),
        (
            lambda f: f["steps"][1]["inputs"].update(id="{{ steps.nope.data }}"),
            "refers to step 'nope'",
        ),
        (lambda f: f["steps"][0]["inputs"].update(include="bogus"), "'bogus' is not one of"),
        (lambda f: f.update(name="Bad Name"), "flows.0.name"),
    ],
)
def test_bad_flows_are_rejected_and_nothing_is_stored(
    api: TestClient, change: Any, message: str
) -> None:
    make_connection(api)
    flow = json.loads(json.dumps(FLOW))
    change(flow)
    answer = api.post("/api/instances", json={"name": "acme", "connection": "ops", "flows": [flow]})
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]
    assert api.get("/api/instances").json() == []


def test_rejected_api_key_is_not_stored(api: TestClient, pd: respx.MockRouter) -> None:
    pd.get(f"{REST}/abilities").respond(401, json={"error": {"message": "Unauthorized"}})
    answer = api.post(
        "/api/connections",
        json={"name": "ops", "type": "pagerduty-api-key", "config": {"apiKey": "wrong"}},
    )
    assert answer.status_code == 400
    assert "PagerDuty rejected the API key (HTTP 401" in answer.json()["error"]["message"]
    assert api.get("/api/connections").json() == []


def test_an_unreachable_pagerduty_is_said_soon_naming_its_url(
    api: TestClient, pd: respx.MockRouter
) -> None:
    """A person creating a connection waits on the key check: PagerDuty refusing the
    connection is tried twice, not for a flow step's ten seconds, and the answer names
    where it tried and what to check; nothing is stored."""
    abilities = pd.get(f"{REST}/abilities").mock(side_effect=httpx2.ConnectError("refused"))
    begun = time.monotonic()
    answer = api.post(
        "/api/connections",
        json={"name": "ops", "type": "pagerduty-api-key", "config": {"apiKey": "u+k"}},
    )
    assert time.monotonic() - begun < 5 and abilities.call_count == 2
    assert answer.status_code == 502
    message = answer.json()["error"]["message"]
    assert f"could not reach PagerDuty at {REST}" in message, message
    assert "nothing was stored" in message and "PAGERDUTY_API_URL" in message
    assert api.get("/api/connections").json() == []


def test_key_rotation_is_checked_and_keeps_the_old_key_on_failure(
    api: TestClient, pd: respx.MockRouter
) -> None:
    make_connection(api)
    abilities = pd.get(f"{REST}/abilities")
    abilities.respond(403, json={"error": {"message": "Forbidden"}})
    failed = api.put("/api/connections/ops", json={"config": {"apiKey": "u+new-bad"}})
    assert failed.status_code == 400
    abilities.respond(json={"abilities": []})
    get = pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    trial = {"connection": "ops", "action": "getIncident", "inputs": {"id": "Q1P5"}}
    assert api.post("/api/test-runs", json=trial).json() == {"result": {"data": INCIDENT}}
    assert get.calls.last.request.headers["Authorization"] == f"Token token={API_KEY}"
    rotated = api.put("/api/connections/ops", json={"config": {"apiKey": "u+rotated-key"}})
    assert rotated.status_code == 200
    api.post("/api/test-runs", json=trial)
    assert get.calls.last.request.headers["Authorization"] == "Token token=u+rotated-key"


def test_connection_in_use_cannot_be_deleted(api: TestClient) -> None:
    make_connection(api)
    api.post("/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]})
    refused = api.delete("/api/connections/ops")
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == "connection 'ops' is used by instances: acme"
    assert api.delete("/api/instances/acme").status_code == 204
    assert api.delete("/api/connections/ops").status_code == 204


def test_disabled_instance_records_and_skips(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    make_connection(api)
    api.post("/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]})
    assert api.post("/api/instances/acme/disable").json()["enabled"] is False
    before = len(pd.calls)
    answer = deliver(api, subs, "/webhooks/acme/on-incident")
    drain(api)
    assert answer.status_code == 202 and answer.json()["status"] == "skipped"
    record = api.get(f"/api/executions/{answer.json()['execution']}").json()
    assert record["status"] == "skipped" and record["steps"] == []
    assert record["reason"] == "instance is disabled"
    assert len(pd.calls) == before


def test_flows_can_be_deployed_as_yaml_and_tried_with_a_sample_payload(
    api: TestClient, pd: respx.MockRouter
) -> None:
    get = pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    note = pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    make_connection(api)
    document = yaml.safe_dump({"name": "acme", "connection": "ops", "flows": [FLOW]})
    deployed = api.post(
        "/api/instances", content=document, headers={"Content-Type": "application/yaml"}
    )
    assert deployed.status_code == 201, deployed.text
    assert deployed.json()["deploy"]["log"] == ["on-incident: created subscription PSUB0001"]
    tried = api.post("/api/instances/acme/flows/on-incident/test", content=json.dumps(EVENT))
    assert tried.status_code == 202
    drain(api)
    record = api.get(f"/api/executions/{tried.json()['execution']}").json()
    assert record["status"] == "succeeded" and record["headers"] == {"x-pdc-test-run": "true"}
    assert get.call_count == 1 and note.call_count == 1
    broken = api.post(
        "/api/instances", content=b"name: [", headers={"Content-Type": "application/yaml"}
    )
    assert broken.status_code == 400 and "not YAML" in broken.json()["error"]["message"]


def test_executions_of_one_flow_run_up_to_the_concurrency_limit(
    database_url: str, tmp_path: Path, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    settings = settings_for(database_url, tmp_path, flow_concurrency=2)
    running = peak = 0
    gate = asyncio.Event()

    async def held_incident(request: httpx2.Request) -> httpx2.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()  # held until the test has seen the other four wait
        running -= 1
        return httpx2.Response(200, json=INCIDENT)

    pd.get(f"{REST}/incidents/Q1P5").mock(side_effect=held_incident)
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    with TestClient(create_app(settings), headers=AUTH) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        make_connection(client)
        client.post("/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]})
        for n in range(6):
            assert deliver(client, subs, "/webhooks/acme/on-incident", f"wh-{n}").status_code == 202
        wait_until(
            lambda: running == 2 and client.portal.call(engine.waiting, "acme", "on-incident") == 4,  # type: ignore[union-attr]
            30,
            "two executions inside the limit and four waiting for it",
        )
        assert peak == 2
        client.portal.call(gate.set)  # type: ignore[union-attr]
        drain(client)
        statuses = [e["status"] for e in client.get("/api/executions").json()]
    assert statuses == ["succeeded"] * 6
    assert peak == 2


def test_webhook_errors(api: TestClient, subs: FakeSubscriptions) -> None:
    make_connection(api)
    api.post("/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]})
    assert api.post("/webhooks/acme/nope", content=b"{}").status_code == 404
    path = "/webhooks/acme/on-incident"
    # Correctly signed, so each 400 comes from the body itself, not the signature.
    secret = secret_for(subs, path)
    for body, problem in (
        (b"not json", "not JSON: Expecting value (line 1, column 1)"),
        (b'{"messages": []}', "is not a PagerDuty V3 webhook event"),
        (b"\xff\xfe", "not UTF-8 text (byte 0)"),
    ):
        answer = api.post(path, content=body, headers={"X-PagerDuty-Signature": sign(body, secret)})
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["type"] == "InputError"
        assert problem in answer.json()["error"]["message"]
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    assert api.post(path, content=big).status_code == 413
    # Sent in chunks with no Content-Length, it is refused while it is read.
    chunks = (b" " * 65536 for _ in range(40))
    refused = api.post(path, content=chunks)
    assert refused.status_code == 413 and "over 2 MB" in refused.json()["error"]["message"]
    assert api.get(path).status_code == 405
    assert api.get("/api/executions").json() == []


def test_deliveries_answer_as_they_would_through_starlette(
    api: TestClient, subs: FakeSubscriptions
) -> None:
    """Deliveries skip Starlette's middlewares and router (``Runtime``): every refusal,
    and an error nothing foresaw, gets the answer Starlette's own path gives."""
    make_connection(api)
    api.post("/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]})
    app = api.app
    assert isinstance(app, Runtime)
    path = "/webhooks/acme/on-incident"
    body = json.dumps(EVENT).encode()
    signed = sign(body, secret_for(subs, path))

    async def answer(via: Any, path: str, body: bytes, headers: dict[str, str]) -> Any:
        """Status, body and raised exception of one request through ``via``."""
        sent: list[dict[str, Any]] = []
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }

        async def receive() -> dict[str, Any]:
            if body == b"reset":  # the sender went away mid-body: the server raises
                raise ConnectionResetError("reset by peer")
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        raised = None
        try:
            await via(app, scope, receive, send)
        except Exception as exc:
            raised = type(exc)
        content = b"".join(m.get("body", b"") for m in sent[1:])
        return sent[0]["status"], content, raised

    cases = [
        (path, b"not json", {"X-PagerDuty-Signature": sign(b"not json", secret_for(subs, path))}),
        (path, body, {"X-PagerDuty-Signature": "v1=" + "0" * 64}),
        (path, body, {}),
        ("/webhooks/acme/nope", body, {"X-PagerDuty-Signature": signed}),
        ("/webhooks/nobody/on-incident", body, {"X-PagerDuty-Signature": signed}),
        (path, body, {"Content-Length": str(3 * 1024 * 1024)}),
        (path, b"reset", {"X-PagerDuty-Signature": signed}),
    ]
    portal = api.portal
    assert portal is not None
    answers = []
    for case in cases:
        direct = portal.call(answer, Runtime.__call__, *case)
        assert direct == portal.call(answer, Starlette.__call__, *case), case
        answers.append(direct)
    assert [status for status, _, _ in answers] == [400, 403, 400, 404, 404, 413, 500]
    assert answers[-1][2] is ConnectionResetError  # raised again, for the server to log
    assert api.get("/api/executions").json() == []  # nothing refused was recorded
    # Other shapes of path still go through the router.
    assert api.post(f"{path}/more", content=body).status_code == 404
    assert deliver(api, subs, path).status_code == 202


def test_management_api_needs_the_admin_token(runtime_settings: RuntimeSettings, pd: Any) -> None:
    with TestClient(create_app(runtime_settings)) as client:
        assert client.get("/api/connections").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.get("/api/instances", headers=wrong).status_code == 401
        assert client.get("/health").json() == {"status": "ok"}
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/api/connections", "/api/instances/{name}", "/webhooks/{instance}/{flow}"} <= set(
            paths
        )
        delivery = paths["/webhooks/{instance}/{flow}"]["post"]
        assert delivery["summary"].startswith("Receive a signed PagerDuty webhook")


def test_component_specification(api: TestClient) -> None:
    spec = api.get("/api/component").json()
    assert len(spec["actions"]) == 54 and len(spec["dataSources"]) == 4
    api_key = next(c for c in spec["connections"] if c["key"] == "pagerduty-api-key")
    assert api_key["secretInputs"] == ["apiKey"]
    assert api_key["inputs"]["properties"]["apiKey"]["x-secret"] is True
    get_incident = next(a for a in spec["actions"] if a["key"] == "getIncident")
    assert get_incident["inputs"]["required"] == ["id"]
    assert get_incident["scope"] == "incidents.read"
    # What an action returns, by PagerDuty's example: what later steps read.
    assert get_incident["output"]["example"]["data"]["incident"]["id"] == "PT4KHLK"
    # The flow language, for editors: every step kind with its schema, the schedule
    # trigger, and the template functions and filters.
    flows = spec["flows"]
    kinds = {k["key"]: k for k in flows["stepKinds"]}
    assert set(kinds) == {"action", "if", "switch", "forEach", "wait", "http", "set", "state"}
    assert all(k["summary"] and k["schema"]["type"] == "object" for k in kinds.values())
    assert "else" in kinds["if"]["schema"]["properties"]  # by its alias, as flows write it
    assert [t["key"] for t in flows["triggers"]] == ["schedule"]
    assert flows["triggers"][0]["inputs"]["required"] == ["cron"]
    assert "now" in flows["templates"]["functions"]
    assert "minutes_between" in flows["templates"]["filters"]


def test_a_misspelt_name_is_answered_with_the_nearest_one(api: TestClient) -> None:
    """Instances, flows, actions, data sources and trigger events: a 4xx that names the
    input and suggests what was meant (the CLI's ``describe`` does the same)."""
    make_connection(api)
    assert api.post(
        "/api/instances", json={"name": "acme-oncall", "connection": "ops", "flows": [FLOW]}
    ).is_success

    def message(answer: Any, status: int) -> str:
        assert answer.status_code == status, answer.text
        return answer.json()["error"]["message"]

    said = message(api.get("/api/instances/acme-oncal"), 404)
    assert said == "no instance 'acme-oncal' (did you mean 'acme-oncall'?)"
    said = message(api.post("/api/instances/acme-oncall/flows/on-incidnt/test", json={}), 404)
    assert said.endswith("(did you mean 'on-incident'?)")
    said = message(api.get("/api/connections/opss"), 404)
    assert said == "no connection 'opss' (did you mean 'ops'?)"
    # An execution id is not a name: no neighbour is looked for among them.
    assert "did you mean" not in message(api.get("/api/executions/0000"), 404)
    trial = {"connection": "ops", "action": "getIncidnet", "inputs": {"id": "Q1"}}
    assert "(did you mean 'getIncident'?)" in message(api.post("/api/test-runs", json=trial), 400)
    flow = json.loads(json.dumps(FLOW))
    flow["trigger"]["inputs"]["events"] = ["incident.trigerred"]
    deploy = {"name": "other", "connection": "ops", "flows": [flow]}
    said = message(api.post("/api/instances", json=deploy), 400)
    assert "incident.trigerred" in said and "(did you mean 'incident.triggered'?)" in said
    # A misspelt input whose value is a template is named, not taken for the input it
    # was meant to be and reported missing.
    flow = json.loads(json.dumps(FLOW))
    note = next(s for s in flow["steps"] if s["action"] == "createIncidentNote")
    note["inputs"]["nte"] = note["inputs"].pop("note")
    said = message(api.post("/api/instances", json={**deploy, "flows": [flow]}), 400)
    assert "nte" in said and "(did you mean 'note'?)" in said and "is required" not in said
