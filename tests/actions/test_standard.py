"""The standard suite: every declarative action, run with its manifest examples.

For each action the request sent (method, path, query, headers, body) is compared
with the expectation below, validated against PagerDuty's official OpenAPI
document (by the ``pd`` fixture), and answered with the spec's example response,
which must come back as ``{"data": <body>}``. A new action without an entry here
fails ``test_every_declarative_action_has_an_expectation``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
import respx

from pagerduty_connector.component.manifest import Input, InputType, Manifest, load_manifest
from tests.conftest import API_KEY, REST
from tests.support.examples import examples
from tests.support.openapi import example_response, required_scope, requires_from

Ex = dict[str, Any]
Body = Callable[[Ex], Any] | None


def answer_with_example(pd: respx.MockRouter, method: str, path: str) -> tuple[respx.Route, Any]:
    """A route answering ``method path`` with the spec's example response, and that body."""
    status, body = example_response(method, path)
    answer = httpx2.Response(status, json=body) if body is not None else httpx2.Response(status)
    return pd.route(method=method, url=REST + path).mock(return_value=answer), body


def unwrap(input_key: str, wrapper: str) -> Callable[[Ex], Any]:
    return lambda ex: {wrapper: ex[input_key][wrapper]}


def wrap(input_key: str, wrapper: str) -> Callable[[Ex], Any]:
    return lambda ex: {wrapper: ex[input_key]}


PAGE = [("limit", "10"), ("offset", "18")]
SINCE_UNTIL = [("since", "2020-07-17T07:42:58Z"), ("until", "2020-07-17T07:42:58Z")]

EXPECTED: dict[str, tuple[str, str, list[tuple[str, str]], Body]] = {
    "createIncident": ("POST", "/incidents", [], unwrap("incident", "incident")),
    "createIncidentNote": (
        "POST",
        "/incidents/PT4KHLK/notes",
        [],
        lambda ex: {"note": {"content": "Firefighters are on the scene."}},
    ),
    "createService": ("POST", "/services", [], unwrap("service", "service")),
    "createTemplate": ("POST", "/templates", [], wrap("template", "template")),
    "createUser": ("POST", "/users", [], unwrap("user", "user")),
    "createWebhookSubscription": (
        "POST",
        "/webhook_subscriptions",
        [],
        wrap("webhookSubscription", "webhook_subscription"),
    ),
    "deleteService": ("DELETE", "/services/PIJ90N7", [], None),
    "deleteTemplate": ("DELETE", "/templates/PBZUP2B", [], None),
    "deleteUser": ("DELETE", "/users/PXPGF42", [], None),
    "deleteWebhookSubscription": ("DELETE", "/webhook_subscriptions/sampleWebhookId", [], None),
    "enableWebhookSubscription": (
        "POST",
        "/webhook_subscriptions/sampleWebhookId/enable",
        [],
        None,
    ),
    "getChangeEvent": ("GET", "/change_events/12", [], None),
    "getIncident": ("GET", "/incidents/PT4KHLK", [], None),
    "getIncidentAlert": ("GET", "/incidents/PT4KHLK/alerts/PT4KHLK", [], None),
    "getService": ("GET", "/services/PIJ90N7", [], None),
    "getTemplate": ("GET", "/templates/PBZUP2B", [], None),
    "getTemplates": (
        "GET",
        "/templates",
        [
            ("limit", "10"),
            ("offset", "18"),
            ("query", "Template Name 1"),
            ("template_type", "status_update"),
            ("sort_by", "created_at:asc"),
        ],
        None,
    ),
    "getUser": ("GET", "/users/PXPGF42", [], None),
    "getWebhookSubscription": ("GET", "/webhook_subscriptions/sampleWebhookId", [], None),
    "listChangeEvents": (
        "GET",
        "/change_events",
        [*PAGE, ("team_ids[]", "PEYSGVF"), ("integration_ids[]", "PEYSGVF"), *SINCE_UNTIL],
        None,
    ),
    "listIncidentAlerts": (
        "GET",
        "/incidents/PT4KHLK/alerts",
        [*PAGE, ("alert_key", "baf7cf21b1da41b4b0221008339ff357")],
        None,
    ),
    "listIncidentNotes": ("GET", "/incidents/PT4KHLK/notes", [], None),
    "listIncidents": (
        "GET",
        "/incidents",
        [
            *PAGE,
            ("incident_key", "baf7cf21b1da41b4b0221008339ff357"),
            ("service_ids[]", "PIJ90N7"),
            ("team_ids[]", "PEYSGVF"),
            ("user_ids[]", "PXPGF42"),
            ("time_zone", "America/Los_Angeles"),
            ("sort_by", "incident_number:desc"),
            *SINCE_UNTIL,
        ],
        None,
    ),
    "listNotifications": (
        "GET",
        "/notifications",
        [*PAGE, ("time_zone", "America/Los_Angeles"), *SINCE_UNTIL],
        None,
    ),
    "listPriorities": ("GET", "/priorities", PAGE, None),
    "listServices": (
        "GET",
        "/services",
        [
            ("query", "sampleName"),
            *PAGE,
            ("team_ids[]", "PEYSGVF"),
            ("time_zone", "America/Los_Angeles"),
            ("name", "My Service"),
        ],
        None,
    ),
    "listUsers": (
        "GET",
        "/users",
        [("query", "sampleName"), ("team_ids[]", "PEYSGVF"), *PAGE],
        None,
    ),
    "listWebhookSubscriptions": (
        "GET",
        "/webhook_subscriptions",
        [*PAGE, ("filter_id", "123")],
        None,
    ),
    "renderTemplate": (
        "POST",
        "/templates/PBZUP2B/render",
        [],
        lambda ex: {
            "incident_id": "PT4KHLK",
            "status_update": {"message": "Status update message"},
        },
    ),
    "testWebhookSubscription": ("POST", "/webhook_subscriptions/sampleWebhookId/ping", [], None),
    "updateChangeEvent": ("PUT", "/change_events/12", [], unwrap("event", "change_event")),
    "updateIncident": ("PUT", "/incidents/PT4KHLK", [], unwrap("incident", "incident")),
    "updateIncidentAlert": (
        "PUT",
        "/incidents/PT4KHLK/alerts/PT4KHLK",
        [],
        unwrap("alert", "alert"),
    ),
    "updateIncidentAlerts": ("PUT", "/incidents/PT4KHLK/alerts", PAGE, wrap("alerts", "alerts")),
    "updateIncidents": ("PUT", "/incidents", PAGE, wrap("incidents", "incidents")),
    "updateService": ("PUT", "/services/PIJ90N7", [], wrap("service", "service")),
    "updateTemplate": ("PUT", "/templates/PBZUP2B", [], wrap("template", "template")),
    "updateUser": ("PUT", "/users/PXPGF42", [], unwrap("user", "user")),
    "updateWebhookSubscription": (
        "PUT",
        "/webhook_subscriptions/sampleWebhookId",
        [],
        unwrap("webhookSubscription", "webhook_subscription"),
    ),
    # Beyond the reference's 43: what builders asked for (issue 22).
    "mergeIncidents": (
        "PUT",
        "/incidents/PT4KHLK/merge",
        [],
        lambda ex: {
            "source_incidents": [
                {"id": "P8JOGX7", "type": "incident_reference"},
                {"id": "PPVZH9X", "type": "incident_reference"},
            ]
        },
    ),
    "snoozeIncident": ("POST", "/incidents/PT4KHLK/snooze", [], lambda ex: {"duration": 3600}),
    "createIncidentResponderRequest": (
        "POST",
        "/incidents/PT4KHLK/responder_requests",
        [],
        lambda ex: {
            "requester_id": "PL1JMK5",
            "message": ex["message"],
            "responder_request_targets": ex["targets"],
        },
    ),
    "createIncidentStatusUpdate": (
        "POST",
        "/incidents/PT4KHLK/status_updates",
        [],
        lambda ex: {
            "message": "The server fire is spreading.",
            "subject": "Server Fire Update",
            "html_message": "<h1>Server is still on fire</h1>",
        },
    ),
    "listOnCalls": (
        "GET",
        "/oncalls",
        [
            *PAGE,
            ("time_zone", "America/Los_Angeles"),
            ("user_ids[]", "PXPGF42"),
            ("escalation_policy_ids[]", "PT20YPA"),
            ("schedule_ids[]", "PI7DH85"),
            *SINCE_UNTIL,
        ],
        None,
    ),
    "listEscalationPolicies": (
        "GET",
        "/escalation_policies",
        [*PAGE, ("query", "sampleName"), ("user_ids[]", "PXPGF42"), ("team_ids[]", "PEYSGVF")],
        None,
    ),
    "getEscalationPolicy": ("GET", "/escalation_policies/PT20YPA", [], None),
    "listSchedules": (
        "GET",
        "/schedules",
        [
            *PAGE,
            ("query", "sampleName"),
            ("time_zone", "America/Los_Angeles"),
            *SINCE_UNTIL,
            ("team_ids[]", "PEYSGVF"),
        ],
        None,
    ),
    "getSchedule": (
        "GET",
        "/schedules/PI7DH85",
        [("time_zone", "America/Los_Angeles"), *SINCE_UNTIL],
        None,
    ),
    "listScheduleOverrides": ("GET", "/schedules/PI7DH85/overrides", SINCE_UNTIL, None),
    "createScheduleOverrides": (
        "POST",
        "/schedules/PI7DH85/overrides",
        [],
        wrap("overrides", "overrides"),
    ),
}

DECLARATIVE = [a.key for a in load_manifest().actions if a.request is not None]


def test_every_declarative_action_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(DECLARATIVE)


@pytest.mark.parametrize("key", DECLARATIVE)
async def test_examples_send_the_documented_request(
    key: str, manifest: Manifest, pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    action = next(a for a in manifest.actions if a.key == key)
    method, path, query, body = EXPECTED[key]
    route, response_body = answer_with_example(pd, method, path)
    ex = examples(action)

    result = await run(key, ex)

    assert route.call_count == 1
    sent = route.calls.last.request
    assert list(sent.url.params.multi_items()) == query
    assert sent.headers["Authorization"] == f"Token token={API_KEY}"
    assert sent.headers["Accept"] == "application/vnd.pagerduty+json;version=2"
    assert sent.headers["Content-Type"] == "application/json"
    if "from" in ex:
        assert sent.headers["From"] == ex["from"]
    if body is None:
        assert sent.content == b""
    else:
        assert json.loads(sent.content) == body(ex)
    assert result == {"data": response_body}


@pytest.mark.parametrize("key", DECLARATIVE)
def test_declared_scope_and_from_match_the_spec(key: str, manifest: Manifest) -> None:
    action = next(a for a in manifest.actions if a.key == key)
    method, path, _, _ = EXPECTED[key]
    assert action.scope == required_scope(method, path)
    assert action.request is not None
    assert action.request.requiresFrom == requires_from(method, path)


def query_value(spec: Input) -> list[str] | str:
    """A value the input's query parameter accepts (lists get two values)."""
    if spec.type is InputType.BOOLEAN:
        values = ["true"]  # the reference's model says 'True'; PagerDuty wants 'true'
    elif spec.model:
        values = spec.model[:2]
    elif spec.clean == "integer":
        values = [str(max(spec.minimum or 0, 5))]
    elif spec.key in ("since", "until") or "date" in spec.key.lower():
        values = ["2020-07-17T07:42:58Z"]
    elif isinstance(spec.example, str) and spec.example:
        values = [spec.example]
    else:
        values = ["PABC123", "PDEF456"]
    return values if spec.collection == "valuelist" else values[0]


QUERY_MAPPINGS = [
    pytest.param(action.key, input_key, param, id=f"{action.key}-{param}")
    for action in load_manifest().actions
    if action.request is not None
    for input_key, param in action.request.query.items()
]


def test_every_declared_query_mapping_is_exercised() -> None:
    declared = sum(len(a.request.query) for a in load_manifest().actions if a.request)
    assert len(QUERY_MAPPINGS) == declared > 70


@pytest.mark.parametrize(("key", "input_key", "param"), QUERY_MAPPINGS)
async def test_each_query_input_reaches_its_parameter(
    key: str,
    input_key: str,
    param: str,
    manifest: Manifest,
    pd: respx.MockRouter,
    run: Callable[..., Any],
) -> None:
    """Every query mapping sends the input under the spec's parameter name (validated by
    the ``pd`` fixture against the OpenAPI document), repeating ``name[]`` for lists."""
    action = next(a for a in manifest.actions if a.key == key)
    spec = next(i for i in action.inputs if i.key == input_key)
    method, path, _, _ = EXPECTED[key]
    route, _ = answer_with_example(pd, method, path)
    value = query_value(spec)
    given = "True" if spec.type is InputType.BOOLEAN else value
    await run(key, {**examples(action), input_key: given})
    sent = route.calls.last.request.url.params.get_list(param)
    assert sent == (value if isinstance(value, list) else [value])
