"""The schedule trigger: a flow that runs on cron, in a time zone; each tick one execution
(even a tick run twice); no webhook subscription; a disabled or deleted instance's
schedule stops; the instance shows its next runs; bad cron and time zones are refused
at deploy with what to write instead."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import respx
from dbos import DBOS, SetWorkflowID
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime import schedules
from pagerduty_connector.runtime.app import create_app
from pagerduty_connector.runtime.settings import RuntimeSettings
from tests.support.processes import wait_until
from tests.support.runtime import (
    AUTH,
    FLOW,
    REST,
    deploy_acme,
    drain,
    make_connection,
    settings_for,
)

EVERY_SECOND = {
    "name": "tick",
    "trigger": {"type": "schedule", "inputs": {"cron": "* * * * * *", "timezone": "Europe/Paris"}},
    "steps": [
        {
            "name": "summary",
            "action": "createIncidentNote",
            "inputs": {"id": "Q1P5", "note": "tick at {{ trigger.scheduledAt }}"},
        }
    ],
}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> RuntimeSettings:
    return settings_for(database_url, tmp_path)


@pytest.fixture
def notes(pd: respx.MockRouter) -> list[str]:
    sent: list[str] = []

    def note(request: Any) -> Any:
        import json

        sent.append(json.loads(request.content)["note"]["content"])
        return respx.MockResponse(201, json={"note": {"id": "N1"}})

    pd.post(f"{REST}/incidents/Q1P5/notes").mock(side_effect=note)
    return sent


def ticks(api: TestClient) -> list[dict[str, Any]]:
    listed = api.get("/api/executions", params={"flow": "tick", "limit": 200}).json()
    return [api.get(f"/api/executions/{e['id']}").json() for e in listed]


def test_a_scheduled_flow_runs_at_each_tick_with_no_subscription_and_stops_when_disabled(
    settings: RuntimeSettings, subs: FakeSubscriptions, notes: list[str]
) -> None:
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api, [FLOW, EVERY_SECOND])
        # Only the webhook flow has a subscription; the scheduled one a schedule.
        assert [s["delivery_method"]["url"] for s in subs.subscriptions.values()] == [
            "https://pdc.example.com/webhooks/acme/on-incident"
        ]
        view = api.get("/api/instances/acme").json()
        assert list(view["webhookUrls"]) == ["on-incident"]
        upcoming = view["schedules"]["tick"]
        assert upcoming["cron"] == "* * * * * *" and upcoming["timezone"] == "Europe/Paris"
        assert len(upcoming["next"]) == 3 and upcoming["next"][0].endswith(("+01:00", "+02:00"))

        def three() -> list[dict[str, Any]] | None:
            found = ticks(api)
            return found if len(found) >= 3 else None

        seen = wait_until(three, 30, "three ticks")
        drain(api)  # the schedule goes on ticking: these runs, at least, have ended
        runs = [api.get(f"/api/executions/{r['id']}").json() for r in seen]
        assert {r["status"] for r in runs} == {"succeeded"}
        times = [r["trigger"]["scheduledAt"] for r in ticks(api)]
        assert len(set(times)) == len(times)  # one execution per tick
        assert all(t.endswith(("+01:00", "+02:00")) for t in times)  # in its time zone
        assert len(set(notes)) == len(notes)  # each tick's note sent once
        assert {f"tick at {r['trigger']['scheduledAt']}" for r in runs} <= set(notes)

        # A delivery to the scheduled flow's webhook path: there is none.
        refused = api.post("/webhooks/acme/tick", content=b"{}")
        assert refused.status_code == 404 and "runs on a schedule" in refused.text

        assert api.post("/api/instances/acme/disable").status_code == 200
        assert api.get("/api/instances/acme").json()["schedules"] == {}
        drain(api)
        count = len(ticks(api))
        time.sleep(6)  # past a scheduler's poll (5 s): ticks in hand meanwhile record nothing
        drain(api)
        assert len(ticks(api)) == count
        assert api.portal.call(DBOS.list_schedules_async) == []

        assert api.post("/api/instances/acme/enable").status_code == 200
        wait_until(lambda: len(ticks(api)) > count, 30, "ticks again once enabled")
        assert api.delete("/api/instances/acme").status_code == 204
        assert api.portal.call(DBOS.list_schedules_async) == []


def test_a_tick_run_twice_records_one_execution(
    settings: RuntimeSettings, subs: FakeSubscriptions, notes: list[str]
) -> None:
    """Every replica's scheduler enqueues each tick under one id; should a tick still
    run twice (two ids for one time), its time keys the execution: one run."""
    hourly = {**EVERY_SECOND, "trigger": {"type": "schedule", "inputs": {"cron": "0 * * * *"}}}
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api, [hourly])
        at = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
        context = {"instance": "acme", "flow": "tick", "cron": "0 * * * *", "timezone": "UTC"}

        async def fire(workflow_id: str) -> str:
            with SetWorkflowID(workflow_id):
                handle = await DBOS.start_workflow_async(schedules.tick, at, context)
            return str(await handle.get_result())

        assert api.portal.call(fire, "replica-1-tick") == "recorded"
        assert api.portal.call(fire, "replica-2-tick") == "duplicate"
        drain(api)
        runs = ticks(api)
    assert len(runs) == 1 and runs[0]["trigger"]["scheduledAt"] == "2026-12-04T09:00:00+00:00"
    assert notes == ["tick at 2026-12-04T09:00:00+00:00"]


def test_a_scheduled_flow_of_http_steps_needs_no_connection(
    settings: RuntimeSettings, subs: FakeSubscriptions
) -> None:
    posting = {
        **EVERY_SECOND,
        "steps": [{"name": "post", "http": {"url": "https://hooks.example.com/x", "body": {}}}],
    }
    with TestClient(create_app(settings), headers=AUTH) as api:
        answer = api.post("/api/instances", json={"name": "solo", "flows": [posting]})
        assert answer.status_code == 201, answer.text
        assert any("schedule pdc:solo:tick" in line for line in answer.json()["deploy"]["log"])
        refused = api.post("/api/instances", json={"name": "needy", "flows": [EVERY_SECOND]})
        assert refused.status_code == 400
        assert "flow 'tick' calls PagerDuty, which needs a connection" in refused.text
        assert api.delete("/api/instances/solo").status_code == 204
    assert subs.subscriptions == {}


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({}, "input 'cron': is required"),
        ({"cron": "every day"}, "input 'cron': 'every day' is not a cron expression"),
        ({"cron": "61 * * * *"}, "is not a cron expression"),
        ({"cron": "0 9 * * 1-5", "timezone": "Europe/Pari"}, "(did you mean 'Europe/Paris'?)"),
        ({"cron": "0 9 * * *", "timezon": "UTC"}, "unknown input (did you mean 'timezone'?)"),
    ],
)
def test_bad_schedules_are_refused_at_deploy_and_nothing_is_stored(
    settings: RuntimeSettings, subs: FakeSubscriptions, inputs: dict[str, Any], problem: str
) -> None:
    bad = {**EVERY_SECOND, "trigger": {"type": "schedule", "inputs": inputs}}
    with TestClient(create_app(settings), headers=AUTH) as api:
        make_connection(api)
        answer = api.post(
            "/api/instances", json={"name": "acme", "connection": "ops", "flows": [bad]}
        )
        error = answer.json()["error"]
        assert answer.status_code == 400 and problem in error["message"], answer.text
        assert error["step"] == "tick.trigger (schedule)"
        assert api.get("/api/instances").json() == []
        assert api.portal.call(DBOS.list_schedules_async) == []


def test_an_unknown_trigger_type_suggests_schedule(settings: RuntimeSettings) -> None:
    bad = {**EVERY_SECOND, "trigger": {"type": "schedul", "inputs": {"cron": "* * * * *"}}}
    with TestClient(create_app(settings), headers=AUTH) as api:
        answer = api.post("/api/instances", json={"name": "acme", "flows": [bad]})
    assert answer.status_code == 400 and "(did you mean 'schedule'?)" in answer.text


def test_next_runs_follow_the_time_zone_across_a_clock_change() -> None:
    after = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)  # Paris moves to +02:00 on the 29th
    runs = schedules.next_runs({"cron": "0 9 * * *", "timezone": "Europe/Paris"}, 3, after)
    assert runs == [
        "2026-03-28T09:00:00+01:00",
        "2026-03-29T09:00:00+02:00",
        "2026-03-30T09:00:00+02:00",
    ]
