"""Step kinds beyond actions: branches (``if``, ``switch``) with the steps not taken
recorded as skipped and why; ``set`` variables; dates and times in templates; and the
deploy-time checks (kinds, names, references, functions, nearest names)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.manifest import Manifest
from pagerduty_connector.runtime.flows import Flow, render, run_flow, validate_flow
from tests.runtime.test_flows import TRIGGER, TRIGGER_INPUTS


def make(steps: list[dict[str, Any]]) -> Flow:
    return Flow.model_validate(
        {
            "name": "demo",
            "trigger": {"type": "incidentsTrigger", "inputs": TRIGGER_INPUTS},
            "steps": steps,
        }
    )


class Recorder:
    """An action runner that records what it was asked and answers ``{"data": ...}``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, step: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((step.name, inputs))
        return {"data": {"echo": inputs}}


NOTE = {"action": "createIncidentNote", "inputs": {"id": "P1", "note": "x"}}


async def test_if_runs_one_branch_and_records_the_other_as_skipped(manifest: Manifest) -> None:
    branch = {
        "name": "urgent",
        "if": "trigger.event.data.urgency == 'high'",
        "then": [{"name": "page", **NOTE}],
        "else": [{"name": "log", **NOTE}, {"name": "log2", **NOTE}],
    }
    after = {"name": "after", **NOTE, "when": "steps.urgent.branch == 'then'"}
    recorder = Recorder()
    status, records = await run_flow(make([branch, after]), manifest, TRIGGER, recorder)
    assert status == "succeeded"
    assert [name for name, _ in recorder.calls] == ["page", "after"]
    record = records[0]
    assert (record["kind"], record["status"], record["branch"]) == ("if", "succeeded", "then")
    assert [(s["name"], s["status"]) for s in record["steps"]] == [
        ("page", "succeeded"),
        ("log", "skipped"),
        ("log2", "skipped"),
    ]
    assert record["steps"][1]["reason"] == (
        "in its else branch, not taken: trigger.event.data.urgency == 'high' was true"
    )
    low = {**TRIGGER, "event": {**TRIGGER["event"], "data": {"urgency": "low"}}}
    recorder.calls.clear()
    status, records = await run_flow(make([branch, after]), manifest, low, recorder)
    assert [name for name, _ in recorder.calls] == ["log", "log2"]
    assert records[1]["status"] == "skipped"
    assert records[1]["reason"] == "its when (steps.urgent.branch == 'then') was false"


async def test_a_failure_inside_a_branch_fails_the_branch_unless_it_continues(
    manifest: Manifest,
) -> None:
    async def failing(step: Any, inputs: dict[str, Any]) -> Any:
        raise InputError("demo.page", "id", "names no incident PagerDuty knows")

    inner = {"name": "page", **NOTE}
    branch = {"name": "urgent", "if": "true", "then": [inner]}
    status, records = await run_flow(
        make([branch, {"name": "n", **NOTE}]), manifest, TRIGGER, failing
    )
    assert status == "failed" and [r["name"] for r in records] == ["urgent"]
    assert records[0]["error"] == "StepStopped: a step in its then branch failed"
    assert records[0]["steps"][0]["error"] == (
        "InputError: demo.page: input 'id': names no incident PagerDuty knows"
    )
    lenient = {**branch, "then": [{**inner, "onError": "continue"}]}
    status, records = await run_flow(make([lenient]), manifest, TRIGGER, failing)
    assert status == "succeeded_with_errors"  # findable by a filter on it


async def test_switch_runs_the_named_case_or_the_default(manifest: Manifest) -> None:
    switch = {
        "name": "by_urgency",
        "switch": "{{ trigger.event.data.urgency }}",
        "cases": {"high": [{"name": "page", **NOTE}], "low": [{"name": "log", **NOTE}]},
        "default": [{"name": "other", **NOTE}],
    }
    for urgency, ran in (("high", ["page"]), ("low", ["log"]), ("weird", ["other"])):
        event = {**TRIGGER, "event": {**TRIGGER["event"], "data": {"urgency": urgency}}}
        recorder = Recorder()
        status, records = await run_flow(make([switch]), manifest, event, recorder)
        assert status == "succeeded" and [n for n, _ in recorder.calls] == ran
        skipped = [s for s in records[0]["steps"] if s["status"] == "skipped"]
        assert len(skipped) == 2 and f"the value was '{urgency}'" in skipped[0]["reason"]


async def test_set_gives_later_steps_named_values(manifest: Manifest) -> None:
    steps = [
        {"name": "names", "set": {"title": "{{ trigger.event.data.title }}", "n": 2}},
        {"name": "more", "set": {"twice": "{{ vars.n * 2 }}", "label": "{{ vars.title }}!"}},
        {
            "name": "note",
            "action": "createIncidentNote",
            "inputs": {"id": "P1", "note": "{{ vars.label }} x{{ vars.twice }}"},
        },
    ]
    recorder = Recorder()
    status, records = await run_flow(make(steps), manifest, TRIGGER, recorder)
    assert status == "succeeded"
    assert recorder.calls == [("note", {"id": "P1", "note": "Server is on fire! x4"})]
    assert records[1]["values"] == {"twice": 4, "label": "Server is on fire!"}


def test_dates_and_times_in_templates() -> None:
    clock = datetime(2026, 12, 4, 10, 30, tzinfo=UTC)
    scope = {"now": lambda: clock, "trigger": {"at": "2026-12-04T10:00:00Z"}}
    assert render("{{ now() }}", scope) == "2026-12-04T10:30:00+00:00"
    assert render("{{ trigger.at | minutes_between(now()) }}", scope) == 30.0
    assert render("{{ now() | add(minutes=10) | iso }}", scope) == "2026-12-04T10:40:00+00:00"
    assert render("{{ now() | subtract(days=1) | format_time('YYYY-MM-DD') }}", scope) == (
        "2026-12-03"
    )
    assert render("{{ now() | in_zone('Europe/Paris') | format_time('HH:mm') }}", scope) == "11:30"
    assert render("{{ parse_time(trigger.at) < now() }}", scope) is True
    assert render("{{ '10m' | duration }}", scope) == 600.0
    assert render("{{ 'PT1H30M' | duration }}", scope) == 5400.0


@pytest.mark.parametrize(
    ("steps", "named"),
    [
        (
            [{"name": "a", **NOTE, "when": "steps.b.data"}, {"name": "b", **NOTE}],
            "input 'when': refers to step 'b', which does not run before",
        ),
        (
            [
                {
                    "name": "a",
                    "action": "createIncidentNote",
                    "inputs": {"id": "P1", "note": "{{ steps['b'].data }}"},
                },
                {"name": "b", **NOTE},
            ],
            "input 'note': refers to step 'b', which does not run before",
        ),
        (
            [
                {
                    "name": "a",
                    "action": "createIncidentNote",
                    "inputs": {"id": "P1", "note": "{{ nowz() }}"},
                }
            ],
            "uses 'nowz', which is not a function or filter here",
        ),
        (
            [
                {
                    "name": "a",
                    "action": "createIncidentNote",
                    "inputs": {"id": "P1", "note": "{{ trigger | minute_between }}"},
                }
            ],
            "uses 'minute_between', which is not a function or filter here",
        ),
        (
            [{"name": "a", "action": "getIncidnet"}],
            "unknown action 'getIncidnet' (did you mean 'getIncident'?)",
        ),
        ([{"name": "a", "action": "getincident"}], "(did you mean 'getIncident'?)"),
        (
            [{"name": "a", "action": "createIncidentNote", "inputs": {"id": "P1", "nte": "x"}}],
            "input 'nte': is not an input of this step (did you mean 'note'?)",
        ),
        (
            [{"name": "a", "action": "getIncident", "inputs": {"id": "P1", "connection": "other"}}],
            "a step uses its instance's connection",
        ),
        (
            [
                {"name": "b", "if": "true", "then": [{"name": "c", **NOTE}]},
                {"name": "d", "if": "steps.nope", "then": [{"name": "e", **NOTE}]},
            ],
            "input 'if': refers to step 'nope', which does not run before",
        ),
    ],
)
def test_deploy_refuses_what_would_fail_at_run_time_naming_it(
    manifest: Manifest, steps: list[dict[str, Any]], named: str
) -> None:
    with pytest.raises(InputError) as caught:
        validate_flow(make(steps), manifest)
    assert named in str(caught.value)


def test_steps_of_a_branch_can_be_referred_to_after_it(manifest: Manifest) -> None:
    steps = [
        {"name": "b", "if": "true", "then": [{"name": "c", **NOTE}]},
        {
            "name": "d",
            "action": "createIncidentNote",
            "inputs": {"id": "P1", "note": "{{ steps.c.data }}"},
        },
    ]
    assert validate_flow(make(steps), manifest) == []


def test_a_step_of_no_known_kind_and_duplicate_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="a step needs exactly one of: action"):
        make([{"name": "a", "actoin": "getIncident"}])
    with pytest.raises(ValidationError, match="a step needs exactly one of"):
        make([{"name": "a", "action": "getIncident", "if": "true", "then": []}])
    with pytest.raises(ValidationError, match="step name 'c' is used twice"):
        make([{"name": "b", "if": "true", "then": [{"name": "c", **NOTE}]}, {"name": "c", **NOTE}])


def test_an_unknown_trigger_is_told_the_nearest(manifest: Manifest) -> None:
    bad = make([{"name": "a", **NOTE}])
    bad.trigger.type = "incidentTrigger"
    with pytest.raises(InputError, match=r"unknown trigger \(did you mean 'incidentsTrigger'\?\)"):
        validate_flow(bad, manifest)


def test_flows_keep_their_kind_keys_when_stored() -> None:
    branch = {"name": "b", "if": "x", "then": [{"name": "c", **NOTE}], "else": []}
    dumped = make([branch]).model_dump()
    assert dumped["steps"][0]["if"] == "x" and "else" in dumped["steps"][0]
    assert Flow.model_validate(dumped).model_dump() == dumped


ALERTS = {
    "event": {
        "data": {
            "assignees": [
                {"id": "A1", "summary": "disk"},
                {"id": "A2", "summary": "cpu"},
                {"id": "A3", "summary": "ram"},
            ]
        }
    }
}


def loop(body: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    each = "{{ trigger.event.data.assignees }}"
    return {"name": "each_alert", "forEach": each, "steps": body, **extra}


async def test_for_each_runs_its_steps_per_item_in_order_and_collects_outputs(
    manifest: Manifest,
) -> None:
    note = {
        "name": "note",
        "action": "createIncidentNote",
        "inputs": {"id": "P1", "note": "{{ index }}: {{ item.summary }}"},
    }
    after = {
        "name": "count",
        "set": {
            "n": "{{ steps.each_alert | length }}",
            "first": "{{ steps.each_alert.0.note.data.echo.note }}",
        },
    }
    recorder = Recorder()
    status, records = await run_flow(make([loop([note]), after]), manifest, ALERTS, recorder)
    assert status == "succeeded"
    assert [i["note"] for _, i in recorder.calls] == ["0: disk", "1: cpu", "2: ram"]
    assert records[0]["count"] == 3 and len(records[0]["items"]) == 3
    assert records[0]["items"][1][0]["inputs"]["note"] == "1: cpu"
    assert records[1]["values"] == {"n": 3, "first": "0: disk"}


async def test_a_failing_item_stops_the_loop_unless_it_continues(manifest: Manifest) -> None:
    async def fails_on_cpu(step: Any, inputs: dict[str, Any]) -> Any:
        if "cpu" in inputs["note"]:
            raise InputError("demo.note", "note", "refused")
        return {"data": {}}

    note = {
        "name": "note",
        "action": "createIncidentNote",
        "inputs": {"id": "P1", "note": "{{ item.summary }}"},
    }
    status, records = await run_flow(make([loop([note])]), manifest, ALERTS, fails_on_cpu)
    assert status == "failed" and len(records[0]["items"]) == 2
    assert records[0]["error"] == "StepStopped: item 1 of 3 failed"
    status, records = await run_flow(
        make([loop([note], onError="continue")]), manifest, ALERTS, fails_on_cpu
    )
    assert status == "succeeded_with_errors"
    assert len(records[0]["items"]) == 3 and records[0]["failedItems"] == 1


async def test_for_each_needs_a_list_and_a_free_name(manifest: Manifest) -> None:
    note = {"name": "note", **NOTE}
    bad = {
        "name": "each_alert",
        "forEach": "{{ trigger.event.data.assignees.0.id }}",
        "steps": [note],
    }
    status, records = await run_flow(make([bad]), manifest, ALERTS, Recorder())
    assert status == "failed" and "rendered a str, not a list" in records[0]["error"]
    with pytest.raises(InputError, match="'steps' is taken"):
        validate_flow(make([loop([note], **{"as": "steps"})]), manifest)
    # The body's steps are the loop's: after it, its output lists them.
    outside = [
        loop([note]),
        {
            "name": "x",
            "action": "createIncidentNote",
            "inputs": {"id": "P1", "note": "{{ steps.note }}"},
        },
    ]
    with pytest.raises(InputError, match="refers to step 'note', which does not run before"):
        validate_flow(make(outside), manifest)


async def test_for_each_with_concurrency_keeps_the_bound_and_the_items_order(
    manifest: Manifest,
) -> None:
    """A run with no durable engine runs the items as tasks: at most ``concurrency`` at
    once, outputs in the items' order whichever ends first; each item has its own vars."""
    import asyncio

    flying = {"now": 0, "most": 0}

    async def slow_first(step: Any, inputs: dict[str, Any]) -> Any:
        flying["now"] += 1
        flying["most"] = max(flying["most"], flying["now"])
        await asyncio.sleep(0.05 if inputs["note"] == "disk" else 0.01)  # the first ends last
        flying["now"] -= 1
        return {"data": {"echo": inputs["note"]}}

    body = [
        # The item's scope is the run's: its clock (now) included.
        {"name": "mine", "set": {"seen": "{{ item.summary }}", "year": "{{ now().year }}"}},
        {
            "name": "note",
            "action": "createIncidentNote",
            "inputs": {"id": "P1", "note": "{{ vars.seen }}"},
        },
    ]
    status, records = await run_flow(
        make([loop(body, concurrency=2)]), manifest, ALERTS, slow_first
    )
    assert status == "succeeded" and flying["most"] == 2
    assert [o["note"]["data"]["echo"] for o in records[0]["result"]] == ["disk", "cpu", "ram"]
    years = [item[0]["values"]["year"] for item in records[0]["items"]]
    assert years == [datetime.now(UTC).year] * 3
    for bound in (0, 21):
        with pytest.raises(ValidationError, match="concurrency"):
            validate_flow(make([loop(body, concurrency=bound)]), manifest)
