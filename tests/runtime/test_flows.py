"""Flows: templates (typed and sandboxed), validation at deploy, ordered execution."""

from __future__ import annotations

import json
from typing import Any

import pytest
import respx
from jinja2.exceptions import SecurityError, UndefinedError

from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.manifest import Manifest
from pagerduty_connector.component.requester import run_step
from pagerduty_connector.runtime.flows import (
    Flow,
    TemplateFailed,
    concurrency_key,
    render,
    render_input,
    run_flow,
    validate_flow,
)
from tests.conftest import REST, MakeCtx

TRIGGER = {
    "event": {
        "id": "01DEN0M0L0OCDNR0CDEVP4SRGH",
        "event_type": "incident.triggered",
        "data": {"id": "Q1P5", "title": "Server is on fire", "urgency": "high"},
        "notifications": [{"sentat": "2024-01-15T10:30:00Z"}],
    }
}


TRIGGER_INPUTS = {
    "events": ["incident.triggered"],
    "webhookDescription": "ops",
    "filterType": "account_reference",
}


def flow(
    steps: list[dict[str, Any]],
    trigger: str = "incidentsTrigger",
    inputs: dict[str, Any] | None = None,
) -> Flow:
    trigger_inputs = {**TRIGGER_INPUTS, **(inputs or {})}
    return Flow.model_validate(
        {
            "name": "on-incident",
            "trigger": {"type": trigger, "inputs": trigger_inputs},
            "steps": steps,
        }
    )


def test_a_lone_expression_keeps_its_type() -> None:
    scope = {"trigger": TRIGGER, "steps": {}}
    assert render("{{ trigger.event.data }}", scope) == TRIGGER["event"]["data"]
    assert render(" {{ trigger.event.notifications.0.sentat }} ", scope) == "2024-01-15T10:30:00Z"
    assert render("Incident {{ trigger.event.data.id }}!", scope) == "Incident Q1P5!"
    assert render({"a": ["{{ 1 + 1 }}", "x"]}, scope) == {"a": [2, "x"]}
    data = {"steps": {"get": {"items": [1], "values": "v"}}}
    assert render("{{ steps.get.items }}", data) == [1]  # keys win over dict methods
    assert render("{{ steps.get.values }}", data) == "v"


def test_templates_are_sandboxed_and_strict() -> None:
    with pytest.raises(TemplateFailed, match=f"failed: {SecurityError.__name__}: access to"):
        render_input("f.s", "id", "{{ ''.__class__.__mro__ }}", {})
    with pytest.raises(TemplateFailed, match=f"{UndefinedError.__name__}: .* no attribute 'nope'"):
        render_input("f.s", "id", "{{ trigger.nope.deeper }}", {"trigger": {}})
    # A lone expression naming nothing raises too, rather than passing Jinja's Undefined on.
    with pytest.raises(TemplateFailed, match="no attribute 'nope'"):
        render_input("f.s", "id", "{{ trigger.nope }}", {"trigger": {}})
    assert render("{{ trigger.there }}", {"trigger": {"there": None}}) is None


def test_valid_flow_passes(manifest: Manifest) -> None:
    checked = flow(
        [
            {
                "name": "get",
                "action": "getIncident",
                "inputs": {"id": "{{ trigger.event.data.id }}"},
            },
            {
                "name": "note",
                "action": "createIncidentNote",
                "inputs": {
                    "id": "{{ steps.get.data.incident.id }}",
                    "note": "Seen: {{ steps.get.data.incident.title }}",
                },
                "when": "trigger.event.data.urgency == 'high'",
            },
        ],
        inputs={"events": "incident.triggered"},  # one value, sent as text
    )
    assert validate_flow(checked, manifest) == []
    # The trigger's inputs are replaced by their cleaned values.
    assert checked.trigger.inputs == {
        "events": ["incident.triggered"],
        "webhookDescription": "ops",
        "filterType": "account_reference",
    }


@pytest.mark.parametrize(
    ("steps", "trigger", "message"),
    [
        (
            [{"name": "a", "action": "getIncident", "inputs": {"id": "P1"}}],
            "nope",
            "unknown trigger",
        ),
        (
            [{"name": "a", "action": "getIncidnt"}],
            "incidentsTrigger",
            "unknown action 'getIncidnt'",
        ),
        ([{"name": "a", "action": "getIncident"}], "incidentsTrigger", "input 'id': is required"),
        (
            [{"name": "a", "action": "listIncidents", "inputs": {"limit": "ten"}}],
            "incidentsTrigger",
            "input 'limit': expected a whole number",
        ),
        (
            [{"name": "a", "action": "getIncident", "inputs": {"id": "{{ trigger.event.data.id"}}],
            "incidentsTrigger",
            "input 'id': template error",
        ),
        (
            [{"name": "a", "action": "getIncident", "inputs": {"id": "{{ steps.b.data.id }}"}}],
            "incidentsTrigger",
            "refers to step 'b', which does not run before",
        ),
        (
            [{"name": "a", "action": "getIncident", "inputs": {"id": "P1", "colour": "red"}}],
            "incidentsTrigger",
            "input 'colour': is not an input of this step",
        ),
    ],
)
def test_bad_flows_are_rejected_with_the_step_and_input(
    steps: list[dict[str, Any]], trigger: str, message: str, manifest: Manifest
) -> None:
    with pytest.raises(InputError) as info:
        validate_flow(flow(steps, trigger), manifest)
    assert message in str(info.value)


GET = [{"name": "a", "action": "getIncident", "inputs": {"id": "P1"}}]


@pytest.mark.parametrize(
    ("trigger", "inputs", "message"),
    [
        ("incidentsTrigger", {"filterType": "service_reference"}, "input 'filterId': is required"),
        ("incidentsTrigger", {"filterType": "user_reference"}, "'user_reference' is not one of"),
        (
            "incidentsTrigger",
            {"events": ["service.created"]},
            "'service.created' is not one of: incident.acknowledged",
        ),
        ("serviceTrigger", {}, "'incident.triggered' is not one of: service.created"),
        ("incidentsTrigger", {"events": []}, "input 'events': is required"),
        ("incidentsTrigger", {"webhookDescription": ""}, "input 'webhookDescription': is required"),
    ],
)
def test_bad_trigger_inputs_are_rejected(
    trigger: str, inputs: dict[str, Any], message: str, manifest: Manifest
) -> None:
    with pytest.raises(InputError) as info:
        validate_flow(flow(GET, trigger, inputs), manifest)
    assert message in str(info.value) and f"on-incident.trigger ({trigger})" in str(info.value)


def test_misspelt_trigger_events_are_refused_with_the_nearest_name(manifest: Manifest) -> None:
    """A misspelt event type would subscribe to nothing PagerDuty sends: refused."""
    checked = flow(
        GET,
        inputs={"events": "incident.trigerred", "filterType": "team_reference", "filterId": "PT1"},
    )
    with pytest.raises(InputError) as info:
        validate_flow(checked, manifest)
    assert "input 'events': 'incident.trigerred' is not one of" in str(info.value)
    assert str(info.value).endswith("(did you mean 'incident.triggered'?)")


def test_duplicate_step_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="step name 'a' is used twice"):
        flow([{"name": "a", "action": "getIncident"}, {"name": "a", "action": "getIncident"}])


async def test_steps_run_in_order_with_results_feeding_templates(
    manifest: Manifest, make_ctx: MakeCtx, pd: respx.MockRouter
) -> None:
    incident = {"incident": {"id": "Q1P5", "title": "Server is on fire"}}
    pd.get(f"{REST}/incidents/Q1P5").respond(json=incident)
    note = pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    ctx = make_ctx()
    the_flow = flow(
        [
            {
                "name": "get",
                "action": "getIncident",
                "inputs": {"id": "{{ trigger.event.data.id }}"},
            },
            {
                "name": "low",
                "action": "listIncidents",
                "when": "trigger.event.data.urgency == 'low'",
            },
            {
                "name": "note",
                "action": "createIncidentNote",
                "inputs": {
                    "id": "{{ steps.get.data.incident.id }}",
                    "note": "Seen: {{ steps.get.data.incident.title }}",
                },
            },
        ]
    )
    status, records = await run_flow(
        the_flow, manifest, TRIGGER, lambda step, inputs: run_step(ctx, step.action, inputs)
    )
    assert status == "succeeded", records
    assert [(r["name"], r["status"]) for r in records] == [
        ("get", "succeeded"),
        ("low", "skipped"),
        ("note", "succeeded"),
    ]
    assert records[2]["inputs"] == {"id": "Q1P5", "note": "Seen: Server is on fire"}
    assert json.loads(note.calls.last.request.content) == {
        "note": {"content": "Seen: Server is on fire"}
    }


async def test_on_error_stop_and_continue(
    manifest: Manifest, make_ctx: MakeCtx, pd: respx.MockRouter
) -> None:
    pd.get(f"{REST}/incidents/GONE").respond(404, json={"error": {"message": "Not Found"}})
    listing = pd.get(f"{REST}/priorities").respond(json={"priorities": []})
    ctx = make_ctx()

    async def go(on_error: str) -> tuple[str, list[dict[str, Any]]]:
        steps = [
            {"name": "get", "action": "getIncident", "inputs": {"id": "GONE"}, "onError": on_error},
            {"name": "after", "action": "listPriorities"},
        ]
        return await run_flow(
            flow(steps), manifest, TRIGGER, lambda step, i: run_step(ctx, step.action, i)
        )

    status, records = await go("stop")
    assert status == "failed" and [r["name"] for r in records] == ["get"]
    assert records[0]["error"] == "PagerDutyError: GET /incidents/GONE: HTTP 404: Not Found"
    assert not listing.called
    status, records = await go("continue")
    # The failure was let go by, and is still findable: not plain "succeeded".
    assert status == "succeeded_with_errors"
    assert [r["status"] for r in records] == ["failed", "succeeded"]


def test_a_concurrency_key_is_a_template_over_the_trigger(manifest: Manifest) -> None:
    steps = [{"name": "a", "action": "getIncident", "inputs": {"id": "P1"}}]
    keyed = flow(steps)
    keyed.concurrencyKey = "{{ trigger.event.data.id }}"
    assert validate_flow(keyed, manifest) == []
    assert concurrency_key(keyed.model_dump(), TRIGGER) == "Q1P5"
    assert concurrency_key({"concurrencyKey": None}, TRIGGER) is None
    assert concurrency_key({"concurrencyKey": "{{ trigger.nope }}"}, TRIGGER) is None
    for bad, problem in (
        ("{{ steps.a.data.id }}", "may use the trigger only"),
        ("{{ trigger.event.data.id", "template error"),
    ):
        keyed.concurrencyKey = bad
        with pytest.raises(InputError, match=problem):
            validate_flow(keyed, manifest)


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        (
            {"id": "{{ trigger.event.data.nope }}"},
            "demo.get: input 'id': template '{{ trigger.event.data.nope }}' failed: "
            "UndefinedError: 'dict object' has no attribute 'nope'",
        ),
        (
            {"id": "P{{ range(10**9) | length }}"},
            "demo.get: input 'id': template 'P{{ range(10**9) | length }}' failed: OverflowError: "
            "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).",
        ),
        (
            {"id": "P1", "include": ["{{ 1 // 0 }}"]},
            "demo.get: input 'include': template '{{ 1 // 0 }}' at [0] failed: "
            "ZeroDivisionError: integer division or modulo by zero",
        ),
        (
            {"id": {"deep": {"inside": "{{ steps.missing.id }}"}}},
            "demo.get: input 'id': template '{{ steps.missing.id }}' at deep.inside failed: "
            "UndefinedError: 'dict object' has no attribute 'missing'",
        ),
    ],
)
async def test_a_template_that_fails_at_run_time_fails_its_step_naming_it(
    manifest: Manifest, inputs: dict[str, Any], named: str
) -> None:
    """The step fails (nothing is sent) with the flow, step, input, where inside it, the
    template and Jinja's reason; the run ends as failed instead of hanging."""
    sent: list[dict[str, Any]] = []

    async def step_runner(step: Any, rendered: dict[str, Any]) -> dict[str, Any]:
        sent.append(rendered)
        return {"data": {}}

    demo = flow([{"name": "get", "action": "getIncident", "inputs": inputs}])
    demo.name = "demo"
    status, records = await run_flow(demo, manifest, TRIGGER, step_runner)
    assert status == "failed" and sent == []
    assert records[0]["status"] == "failed"
    assert records[0]["error"] == f"TemplateFailed: {named}"


async def test_a_when_that_fails_at_run_time_fails_its_step(manifest: Manifest) -> None:
    demo = flow(
        [
            {
                "name": "get",
                "action": "getIncident",
                "inputs": {"id": "P1"},
                "when": "trigger.event.data.nope > 3",
            }
        ]
    )

    async def never(step: Any, rendered: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("a step whose when failed must not run")

    status, records = await run_flow(demo, manifest, TRIGGER, never)
    assert status == "failed"
    assert "input 'when': template '{{trigger.event.data.nope > 3}}' failed" in records[0]["error"]


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ trigger.event.dta.id }}", "'trigger.event' has no 'dta' (did you mean 'data'?)"),
        ("{{ trigger.evnt.data.id }}", "'trigger' has no 'evnt' (did you mean 'event'?)"),
        ("{{ steps.a.dta.incident.id }}", "'steps.a' has no 'dta' (did you mean 'data'?)"),
        (
            "{{ steps.a.data.incidnet.title }}",
            "'steps.a.data' has no 'incidnet' (did you mean 'incident'?)",
        ),
        ("Note: {{ steps['a'].data.incidents }}", "'steps.a.data' has no 'incidents'"),
    ],
)
def test_template_paths_into_the_trigger_and_action_outputs_are_checked_at_deploy(
    template: str, problem: str, manifest: Manifest
) -> None:
    steps = [
        *GET,
        {"name": "b", "action": "createIncidentNote", "inputs": {"id": "P1", "note": template}},
    ]
    with pytest.raises(InputError) as info:
        validate_flow(flow(steps), manifest)
    assert problem in str(info.value) and "on-incident.b" in str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ trigger.event.data.service.id.anything }}",  # below two levels: not checked
        "{{ steps.a.data.incident.whatever }}",  # below the answer's top: not checked
        "{{ steps.a.data.get('incident') }}",  # a method, not a key
        "{{ steps.a.data['incident'].title }}",
        "{{ steps.a.data[trigger.event.data.id] }}",  # a computed key
        "{{ trigger.headers['x-webhook-id'] }}",
    ],
)
def test_paths_the_checks_cannot_know_are_let_through(template: str, manifest: Manifest) -> None:
    steps = [
        *GET,
        {"name": "b", "action": "createIncidentNote", "inputs": {"id": "P1", "note": template}},
    ]
    validate_flow(flow(steps), manifest)


@pytest.mark.parametrize(
    ("events", "template", "problem"),
    [
        (
            ["incident.triggered"],
            "{{ trigger.event.data.tilte }}",
            "has no 'tilte' (did you mean 'title'?)",
        ),
        (
            ["incident.resolved"],
            "{{ trigger.event.data.priority.sumary }}",
            "'trigger.event.data.priority' has no 'sumary' (did you mean 'summary'?)",
        ),
        # A note's data is the note: its incident is a reference, not the incident.
        (
            ["incident.annotated"],
            "{{ trigger.event.data.title }}",
            "'trigger.event.data' has no 'title'",
        ),
        (
            ["incident.annotated"],
            "{{ trigger.event.data.incident.title }}",
            "'trigger.event.data.incident' has no 'title'",
        ),
        # Either event may come: a key of one of them passes, one of neither does not.
        (
            ["incident.triggered", "incident.annotated"],
            "{{ trigger.event.data.contnet }}",
            "(did you mean 'content'?)",
        ),
        (
            ["service.updated"],
            "{{ trigger.event.data.name }}",
            "'trigger.event.data' has no 'name'",
        ),
    ],
)
def test_paths_into_event_data_are_checked_against_pagerdutys_documented_payloads(
    events: list[str], template: str, problem: str, manifest: Manifest
) -> None:
    """PagerDuty's V3 webhook documentation describes ``event.data`` for most event
    types (the manifest's ``eventData``): a path into it is checked against the data of
    every event type the flow selects."""
    trigger = "serviceTrigger" if events[0].startswith("service.") else "incidentsTrigger"
    steps = [
        {"name": "b", "action": "createIncidentNote", "inputs": {"id": "P1", "note": template}}
    ]
    with pytest.raises(InputError) as info:
        validate_flow(flow(steps, trigger, {"events": events}), manifest)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("events", "template"),
    [
        (
            ["incident.triggered", "incident.annotated"],
            "{{ trigger.event.data.content }} {{ trigger.event.data.title }}",
        ),
        (
            ["incident.responder.added"],
            "{{ trigger.event.data.user.summary }} {{ trigger.event.data.message }}",
        ),
        (["incident.status_update_published"], "{{ trigger.event.data.message }}"),
        # Not described by PagerDuty: its data is not checked.
        (["incident.triggered", "incident.workflow.started"], "{{ trigger.event.data.anything }}"),
        (["service.updated"], "{{ trigger.event.data.summary }} {{ trigger.event.data.teams }}"),
    ],
)
def test_documented_keys_and_undocumented_events_pass(
    events: list[str], template: str, manifest: Manifest
) -> None:
    trigger = "serviceTrigger" if events[0].startswith("service.") else "incidentsTrigger"
    steps = [
        {"name": "b", "action": "createIncidentNote", "inputs": {"id": "P1", "note": template}}
    ]
    validate_flow(flow(steps, trigger, {"events": events}), manifest)


def test_a_schedule_flow_reads_its_tick_not_an_event(manifest: Manifest) -> None:
    def scheduled(note: str) -> Flow:
        return Flow.model_validate(
            {
                "name": "tick",
                "trigger": {"type": "schedule", "inputs": {"cron": "0 9 * * *"}},
                "steps": [
                    {
                        "name": "b",
                        "action": "createIncidentNote",
                        "inputs": {"id": "P1", "note": note},
                    }
                ],
            }
        )

    validate_flow(scheduled("{{ trigger.scheduledAt }} {{ trigger.schedule.timezone }}"), manifest)
    with pytest.raises(InputError, match="'trigger' has no 'event'"):
        validate_flow(scheduled("{{ trigger.event.data.id }}"), manifest)
