"""The ``state`` step: an instance's key/value store across runs and replicas. Increments
from many runs at once all count; values expire; a run resumed after a stop does not
change a value twice; teardown deletes the store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import respx
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.app import create_app
from tests.support.processes import wait_until
from tests.support.runtime import AUTH, FLOW, REST, deliver, deploy_acme, drain, settings_for

PATH = "/webhooks/acme/on-incident"


def flow_of(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {**FLOW, "steps": steps}


COUNT = {"name": "count", "state": {"increment": "opened/{{ trigger.event.data.id }}"}}


@pytest.fixture
def api(database_url: str, tmp_path: Path, pd: respx.MockRouter, subs: FakeSubscriptions) -> Any:
    settings = settings_for(database_url, tmp_path, flow_concurrency=8)
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield client


def test_increments_from_runs_at_once_all_count(api: TestClient, subs: FakeSubscriptions) -> None:
    deploy_acme(api, [flow_of([COUNT])])
    for n in range(20):
        assert deliver(api, subs, PATH, f"d{n}").status_code == 202
    drain(api)
    stored = api.get("/api/instances/acme/state").json()
    assert stored["opened/Q1P5"]["value"] == 20
    executions = api.get("/api/executions").json()
    assert sorted(e["status"] for e in executions) == ["succeeded"] * 20


def test_get_set_default_and_expiry(api: TestClient, subs: FakeSubscriptions) -> None:
    steps = [
        {"name": "before", "state": {"get": "last", "default": "never"}},
        {
            "name": "remember",
            "state": {"set": "last", "value": "{{ trigger.event.id }}", "ttl": "3s"},
        },
        {"name": "after", "state": {"get": "last"}},
        {"name": "seen", "set": {"was": "{{ steps.before }}", "now": "{{ steps.after }}"}},
    ]
    deploy_acme(api, [flow_of(steps)])
    first = deliver(api, subs, PATH, "one").json()["execution"]
    drain(api)
    record = api.get(f"/api/executions/{first}").json()
    assert record["steps"][3]["values"] == {"was": "never", "now": "ev-one"}
    assert api.get("/api/instances/acme/state").json()["last"]["expiresAt"]
    # 3 s: under a loaded CI machine's two cores, a 1 s value expired before the run
    # and its drain had ended (measured: this assertion above failed once on PostgreSQL).
    time.sleep(3.2)
    assert api.get("/api/instances/acme/state").json() == {}  # expired: read as missing
    second = deliver(api, subs, PATH, "two").json()["execution"]
    drain(api)
    values = api.get(f"/api/executions/{second}").json()["steps"][3]["values"]
    assert values == {"was": "never", "now": "ev-two"}


def test_a_run_resumed_after_a_stop_does_not_increment_twice(
    database_url: str, tmp_path: Path, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """The increment is a checkpoint: stopped in the step after it, the run resumes
    there, and the count stays one."""
    release, reached = asyncio.Event(), []

    async def slow(request: httpx2.Request) -> httpx2.Response:
        reached.append(request)
        await release.wait()
        return httpx2.Response(200, json={"incident": {"id": "Q1P5"}})

    pd.get(f"{REST}/incidents/Q1P5").mock(side_effect=slow)
    settings = settings_for(database_url, tmp_path, stop_grace=0.2)
    steps = [COUNT, FLOW["steps"][0]]
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api, [flow_of(steps)])
        execution = deliver(api, subs, PATH).json()["execution"]
        wait_until(lambda: reached, 10, "the run to be in the GET after its increment")
        assert api.get("/api/instances/acme/state").json()["opened/Q1P5"]["value"] == 1
    pd.get(f"{REST}/incidents/Q1P5").respond(json={"incident": {"id": "Q1P5"}})
    with TestClient(create_app(settings), headers=AUTH) as api:
        drain(api)
        assert api.get(f"/api/executions/{execution}").json()["status"] == "succeeded"
        assert api.get("/api/instances/acme/state").json()["opened/Q1P5"]["value"] == 1


def test_teardown_deletes_the_store_and_bad_operations_are_refused(
    api: TestClient, subs: FakeSubscriptions
) -> None:
    deploy_acme(api, [flow_of([COUNT])])
    deliver(api, subs, PATH)
    drain(api)
    assert api.get("/api/instances/acme/state").json() != {}
    for operation, problem in (
        ({"get": "a", "set": "b"}, "exactly one of: get, set, increment, delete"),
        ({"increment": "a", "ttl": "soon"}, "is not a duration"),
        ({"get": "a", "value": 1}, "'value' goes with set"),
    ):
        bad = flow_of([{"name": "s", "state": operation}])
        answer = api.put("/api/instances/acme", json={"connection": "ops", "flows": [bad]})
        assert answer.status_code == 400 and problem in answer.text, answer.text
    assert api.delete("/api/instances/acme").status_code == 204
    assert api.get("/api/instances/acme/state").status_code == 404
    deploy_acme_again = api.post(
        "/api/instances", json={"name": "acme", "connection": "ops", "flows": [flow_of([COUNT])]}
    )
    assert deploy_acme_again.status_code == 201
    assert api.get("/api/instances/acme/state").json() == {}
