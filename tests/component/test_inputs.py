"""Input cleaning and body shaping: bad input never reaches the network."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import respx

from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.inputs import clean_inputs
from pagerduty_connector.component.manifest import Input
from tests.conftest import REST

NOTE = {"note": {"id": "PWL7QXS", "content": "x"}}


def one(spec: dict[str, Any], value: Any) -> Any:
    cleaned = clean_inputs("act", [Input(key="v", label="V", **spec)], {"v": value})
    return cleaned["v"]


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), ("false", False), ("TRUE", True), ("0", False), (1, True)]
)
def test_booleans(value: Any, expected: bool) -> None:
    assert one({"type": "boolean"}, value) is expected


@pytest.mark.parametrize(
    ("spec", "value", "message"),
    [
        ({"type": "boolean"}, "maybe", "expected true or false, got 'maybe'"),
        ({"clean": "integer"}, "ten", "expected a whole number, got 'ten'"),
        ({"clean": "integer"}, 2.5, "expected a whole number, got 2.5"),
        ({"clean": "integer", "minimum": 1}, "0", "must be at least 1, got 0"),
        ({"clean": "email"}, "not-an-email", "expected an email address"),
        ({"model": ["high", "low"]}, "medium", "'medium' is not one of: high, low"),
        ({"type": "code"}, "{not json", "is not valid JSON (Expecting property name"),
        ({"collection": "keyvaluelist"}, [{"k": 1}], 'item 1 must be {"key": ..., "value": ...}'),
        ({}, {"a": 1}, "expected a string, got dict"),
    ],
)
def test_bad_values_name_the_input_and_the_problem(
    spec: dict[str, Any], value: Any, message: str
) -> None:
    with pytest.raises(InputError) as info:
        one(spec, value)
    assert str(info.value).startswith("act: input 'v': ")
    assert message in str(info.value)


def test_numbers_given_as_strings() -> None:
    assert one({"clean": "integer"}, "25") == 25
    assert one({"clean": "integer"}, 25) == 25


def test_valuelists_accept_one_string_or_a_list() -> None:
    assert one({"collection": "valuelist"}, "PIJ90N7") == ["PIJ90N7"]
    assert one({"collection": "valuelist"}, ["a", "b"]) == ["a", "b"]


def test_keyvaluelists_accept_an_object_or_pairs() -> None:
    spec = {"collection": "keyvaluelist"}
    assert one(spec, {"a": "1", "b": "2"}) == [("a", "1"), ("b", "2")]
    assert one(spec, [{"key": "a", "value": "1"}]) == [("a", "1")]
    assert one(spec, '{"a": "1"}') == [("a", "1")]


def test_code_inputs_accept_objects_and_json_strings() -> None:
    assert one({"type": "code"}, {"a": 1}) == {"a": 1}
    assert one({"type": "code"}, '{"a": 1}') == {"a": 1}
    assert one({"type": "code", "allowText": True}, "plain words") == "plain words"


def test_required_unknown_and_defaults() -> None:
    declared = [
        Input(key="id", label="ID", required=True),
        Input(key="sortBy", label="Sort", default="created_at:asc"),
    ]
    with pytest.raises(InputError, match="act: input 'id': is required"):
        clean_inputs("act", declared, {"id": "  "})
    with pytest.raises(InputError, match="act: input 'idd': is not an input of this step"):
        clean_inputs("act", declared, {"id": "P1", "idd": "typo"})
    assert clean_inputs("act", declared, {"id": "P1"}) == {"id": "P1", "sortBy": "created_at:asc"}


def test_unknown_values_of_a_warn_input_are_kept_with_a_warning() -> None:
    spec = Input(
        key="events", label="Events", collection="valuelist", model=["a.b"], unknownValues="warn"
    )
    cleaned = clean_inputs("t", [spec], {"events": ["a.b", "a.new"]})
    assert cleaned["events"] == ["a.b", "a.new"]
    assert cleaned.warnings == ["t: input 'events': 'a.new' is not a known value; sent as is"]


@pytest.mark.parametrize(
    ("key", "inputs", "problem"),
    [
        ("getIncident", {"id": "P1", "include": "bogus"}, "input 'include': 'bogus' is not one of"),
        ("listIncidents", {"limit": "ten"}, "input 'limit': expected a whole number"),
        ("listIncidents", {"statuses": ["open"]}, "input 'statuses': 'open' is not one of"),
        ("listIncidents", {"fetchAll": "perhaps"}, "input 'fetchAll': expected true or false"),
        ("createIncident", {"incident": "{not json"}, "input 'incident': is not valid JSON"),
        ("createIncident", {"incident": "[1, 2]"}, "input 'incident': expected a JSON object"),
        ("updateIncidents", {"incidents": "7"}, "input 'incidents': expected an array"),
        ("createIncidentNote", {"note": "x"}, "input 'id': is required"),
        ("createIncidentNote", {"id": "P1", "note": "x", "from": "me"}, "input 'from': expected"),
        ("getIncident", {"id": "P1", "includ": "users"}, "input 'includ': is not an input"),
    ],
)
async def test_bad_inputs_send_nothing(
    key: str, inputs: dict[str, Any], problem: str, pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    catch_all = pd.route().respond(200, json={})
    with pytest.raises(InputError) as info:
        await run(key, inputs)
    assert str(info.value).startswith(f"{key}: ")
    assert problem in str(info.value)
    assert not catch_all.called


@pytest.mark.parametrize(
    "note",
    [
        "Firefighters are on the scene.",
        {"note": "Firefighters are on the scene."},
        {"content": "Firefighters are on the scene."},
        {"note": {"content": "Firefighters are on the scene."}},
        '{"note": "Firefighters are on the scene."}',
    ],
)
async def test_note_shapes_all_become_note_content(
    note: Any, pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.post(f"{REST}/incidents/P1/notes").respond(201, json=NOTE)
    await run("createIncidentNote", {"id": "P1", "note": note})
    body = json.loads(route.calls.last.request.content)
    assert body == {"note": {"content": "Firefighters are on the scene."}}


async def test_wrapped_and_unwrapped_bodies_are_never_double_wrapped(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.post(f"{REST}/incidents").respond(201, json={"incident": {"id": "P1"}})
    incident = {
        "type": "incident",
        "title": "t",
        "service": {"id": "S", "type": "service_reference"},
    }
    await run("createIncident", {"incident": incident})
    await run("createIncident", {"incident": {"incident": incident}})
    await run("createIncident", {"incident": json.dumps({"incident": incident})})
    bodies = [json.loads(c.request.content) for c in route.calls]
    assert bodies == [{"incident": incident}] * 3


async def test_single_object_for_an_array_body_is_listed(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.put(f"{REST}/incidents").respond(json={"incidents": []})
    one_incident = {"id": "P1", "type": "incident_reference", "status": "resolved"}
    await run("updateIncidents", {"incidents": one_incident})
    assert json.loads(route.calls.last.request.content) == {"incidents": [one_incident]}


async def test_include_and_status_lists_repeat_the_parameter(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.get(f"{REST}/incidents/P1").respond(json={"incident": {"id": "P1"}})
    await run("getIncident", {"id": "P1", "include": ["users", "teams"]})
    await run("getIncident", {"id": "P1", "include": "users"})
    queries = [list(c.request.url.params.multi_items()) for c in route.calls]
    assert queries == [[("include[]", "users"), ("include[]", "teams")], [("include[]", "users")]]


@pytest.mark.no_spec  # openapi-core reads the escaped "/" as a path separator
async def test_path_values_are_escaped(pd: respx.MockRouter, run: Callable[..., Any]) -> None:
    route = pd.get(f"{REST}/incidents/a%2Fb%3Fc").respond(json={"incident": {}})
    await run("getIncident", {"id": "a/b?c"})
    assert route.called


async def test_render_template_body_has_the_documented_shape(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.post(f"{REST}/templates/T1/render").respond(json={"templated_fields": {}})
    await run("renderTemplate", {"id": "T1", "incidentId": "P1"})
    assert json.loads(route.calls.last.request.content) == {"incident_id": "P1"}
