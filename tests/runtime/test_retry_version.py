"""Retry on either version: on the flow the failed run ran (the default), or on the
instance's flow as it is now, after a fix; the execution says which. The steps before
the failed one keep their outputs either way (PagerDuty is not asked again), so a retry
on the current flow is refused when one of them changed."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import respx
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.app import create_app
from tests.support.runtime import (
    AUTH,
    FLOW,
    count_incident_steps,
    deliver,
    deploy_acme,
    drain,
    settings_for,
)

PATH = "/webhooks/acme/on-incident"
BROKEN = copy.deepcopy(FLOW)
BROKEN["steps"][1]["inputs"]["note"] = "Investigating: {{ steps.incident.data.incident.titel }}"


@pytest.fixture
def api(database_url: str, tmp_path: Path, subs: FakeSubscriptions) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(database_url, tmp_path)), headers=AUTH) as client:
        deploy_acme(client, [BROKEN])
        yield client


@pytest.fixture
def sent(pd: respx.MockRouter) -> dict[str, Any]:
    return count_incident_steps(pd)


def contents(sent: dict[str, Any]) -> list[str]:
    return [note["content"] for note in sent["notes"]]


def redeploy(api: TestClient, flow: dict[str, Any]) -> None:
    answer = api.put("/api/instances/acme", json={"connection": "ops", "flows": [flow]})
    assert answer.status_code == 200, answer.text


def retried(api: TestClient, execution: str, **body: str) -> dict[str, Any]:
    answer = api.post(f"/api/executions/{execution}/retry", json=body)
    assert answer.status_code == 202, answer.text
    drain(api)
    return api.get(f"/api/executions/{answer.json()['execution']}").json()


def test_a_fix_deployed_after_a_failure_runs_only_when_the_retry_asks_for_the_current_flow(
    api: TestClient, subs: FakeSubscriptions, sent: dict[str, Any]
) -> None:
    first = deliver(api, subs, PATH).json()["execution"]
    drain(api)
    failed = api.get(f"/api/executions/{first}").json()
    assert failed["status"] == "failed" and "titel" in failed["error"]
    redeploy(api, FLOW)  # the fix

    # The default: the flow the run ran, the fix ignored, and the execution says so.
    again = retried(api, first)
    assert again["status"] == "failed" and "titel" in again["error"]
    assert again["flowVersion"] == "deployed"

    fixed = retried(api, first, flow="current")
    assert fixed["status"] == "succeeded" and fixed["flowVersion"] == "current"
    assert fixed["retryOf"] == first
    assert contents(sent) == ["Investigating: Server is on fire"]
    assert sent["get"] == 1  # the step before the failed one kept its output every time

    # A retry of the retry on "the flow it ran" stays on the flow that retry ran.
    redeploy(api, BROKEN)
    current_retry_failed = retried(api, again["id"], flow="current")
    assert current_retry_failed["status"] == "failed"
    on_its_flow = retried(api, current_retry_failed["id"])
    assert on_its_flow["status"] == "failed" and on_its_flow["flowVersion"] == "deployed"
    assert sent["get"] == 1


def test_a_retry_on_the_current_flow_is_refused_when_a_step_before_the_failure_changed(
    api: TestClient, subs: FakeSubscriptions, sent: dict[str, Any]
) -> None:
    first = deliver(api, subs, PATH).json()["execution"]
    drain(api)
    changed = copy.deepcopy(FLOW)
    changed["steps"][0]["inputs"]["id"] = "{{ trigger.event.data.id | upper }}"
    redeploy(api, changed)
    refused = api.post(f"/api/executions/{first}/retry", json={"flow": "current"})
    assert refused.status_code == 409
    assert "step 'incident' changed since the run" in refused.json()["error"]["message"]
    assert "replay" in refused.json()["error"]["message"]

    gone = {**FLOW, "name": "renamed"}
    redeploy(api, gone)
    refused = api.post(f"/api/executions/{first}/retry", json={"flow": "current"})
    assert refused.status_code == 409 and "no longer deployed" in refused.text
    bad = api.post(f"/api/executions/{first}/retry", json={"flow": "latest"})
    assert bad.status_code == 400 and "flow" in bad.text
    assert len(api.get("/api/executions").json()) == 1  # nothing recorded by the refusals
    assert sent["get"] == 1 and contents(sent) == []
