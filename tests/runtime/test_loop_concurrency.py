"""A loop with ``concurrency: N``: up to N items in flight at once, each item a DBOS
workflow of its own, so a resumed run, a retry and a cancel treat every item as a
sequential loop treats its items: nothing reaches PagerDuty twice.

PagerDuty is respx here: its note handler counts the requests in flight at once and
what each item sent."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import respx
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.app import create_app
from tests.conftest import REST
from tests.support.processes import wait_until
from tests.support.runtime import (
    AUTH,
    EVENT,
    FLOW,
    deliver,
    deploy_acme,
    drain,
    execution,
    settings_for,
)

PATH = "/webhooks/acme/on-incident"
ITEMS = list("abcdefgh")


def looping(concurrency: int, **extra: Any) -> dict[str, Any]:
    """A flow that notes each assignee of the incident, ``concurrency`` at once."""
    note = {
        "name": "note",
        "action": "createIncidentNote",
        "inputs": {"id": "Q1P5", "note": "{{ item }}"},
    }
    return {
        **FLOW,
        "steps": [
            {
                "name": "each",
                "forEach": "{{ trigger.event.data.assignees }}",
                "concurrency": concurrency,
                "steps": [note],
                **extra,
            },
            {"name": "after", "action": "getIncident", "inputs": {"id": "Q1P5"}},
        ],
    }


class Notes:
    """PagerDuty's notes endpoint: each request held ``hold`` seconds, the most in
    flight at once, and what was sent; ``refuse`` answers 403 (once each) to these."""

    def __init__(self, hold: float = 0.2, refuse: tuple[str, ...] = ()) -> None:
        self.hold, self.refuse = hold, set(refuse)
        self.sent: list[str] = []
        self.now = self.most = 0
        self.release: asyncio.Event | None = None

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        text = json.loads(request.content)["note"]["content"]
        self.sent.append(text)
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            if self.release is not None:
                await self.release.wait()
            await asyncio.sleep(self.hold)
        finally:
            self.now -= 1
        if text in self.refuse:
            self.refuse.discard(text)
            return httpx2.Response(403, json={"error": {"message": "Forbidden", "code": 2010}})
        return httpx2.Response(201, json={"note": {"id": f"N-{text}"}})


@pytest.fixture
def notes(pd: respx.MockRouter) -> Notes:
    found = Notes()
    pd.post(f"{REST}/incidents/Q1P5/notes").mock(side_effect=found)
    pd.get(f"{REST}/incidents/Q1P5").respond(json={"incident": {"id": "Q1P5"}})
    return found


@pytest.fixture
def api(
    database_url: str, tmp_path: Path, notes: Notes, subs: FakeSubscriptions
) -> Iterator[TestClient]:
    settings = settings_for(database_url, tmp_path, step_attempts=2, step_backoff=0)
    with TestClient(create_app(settings), headers=AUTH) as client:
        deploy_acme(client)
        yield client


def deploy(api: TestClient, flow: dict[str, Any]) -> None:
    answer = api.put("/api/instances/acme", json={"connection": "ops", "flows": [flow]})
    assert answer.is_success, answer.text


def run(
    api: TestClient, subs: FakeSubscriptions, items: list[str] = ITEMS, name: str = "loop"
) -> str:
    event = copy.deepcopy(EVENT)
    event["event"]["data"]["assignees"] = items
    answer = deliver(api, subs, PATH, name, event=event)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["execution"])


def test_items_run_side_by_side_up_to_the_bound_and_their_outputs_keep_the_items_order(
    api: TestClient, notes: Notes, subs: FakeSubscriptions
) -> None:
    deploy(api, looping(3))
    done = run(api, subs)
    drain(api)
    record = execution(api, done)
    assert record["status"] == "succeeded", record
    assert notes.most == 3  # three in flight at once, never more
    assert sorted(notes.sent) == ITEMS  # each item's note once
    loop = record["steps"][0]
    assert [o["note"]["data"]["note"]["id"] for o in loop["result"]] == [f"N-{i}" for i in ITEMS]
    assert loop["concurrency"] == 3 and len(loop["items"]) == len(ITEMS)
    assert [item[0]["status"] for item in loop["items"]] == ["succeeded"] * len(ITEMS)
    assert record["steps"][1]["status"] == "succeeded"  # the step after the loop ran


def fail_at_c(api: TestClient, notes: Notes, subs: FakeSubscriptions) -> str:
    """A run of the two-at-once loop whose item c PagerDuty refuses: its id, ended failed."""
    notes.refuse = {"c"}
    deploy(api, looping(2))
    failed_id = run(api, subs)
    drain(api)
    assert execution(api, failed_id)["status"] == "failed"
    return failed_id


def test_a_failed_item_stops_the_loop_and_a_retry_runs_only_what_did_not_succeed(
    api: TestClient, notes: Notes, subs: FakeSubscriptions
) -> None:
    failed_id = fail_at_c(api, notes, subs)
    failed = execution(api, failed_id)
    loop = failed["steps"][0]
    statuses = [item[0]["status"] for item in loop["items"]]
    # c failed; d was in flight beside it and finished; nothing after d started.
    assert statuses == ["succeeded", "succeeded", "failed", "succeeded"] + ["skipped"] * 4
    assert loop["items"][4][0]["reason"] == "the loop stopped: item 2 failed"
    assert sorted(notes.sent) == list("abcd")
    assert [s["name"] for s in failed["steps"]] == ["each"]  # the run stopped there

    retried = api.post(f"/api/executions/{failed_id}/retry")
    assert retried.status_code == 202, retried.text
    drain(api)
    retry = execution(api, retried.json()["execution"])
    assert retry["status"] == "succeeded", retry
    # c again (it failed), and the items never started; a, b and d kept their outputs.
    assert sorted(notes.sent) == sorted([*ITEMS, "c"])
    outputs = retry["steps"][0]["result"]
    assert [o["note"]["data"]["note"]["id"] for o in outputs] == [f"N-{i}" for i in ITEMS]


def test_with_on_error_continue_the_other_items_go_on(
    api: TestClient, notes: Notes, subs: FakeSubscriptions
) -> None:
    notes.refuse = {"b", "f"}
    deploy(api, looping(4, onError="continue"))
    done = run(api, subs)
    drain(api)
    record = execution(api, done)
    assert record["status"] == "succeeded_with_errors"
    assert sorted(notes.sent) == ITEMS
    loop = record["steps"][0]
    assert loop["failedItems"] == 2
    assert [i for i, item in enumerate(loop["items"]) if item[0]["status"] == "failed"] == [1, 5]


def test_a_cancelled_run_cancels_its_items_in_flight_and_none_starts_after(
    api: TestClient, notes: Notes, subs: FakeSubscriptions
) -> None:
    notes.release = asyncio.Event()
    deploy(api, looping(2))
    running = run(api, subs)
    wait_until(lambda: len(notes.sent) == 2, 10, "two items in their notes")
    cancelled = api.post(f"/api/executions/{running}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    api.portal.call(notes.release.set)  # type: ignore[union-attr]
    drain(api)
    wait_until(lambda: notes.now == 0, 10, "the notes in flight to end")
    api.portal.call(asyncio.sleep, 1.0)  # type: ignore[union-attr]
    assert sorted(notes.sent) == ["a", "b"]  # the items in flight; no other started
    assert execution(api, running)["status"] == "cancelled"


def test_a_planned_stop_mid_loop_lets_the_items_in_flight_finish_and_the_run_resumes(
    database_url: str, tmp_path: Path, notes: Notes, subs: FakeSubscriptions
) -> None:
    """Stopped with three items in their notes, the runtime lets them finish (each a
    checkpoint of its own item); started again, the run takes up the other items, and
    every note reached PagerDuty once."""
    notes.hold = 0.5
    settings = settings_for(database_url, tmp_path, step_backoff=0, stop_grace=5)
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api)
        deploy(api, looping(3))
        running = run(api, subs)
        wait_until(lambda: notes.now == 3, 10, "three items in their notes")
    assert sorted(notes.sent) == ["a", "b", "c"]  # the stop started no other
    with TestClient(create_app(settings), headers=AUTH) as api:
        drain(api)
        record = execution(api, running)
    assert record["status"] == "succeeded", record
    assert sorted(notes.sent) == ITEMS and notes.most <= 3
    assert [o["note"]["data"]["note"]["id"] for o in record["steps"][0]["result"]] == [
        f"N-{i}" for i in ITEMS
    ]


def test_a_retry_on_the_current_flow_runs_the_failed_item_with_the_fix(
    api: TestClient, notes: Notes, subs: FakeSubscriptions
) -> None:
    failed_id = fail_at_c(api, notes, subs)
    fixed = looping(2)
    fixed["steps"][0]["steps"][0]["inputs"]["note"] = "fixed {{ item }}"
    deploy(api, fixed)
    retried = api.post(f"/api/executions/{failed_id}/retry", json={"flow": "current"})
    assert retried.status_code == 202, retried.text
    drain(api)
    retry = execution(api, retried.json()["execution"])
    assert retry["status"] == "succeeded" and retry["flowVersion"] == "current", retry
    # a, b and d kept their notes; c ran again with the fix, and so did those never started.
    assert sorted(notes.sent[:4]) == list("abcd")
    assert sorted(notes.sent[4:]) == ["fixed c", "fixed e", "fixed f", "fixed g", "fixed h"]


def test_a_loop_side_by_side_inside_a_loop_in_turn_starts_new_items_each_time(
    api: TestClient, notes: Notes, subs: FakeSubscriptions
) -> None:
    inner = {
        "name": "each",
        "forEach": "{{ group }}",
        "concurrency": 2,
        "steps": [looping(2)["steps"][0]["steps"][0]],
    }
    outer = {
        **FLOW,
        "steps": [
            {
                "name": "groups",
                "forEach": "{{ trigger.event.data.assignees }}",
                "as": "group",
                "steps": [inner],
            }
        ],
    }
    deploy(api, outer)
    done = run(api, subs, [["a", "b", "c"], ["d", "e", "f"]])  # type: ignore[list-item]
    drain(api)
    record = execution(api, done)
    assert record["status"] == "succeeded", record
    assert sorted(notes.sent) == list("abcdef")  # the second group's items are its own
    groups = record["steps"][0]["result"]
    assert [[o["note"]["data"]["note"]["id"] for o in g["each"]] for g in groups] == [
        ["N-a", "N-b", "N-c"],
        ["N-d", "N-e", "N-f"],
    ]
