"""The webhook triggers: subscriptions kept exact across deploy, redeploy and teardown,
and signed intake. PagerDuty's subscriptions API is a stateful fake (``subs``) behind
respx; every request the runtime sends is still checked against the official spec."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx2
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from starlette.testclient import TestClient

from pagerduty_connector.component.errors import SignatureError
from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.store import Store
from pagerduty_connector.triggers.signature import parse_signatures, sign, verify_signature
from tests.conftest import REST
from tests.support.runtime import (
    EVENT,
    FLOW,
    INCIDENT,
    PUBLIC,
    deliver,
    drain,
    make_connection,
    secret_for,
)

URL = f"{PUBLIC}/webhooks/acme/on-incident"
PATH = "/webhooks/acme/on-incident"


def second_flow(name: str = "on-service", **inputs: Any) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {
            "type": "serviceTrigger",
            "inputs": {
                "events": ["service.updated"],
                "webhookDescription": "services",
                "filterType": "team_reference",
                "filterId": "PTEAM01",
                **inputs,
            },
        },
        "steps": [{"name": "services", "action": "listServices"}],
    }


def deploy(api: TestClient, *flows: dict[str, Any], method: str = "POST") -> httpx2.Response:
    body = {"connection": "ops", "flows": list(flows or [FLOW])}
    if method == "POST":
        return api.post("/api/instances", json={"name": "acme", **body})
    return api.put("/api/instances/acme", json=body)


def calls(pd: respx.MockRouter, method: str, path_start: str) -> list[httpx2.Request]:
    return [
        c.request
        for c in pd.calls
        if c.request.method == method and c.request.url.path.startswith(path_start)
    ]


# --- deploy ----------------------------------------------------------------------------


def test_deploy_creates_one_subscription_and_redeploys_never_duplicate(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    make_connection(api)
    assert deploy(api).status_code == 201
    (created,) = calls(pd, "POST", "/webhook_subscriptions")
    assert json.loads(created.content) == {
        "webhook_subscription": {
            "type": "webhook_subscription",
            "delivery_method": {"type": "http_delivery_method", "url": URL},
            "events": ["incident.triggered"],
            "description": "ops",
            "filter": {"type": "account_reference"},
        }
    }
    (sub_id,) = subs.subscriptions

    for _ in range(2):
        again = deploy(api, method="PUT")
        assert again.status_code == 200 and again.json()["deploy"]["log"] == []
    assert list(subs.subscriptions) == [sub_id]
    assert len(calls(pd, "POST", "/webhook_subscriptions")) == 1

    changed = json.loads(json.dumps(FLOW))
    changed["trigger"]["inputs"]["events"] = ["incident.triggered", "incident.resolved"]
    assert deploy(api, changed, method="PUT").json()["deploy"]["log"] == [
        "on-incident: updated events"
    ]
    (update,) = calls(pd, "PUT", "/webhook_subscriptions")
    assert update.url.path == f"/webhook_subscriptions/{sub_id}"
    assert json.loads(update.content) == {
        "webhook_subscription": {"events": ["incident.triggered", "incident.resolved"]}
    }
    assert list(subs.subscriptions) == [sub_id]
    # The signing secret is kept from the create answer and still verifies deliveries.
    assert deliver(api, subs, PATH).status_code == 202


async def test_signing_secret_is_sealed_at_rest(
    api: TestClient, subs: FakeSubscriptions, runtime_settings: Any
) -> None:
    make_connection(api)
    deploy(api)
    (secret,) = subs.secrets.values()
    store = Store(runtime_settings.resolved_database_url())
    async with store.engine.connect() as raw:
        rows = (await raw.execute(text("SELECT * FROM webhook_subscriptions"))).all()
    await store.close()
    assert len(rows) == 1 and secret not in str(rows)
    assert secret not in api.get("/api/instances/acme").text


def test_subscriptions_we_cannot_verify_are_replaced(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    make_connection(api)
    stale = [subs.add(URL), subs.add(URL)]  # left by an older runtime: no secret known
    foreign = subs.add(f"{PUBLIC}/webhooks/acme-2/on-incident")
    log = deploy(api).json()["deploy"]["log"]
    assert set(subs.subscriptions) - {foreign} == {"PSUB0004"}
    assert not set(stale) & set(subs.subscriptions)
    assert log[-1] == "on-incident: created subscription PSUB0004"
    assert deliver(api, subs, PATH).status_code == 202


def test_temporarily_disabled_subscription_is_re_enabled_on_redeploy(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    make_connection(api)
    deploy(api)
    (sub,) = subs.subscriptions.values()
    sub["delivery_method"]["temporarily_disabled"] = True
    sub["active"] = False
    log = deploy(api, method="PUT").json()["deploy"]["log"]
    assert log == [
        "on-incident: updated active",
        f"on-incident: re-enabled subscription {sub['id']}",
    ]
    assert [r.url.path for r in calls(pd, "POST", "/webhook_subscriptions/")] == [
        f"/webhook_subscriptions/{sub['id']}/enable"
    ]
    assert sub["delivery_method"]["temporarily_disabled"] is False and sub["active"] is True


def test_redeploy_removes_the_subscription_of_a_removed_flow(
    api: TestClient, subs: FakeSubscriptions
) -> None:
    make_connection(api)
    assert deploy(api, FLOW, second_flow()).status_code == 201
    assert subs.urls() == [URL, f"{PUBLIC}/webhooks/acme/on-service"]
    service = next(s for s in subs.subscriptions.values() if s["events"] == ["service.updated"])
    assert service["filter"] == {"type": "team_reference", "id": "PTEAM01"}
    assert deploy(api, FLOW, method="PUT").status_code == 200
    assert subs.urls() == [URL]


def test_a_deploy_failing_half_way_leaves_no_orphan_and_says_why(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    make_connection(api)
    subs.fail("POST", r"^/webhook_subscriptions$", status=500, nth=2)
    failed = deploy(api, FLOW, second_flow())
    assert failed.status_code == 502
    message = failed.json()["error"]["message"]
    assert "deploy failed at flow 'on-service': creating its webhook subscription" in message
    assert "HTTP 500" in message and "deleted 1 subscription(s) it created" in message
    assert subs.subscriptions == {}
    assert api.get("/api/instances").json() == []
    assert api.get("/api/connections/ops").status_code == 200


def test_a_failed_redeploy_keeps_the_deployed_instance(
    api: TestClient, subs: FakeSubscriptions
) -> None:
    make_connection(api)
    deploy(api)
    before = api.get("/api/instances/acme").json()
    subs.fail("POST", r"^/webhook_subscriptions$", status=403)
    assert deploy(api, FLOW, second_flow(), method="PUT").status_code == 502
    assert api.get("/api/instances/acme").json() == before
    assert subs.urls() == [URL]
    assert deliver(api, subs, PATH).status_code == 202


def test_subscribed_flows_need_a_connection(api: TestClient, subs: FakeSubscriptions) -> None:
    answer = api.post("/api/instances", json={"name": "acme", "flows": [FLOW]})
    assert answer.status_code == 400
    assert "flows 'on-incident' subscribe to PagerDuty webhooks" in answer.text
    assert subs.subscriptions == {} and api.get("/api/instances").json() == []


# --- teardown --------------------------------------------------------------------------


def test_teardown_deletes_every_subscription_of_the_instance_across_pages(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    make_connection(api)
    deploy(api)
    subs.page_size = 2
    for n in range(3):
        subs.add(f"{PUBLIC}/webhooks/acme/old-flow-{n}")
    keep = [f"{PUBLIC}/webhooks/acme-2/on-incident", "https://elsewhere.example.com/hook"]
    for url in keep:
        subs.add(url)
    assert len(subs.subscriptions) == 6  # three pages of two

    assert api.delete("/api/instances/acme").status_code == 204
    assert subs.urls() == sorted(keep)
    offsets = [r.url.params["offset"] for r in calls(pd, "GET", "/webhook_subscriptions")]
    assert offsets[-3:] == ["0", "2", "4"]
    assert api.get("/api/instances").json() == []


def test_a_failed_teardown_is_marked_and_a_retry_finishes_it(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    make_connection(api)
    deploy(api, FLOW, second_flow())
    subs.fail("DELETE", r"^/webhook_subscriptions/", status=403, nth=2)  # 5xx would be retried
    failed = api.delete("/api/instances/acme")
    assert failed.status_code == 502
    assert "teardown of instance 'acme' is incomplete" in failed.json()["error"]["message"]
    kept = api.get("/api/instances/acme").json()
    assert kept["enabled"] is False
    assert kept["state"]["teardown"] == "incomplete" and "HTTP 403" in kept["state"]["reason"]
    assert len(subs.subscriptions) == 1

    assert api.delete("/api/instances/acme").status_code == 204
    assert subs.subscriptions == {}
    assert api.get("/api/instances").json() == []


# --- intake ----------------------------------------------------------------------------


def test_only_a_genuine_delivery_runs_and_only_once(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    get = pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    make_connection(api)
    deploy(api)
    secret = secret_for(subs, PATH)
    body = json.dumps(EVENT).encode()

    def post(content: bytes, signature: str | None, webhook_id: str) -> int:
        headers = {"X-Webhook-Id": webhook_id}
        if signature is not None:
            headers["X-PagerDuty-Signature"] = signature
        return api.post(PATH, content=content, headers=headers).status_code

    tampered = body.replace(b"Server is on fire", b"Server is on ice!")
    refused = {
        "unsigned": post(body, None, "a"),
        "empty": post(body, "", "b"),
        "malformed": post(body, "sha256=" + sign(body, secret)[3:], "c"),
        "not hex": post(body, "v1=zz", "d"),
        "forged": post(body, sign(body, "guessed-secret"), "e"),
        "tampered body": post(tampered, sign(body, secret), "f"),
        "non-JSON": post(b"not json", sign(b"not json", secret), "g"),
        "oversize": post(b" " * (2 * 1024 * 1024 + 1), sign(b"", secret), "h"),
    }
    assert refused == {
        "unsigned": 400,
        "empty": 400,
        "malformed": 400,
        "not hex": 400,
        "forged": 403,
        "tampered body": 403,
        "non-JSON": 400,
        "oversize": 413,
    }
    assert api.get("/api/executions").json() == []

    assert post(body, sign(body, secret), "genuine") == 202
    assert post(body, sign(body, secret), "genuine") == 200  # a redelivery
    drain(api)
    assert get.call_count == 1
    assert [e["status"] for e in api.get("/api/executions").json()] == ["succeeded"]


def test_signatures_during_secret_rotation(api: TestClient, subs: FakeSubscriptions) -> None:
    make_connection(api)
    deploy(api)
    body = json.dumps(EVENT).encode()
    current = sign(body, secret_for(subs, PATH))
    rotated = f"{sign(body, 'the-next-secret')}, {current}"
    answer = api.post(PATH, content=body, headers={"X-PagerDuty-Signature": rotated})
    assert answer.status_code == 202
    verify_signature(body, sign(body, "new"), ["old", "new"])
    with pytest.raises(SignatureError):
        verify_signature(body, sign(body, "older"), ["old", "new"])


def test_pings_and_unselected_events_are_recorded_and_run_nothing(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    make_connection(api)
    deploy(api)
    before = len(pd.calls)
    ping = {"event": {**EVENT["event"], "event_type": "pagey.ping", "data": {}}}
    resolved = {"event": {**EVENT["event"], "event_type": "incident.resolved"}}
    answers = [
        deliver(api, subs, PATH, "ping", ping),
        deliver(api, subs, PATH, "resolved", resolved),
    ]
    drain(api)
    assert [a.status_code for a in answers] == [202, 202]
    records = [api.get(f"/api/executions/{a.json()['execution']}").json() for a in answers]
    assert [(r["status"], r["reason"], r["steps"]) for r in records] == [
        ("skipped", "pagey.ping acknowledged; pings run no steps", []),
        ("skipped", "event type incident.resolved is not selected by this flow", []),
    ]
    assert records[0]["trigger"]["event"]["event_type"] == "pagey.ping"
    assert len(pd.calls) == before


def test_the_answer_does_not_wait_for_the_flow(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    answered = threading.Event()

    async def incident(request: httpx2.Request) -> httpx2.Response:
        # The step holds until the sender has its answer; if answering waited for the
        # flow, this would time out and the step would fail.
        for _ in range(200):
            if answered.is_set():
                return httpx2.Response(200, json=INCIDENT)
            await asyncio.sleep(0.01)
        return httpx2.Response(500, json={"error": {"message": "answer never came"}})

    pd.get(f"{REST}/incidents/Q1P5").mock(side_effect=incident)
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    make_connection(api)
    deploy(api)
    answer = deliver(api, subs, PATH)
    answered.set()
    drain(api)
    assert answer.status_code == 202
    record = api.get(f"/api/executions/{answer.json()['execution']}").json()
    assert record["status"] == "succeeded", record


# --- the verifier ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=512), header=st.text(max_size=200), secret=st.text(min_size=1))
def test_verifier_refuses_anything_not_signed_with_the_secret(
    body: bytes, header: str, secret: str
) -> None:
    try:
        verify_signature(body, header, [secret])
    except SignatureError as exc:
        assert exc.status in (400, 403)
    else:  # the only way through is the right digest
        assert sign(body, secret)[3:] in header.lower()


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=512),
    secret=st.text(min_size=1, max_size=64),
    others=st.lists(st.text(min_size=1, max_size=64), max_size=3),
    noise=st.lists(st.from_regex(r"v[1-3]=[0-9a-f]{64}", fullmatch=True), max_size=3),
)
def test_verifier_accepts_a_genuine_signature_among_others(
    body: bytes, secret: str, others: list[str], noise: list[str]
) -> None:
    header = ", ".join([*noise, sign(body, secret)])
    verify_signature(body, header, [*others, secret])
    assert len(parse_signatures(header)) == 1 + sum(n.startswith("v1=") for n in noise)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(min_size=1, max_size=256), secret=st.text(min_size=1), flip=st.integers(0))
def test_verifier_refuses_a_changed_body(body: bytes, secret: str, flip: int) -> None:
    position = flip % len(body)
    changed = body[:position] + bytes([body[position] ^ 0x01]) + body[position + 1 :]
    with pytest.raises(SignatureError) as info:
        verify_signature(changed, sign(body, secret), [secret])
    assert info.value.status == 403
