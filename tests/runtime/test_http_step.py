"""The ``http`` step against a real local server (a stand-in Slack): its credentials
(none, bearer, basic, a header, a secret URL), never shown; the address guard (loopback,
private and link-local refused unless PDC_HTTP_ALLOW names them); bounds on the answer's
size and time; retries as for PagerDuty's requests; deploy checks."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import respx
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.app import create_app
from tests.support.receiver import Slack, pass_through
from tests.support.runtime import AUTH, FLOW, deliver, deploy_acme, drain, settings_for

PATH = "/webhooks/acme/on-incident"
SECRET_URL_PART = "T000/B000/slack-secret-xyz"


def runtime(database_url: str, tmp_path: Path, allow: str | None) -> TestClient:
    settings = settings_for(
        database_url, tmp_path, http_allow=allow, step_backoff=0, step_attempts=3
    )
    return TestClient(create_app(settings), headers=AUTH)


def http_flow(request: dict[str, Any], **step: Any) -> dict[str, Any]:
    return {**FLOW, "steps": [{"name": "post", "http": request, **step}]}


def run_once(api: TestClient, subs: FakeSubscriptions, flow: dict[str, Any], n: int = 0) -> Any:
    answer = api.put("/api/instances/acme", json={"connection": "ops", "flows": [flow]})
    assert answer.status_code == 200, answer.text
    execution = deliver(api, subs, PATH, f"http-{n}").json()["execution"]
    drain(api)
    return api.get(f"/api/executions/{execution}").json()


@pytest.mark.no_spec  # the step's requests go to the stand-in Slack, not PagerDuty
def test_a_message_reaches_an_incoming_webhook_whose_url_is_a_secret(
    database_url: str,
    tmp_path: Path,
    pd: respx.MockRouter,
    subs: FakeSubscriptions,
    slack: Slack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    pass_through(pd)
    with runtime(database_url, tmp_path, "127.0.0.1") as api:
        deploy_acme(api)
        created = api.post(
            "/api/connections",
            json={
                "name": "slack",
                "type": "http-url",
                "config": {"url": f"{slack.url}/services/{SECRET_URL_PART}"},
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["secrets"] == {"url": "***"}
        request = {
            "body": {"text": "Incident {{ trigger.event.data.title }}"},
            "credential": "slack",
        }
        record = run_once(api, subs, http_flow(request))
        assert record["status"] == "succeeded", record
        (sent,) = slack.received
        assert sent["method"] == "POST" and sent["path"] == f"/services/{SECRET_URL_PART}"
        assert json.loads(sent["body"]) == {"text": "Incident Server is on fire"}
        assert sent["headers"]["content-type"] == "application/json"
        step = record["steps"][0]
        assert step["result"] == {"status": 200, "headers": step["result"]["headers"], "body": "ok"}
        shown = [
            json.dumps(record),
            api.get("/api/connections/slack").text,
            api.get("/api/instances/acme").text,
            caplog.text,
        ]
        assert not [text for text in shown if SECRET_URL_PART in text]


@pytest.mark.no_spec
@pytest.mark.parametrize(
    ("kind", "config", "header", "expected"),
    [
        ("http-bearer", {"token": "bearer-secret-1"}, "Authorization", "Bearer bearer-secret-1"),
        (
            "http-basic",
            {"username": "bot", "password": "basic-secret-2"},
            "Authorization",
            "Basic Ym90OmJhc2ljLXNlY3JldC0y",
        ),
        (
            "http-header",
            {"header": "X-Api-Key", "value": "header-secret-3"},
            "X-Api-Key",
            "header-secret-3",
        ),
    ],
)
def test_each_credential_goes_where_its_type_says(
    database_url: str,
    tmp_path: Path,
    pd: respx.MockRouter,
    subs: FakeSubscriptions,
    slack: Slack,
    kind: str,
    config: dict[str, str],
    header: str,
    expected: str,
) -> None:
    pass_through(pd)
    with runtime(database_url, tmp_path, "127.0.0.1") as api:
        deploy_acme(api)
        assert (
            api.post(
                "/api/connections", json={"name": "cred", "type": kind, "config": config}
            ).status_code
            == 201
        )
        request = {
            "method": "PUT",
            "url": f"{slack.url}/api/thing",
            "credential": "cred",
            "body": "plain text",
        }
        record = run_once(api, subs, http_flow(request))
        assert record["status"] == "succeeded", record
        (sent,) = slack.received
        assert sent["headers"][header.lower()] == expected
        assert sent["body"] == b"plain text" and sent["headers"]["content-type"].startswith("text/")
        assert expected.split()[-1] not in json.dumps(record)


@pytest.mark.no_spec
@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1:{port}/x", "127.0.0.1, which is not a public address"),
        ("http://localhost:{port}/x", "localhost resolves to"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, which is not a public"),
        ("http://10.1.2.3/x", "10.1.2.3, which is not a public address"),
    ],
)
def test_addresses_that_are_not_public_are_refused_unless_allowed(
    database_url: str,
    tmp_path: Path,
    pd: respx.MockRouter,
    subs: FakeSubscriptions,
    slack: Slack,
    url: str,
    refused: str,
) -> None:
    pass_through(pd)
    target = url.format(port=slack.server_address[1])
    with runtime(database_url, tmp_path, None) as api:
        deploy_acme(api)
        record = run_once(api, subs, http_flow({"method": "GET", "url": target}))
    assert record["status"] == "failed" and refused in record["error"]
    assert "PDC_HTTP_ALLOW" in record["error"]
    assert len(record["steps"][0]["attempts"]) == 1  # refused: not tried again
    assert slack.received == []


@pytest.mark.no_spec
def test_bounds_and_retries(
    database_url: str,
    tmp_path: Path,
    pd: respx.MockRouter,
    subs: FakeSubscriptions,
    slack: Slack,
) -> None:
    pass_through(pd)
    slack.answers = {
        "/big": [(200, b"x" * (1024 * 1024 + 10), 0.0)],
        "/slow": [(200, b"late", 3.0)],
        "/flaky": [(503, b"busy", 0.0), (503, b"busy", 0.0), (200, b'{"ok": true}', 0.0)],
        "/post-flaky": [(503, b"busy", 0.0), (200, b"ok", 0.0)],
    }
    with runtime(database_url, tmp_path, "127.0.0.1") as api:
        deploy_acme(api)
        cases = [
            ({"method": "GET", "url": f"{slack.url}/big"}, "failed", "over 1024 KB"),
            ({"method": "GET", "url": f"{slack.url}/slow", "timeout": 1}, "failed", "no answer"),
            ({"method": "GET", "url": f"{slack.url}/flaky"}, "succeeded", None),
            ({"method": "POST", "url": f"{slack.url}/post-flaky"}, "failed", "HTTP 503"),
        ]
        for n, (request, status, problem) in enumerate(cases):
            record = run_once(api, subs, http_flow(request), n)
            assert record["status"] == status, (request, record)
            if problem:
                assert problem in record["error"]
    paths = [r["path"] for r in slack.received]
    assert paths.count("/flaky") == 3  # 503 on a GET: tried again, and it answered
    assert paths.count("/post-flaky") == 1  # 503 on a POST: it may have been done


def test_deploy_checks_the_credential(api: TestClient) -> None:
    deploy_acme(api)
    api.post(
        "/api/connections",
        json={
            "name": "slack",
            "type": "http-url",
            "config": {"url": "https://hooks.example.com/x"},
        },
    )
    for request, problem in (
        (
            {"url": "https://x.example", "credential": "ops"},
            "'ops' is a pagerduty-api-key connection; an http step takes one of type http-bearer",
        ),
        (
            {"url": "https://x.example", "credential": "slak"},
            "no connection 'slak' (did you mean 'slack'?)",
        ),
        ({"body": {"text": "x"}}, "input 'url': is required (or a credential of type http-url)"),
        ({"url": "https://x.example", "method": "TRACE"}, "http.method"),
    ):
        answer = api.put(
            "/api/instances/acme", json={"connection": "ops", "flows": [http_flow(request)]}
        )
        assert answer.status_code == 400 and problem in answer.text, (request, answer.text)
    used = http_flow({"credential": "slack"})
    assert api.put("/api/instances/acme", json={"connection": "ops", "flows": [used]}).is_success
    answer = api.delete("/api/connections/slack")
    assert answer.status_code == 409 and "acme" in answer.text
