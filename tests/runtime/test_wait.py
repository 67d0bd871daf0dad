"""``wait``: a durable pause. The execution shows as waiting until when; the steps after
it run after it; a restart in the middle neither shortens it nor sends what came before
again; and runs waiting do not hold up the other runs of their flow."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import respx
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.app import create_app
from pagerduty_connector.runtime.settings import RuntimeSettings
from tests.support.processes import wait_until
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
WAITING = {
    **FLOW,
    "steps": [
        FLOW["steps"][0],
        {"name": "pause", "wait": {"for": "{{ 2 }}"}},
        {**FLOW["steps"][1], "when": "steps.pause.seconds == 2"},
    ],
}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> RuntimeSettings:
    return settings_for(database_url, tmp_path, flow_concurrency=1)


@pytest.fixture
def counted(pd: respx.MockRouter) -> dict[str, Any]:
    return count_incident_steps(pd)


def status_of(api: TestClient, execution: str) -> dict[str, Any]:
    return api.get(f"/api/executions/{execution}").json()


def test_a_run_waits_then_goes_on_and_shows_it_is_waiting(
    settings: RuntimeSettings, subs: FakeSubscriptions, counted: dict[str, Any]
) -> None:
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api, [WAITING])
        began = time.monotonic()
        execution = deliver(api, subs, PATH).json()["execution"]
        waiting = wait_until(
            lambda: (r := status_of(api, execution))["status"] == "waiting" and r, 10, "waiting"
        )
        assert (
            waiting["reason"].startswith("waiting until ") and "(step pause)" in waiting["reason"]
        )
        drain(api)
        record = status_of(api, execution)
    assert record["status"] == "succeeded" and record["reason"] is None
    assert [s["status"] for s in record["steps"]] == ["succeeded"] * 3
    assert record["steps"][1]["seconds"] == 2 and record["steps"][1]["until"]
    assert counted["get"] == 1 and len(counted["notes"]) == 1
    assert counted["notes"][0]["at"] - began >= 2


def test_a_restart_during_a_wait_neither_shortens_it_nor_repeats_what_came_before(
    settings: RuntimeSettings, subs: FakeSubscriptions, counted: dict[str, Any]
) -> None:
    longer = {
        **WAITING,
        "steps": [WAITING["steps"][0], {"name": "pause", "wait": {"for": "4s"}}, FLOW["steps"][1]],
    }
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api, [longer])
        began = time.monotonic()
        execution = deliver(api, subs, PATH).json()["execution"]
        wait_until(lambda: status_of(api, execution)["status"] == "waiting", 10, "waiting")
    # Stopped while waiting (the planned stop does not wait for the wait), started again:
    with TestClient(create_app(settings), headers=AUTH) as api:
        drain(api)
        record = status_of(api, execution)
    assert record["status"] == "succeeded"
    assert counted["get"] == 1  # done before the wait: not asked again
    assert len(counted["notes"]) == 1 and counted["notes"][0]["at"] - began >= 4


def test_waiting_runs_do_not_hold_up_the_other_runs_of_their_flow(
    settings: RuntimeSettings, subs: FakeSubscriptions, counted: dict[str, Any]
) -> None:
    """PDC_FLOW_CONCURRENCY is 1 here; flows with a wait use the patient queue, so ten
    runs wait at once instead of one after another (20 s)."""
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api, [WAITING])
        executions = [deliver(api, subs, PATH, f"w{n}").json()["execution"] for n in range(10)]
        wait_until(
            lambda: all(status_of(api, e)["status"] == "waiting" for e in executions),
            15,
            "all ten runs to be waiting at once",
        )
        drain(api)
    assert len(counted["notes"]) == 10


def test_a_wait_is_checked_at_deploy(api: TestClient) -> None:
    deploy_acme(api)
    for wait, problem in (
        ({"for": "soon"}, "is not a duration"),
        ({"for": "9w"}, "between 0 and 8 weeks"),
        ({"until": "next tuesday"}, "'next tuesday' is not a time (ISO 8601"),
        ({}, "exactly one of 'for' (a duration) or 'until' (a time)"),
        ({"for": "1m", "until": "2026-12-04T10:00:00Z"}, "exactly one of"),
    ):
        flow = {**FLOW, "steps": [FLOW["steps"][0], {"name": "pause", "wait": wait}]}
        answer = api.put("/api/instances/acme", json={"connection": "ops", "flows": [flow]})
        assert answer.status_code == 400, (wait, answer.text)
        assert problem in answer.text, (wait, answer.text)
