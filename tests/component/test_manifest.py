"""The manifest: parity with the reference, schema drift, fail-fast loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pagerduty_connector.component.errors import ManifestError
from pagerduty_connector.component.manifest import (
    SCHEMA_FILE,
    Manifest,
    load_manifest,
    packaged,
    parse_manifest,
    render_schema,
    resolve_refs,
)
from tests.support import DATA
from tests.support.manifests import action_of, raw_manifest

REFERENCE = DATA / "reference"
# Reference examples that are not valid values (JavaScript, not JSON) and were made valid.
FIXED_EXAMPLES = {("rawRequest", "formData"), ("rawRequest", "fileData"), ("rawRequest", "headers")}
# Reference examples we replaced: a URL from another API.
REPLACED_EXAMPLES = {("rawRequest", "url")}


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return json.loads((REFERENCE / "prismatic-pagerduty-interface.json").read_text())


# Actions beyond the reference's 43, from PagerDuty's OpenAPI document (issue 22).
BEYOND_REFERENCE = {
    "mergeIncidents",
    "snoozeIncident",
    "createIncidentResponderRequest",
    "createIncidentStatusUpdate",
    "listOnCalls",
    "listEscalationPolicies",
    "getEscalationPolicy",
    "listSchedules",
    "getSchedule",
    "listScheduleOverrides",
    "createScheduleOverrides",
}


def test_counts(manifest: Manifest) -> None:
    assert (len(manifest.actions), len(manifest.dataSources), len(manifest.connections)) == (
        43 + len(BEYOND_REFERENCE),
        4,
        2,
    )
    events = {t.key: [e.value for e in t.events] for t in manifest.triggers}
    assert {k: len(v) for k, v in events.items()} == {"incidentsTrigger": 26, "serviceTrigger": 4}
    for trigger in manifest.triggers:
        selectable = trigger.input("events")
        assert selectable is not None and selectable.model == events[trigger.key]


def test_action_and_input_keys_match_the_reference(
    manifest: Manifest, reference: dict[str, Any]
) -> None:
    ours = {a.key: a for a in manifest.actions}
    # The reference's 43 keys, unchanged, and the ones added beyond them.
    assert sorted(ours) == sorted([*(a["key"] for a in reference["actions"]), *BEYOND_REFERENCE])
    for ref_action in reference["actions"]:
        action = ours[ref_action["key"]]
        assert action.label == ref_action["label"]
        for ref_input in ref_action["inputs"]:
            ours_input = action.input(ref_input["key"])
            assert ours_input is not None, (action.key, ref_input["key"])
            assert ours_input.label == ref_input["label"] or action.key == "updateIncidentAlert"
            assert ours_input.required == ref_input["required"], (action.key, ours_input.key)
            pair = (action.key, ref_input["key"])
            if ref_input["example"] is not None and pair not in FIXED_EXAMPLES | REPLACED_EXAMPLES:
                assert ours_input.example == ref_input["example"], pair


def test_reference_triggers_events_data_sources_and_connections_are_kept(
    manifest: Manifest, reference: dict[str, Any]
) -> None:
    for ref_trigger in reference["triggers"]:
        if ref_trigger["key"] == "pollChangesTrigger":
            continue  # polling trigger: not part of this product's webhook runtime
        ours = next(t for t in manifest.triggers if t.key == ref_trigger["key"])
        assert {i["key"] for i in ref_trigger["inputs"]} <= {i.key for i in ours.inputs}
    reference_events = reference["constants"]["incidentEvents"] + [
        e["value"] for e in reference["constants"]["serviceEvents"]
    ]
    ours_events = {e.value for t in manifest.triggers for e in t.events}
    assert {e if isinstance(e, str) else e["value"] for e in reference_events} <= ours_events
    assert {d["key"] for d in reference["data_sources"]} == {d.key for d in manifest.dataSources}
    for ref_conn in reference["connections"]:
        ours_conn = next(c for c in manifest.connections if c.key == ref_conn["key"])
        for ref_input in ref_conn["inputs"]:
            ours_input = ours_conn.input(ref_input["key"])
            assert ours_input is not None and ours_input.default == ref_input["default"]


def test_reference_fixes_are_declared(manifest: Manifest) -> None:
    get_incident = next(a for a in manifest.actions if a.key == "getIncident")
    include = get_incident.input("include")
    assert include is not None and include.collection == "valuelist"
    alerts = next(a for a in manifest.actions if a.key == "listIncidentAlerts")
    statuses = alerts.input("statuses")
    assert statuses is not None and statuses.model == ["triggered", "resolved"]
    writes = [a for a in manifest.actions if a.request and a.request.method != "GET"]
    assert all(a.input("from") is not None for a in writes)


def test_committed_json_schema_matches_the_models() -> None:
    assert packaged(SCHEMA_FILE).read_text(encoding="utf-8") == render_schema(), (
        "manifest.schema.json drifted from component/manifest.py: run `pdc schema`"
    )


def test_manifest_validates_against_its_json_schema() -> None:
    jsonschema.validate(resolve_refs(raw_manifest()), json.loads(packaged(SCHEMA_FILE).read_text()))


def _mutated(change: Any) -> dict[str, Any]:
    data = raw_manifest()
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: action_of(d, "getIncident")["inputs"].append({"ref": "nope"}),
            "action 'getIncident' input #4: unknown inputDefinition 'nope'",
        ),
        (
            lambda d: action_of(d, "getIncident")["request"].update(path="/incidents/{incidentId}"),
            "getIncident: path placeholder '{incidentId}' has no input 'incidentId'",
        ),
        (
            lambda d: action_of(d, "listIncidents")["request"]["query"].update(colour="colour"),
            "listIncidents: query maps input 'colour', which is not declared",
        ),
        (
            lambda d: action_of(d, "getIncident")["request"].update(method="FETCH"),
            "actions[getIncident].request.method",
        ),
        (
            lambda d: d["actions"].append(dict(action_of(d, "getIncident"))),
            "key 'getIncident' is declared twice (action, action)",
        ),
        (
            lambda d: d["inputDefinitions"]["incidentId"].update(dataSource="selectNothing"),
            "input 'id' names data source 'selectNothing', which is not a declared picklist",
        ),
    ],
    ids=[
        "unknown-ref",
        "unbound-placeholder",
        "undeclared-query",
        "bad-method",
        "duplicate-key",
        "unknown-data-source",
    ],
)
def test_invalid_manifests_fail_naming_the_key(change: Any, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(_mutated(change))
    assert message in str(info.value)


def test_unreadable_manifest_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.yaml"
    bad.write_text("key: [unclosed")
    with pytest.raises(ManifestError, match="is not valid YAML"):
        load_manifest(bad)
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "missing.yaml")
