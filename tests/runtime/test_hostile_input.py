"""Whatever a client sends, the API and intake answer 4xx naming what is wrong, store
nothing, and keep answering for what was stored before (SQLite and PostgreSQL).

The measured cases come first, one by one; then hypothesis sends every admin route
and intake bodies of its own making (hostile tokens spliced into valid documents,
random bytes, wrong types in every field) and checks that none is answered 5xx and
that every listing still reads.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.triggers.signature import sign
from tests.component.test_documents import billion_laughs
from tests.support.runtime import EVENT, FLOW, REST, deploy_acme, drain, secret_for

CONNECTION = {
    "name": "fuzzed",
    "type": "pagerduty-api-key",
    "config": {"apiKey": "u+fuzz-key-000", "from": "a@example.com"},
}
INSTANCE = {"name": "fuzzed", "connection": "ops", "flows": [FLOW]}
PATH = "/webhooks/acme/on-incident"
# Raw JSON text that Python's json module reads but no other reader should store.
HOSTILE_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "9" * 5000,
    "18446744073709551616",
    '"\\ud800"',
    "[" * 2000 + "]" * 2000,
    "[" * 150 + "]" * 150,
    '{"a": ' * 120 + "1" + "}" * 120,
]


def everything_still_reads(api: TestClient) -> None:
    """What was stored before is intact: every listing answers, and acme is as deployed."""
    for path in ("/api/instances", "/api/connections", "/api/executions", "/api/component"):
        answer = api.get(path)
        assert answer.status_code == 200, (path, answer.text)
    acme = api.get("/api/instances/acme")
    assert acme.status_code == 200 and acme.json()["flows"][0]["name"] == FLOW["name"]


@pytest.fixture
def acme(api: TestClient) -> TestClient:
    deploy_acme(api)
    return api


@pytest.fixture
def fuzzed(acme: TestClient, pd: respx.MockRouter) -> TestClient:
    """acme, with whatever a fuzzed test run asks PagerDuty for "not found", as PagerDuty
    would say."""
    pd.route(url__startswith=REST).respond(404, json={"error": {"message": "Not Found"}})
    return acme


def splice(document: dict[str, Any], path: list[str | int], token: str) -> bytes:
    """``document`` as JSON text with the value at ``path`` replaced by raw ``token``."""
    marker = "\u2603HOSTILE\u2603"
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = marker
    return json.dumps(copy).replace(json.dumps(marker), token).encode()


MEASURED: list[tuple[str, str, bytes, str, str]] = [
    # (method, path, body, content type, what the 400 names)
    (
        "POST",
        "/api/instances",
        splice(INSTANCE, ["flows", 0, "steps", 0, "inputs", "id"], "NaN"),
        "application/json",
        "NaN is not a JSON number",
    ),
    (
        "POST",
        "/api/instances",
        splice(INSTANCE, ["flows", 0, "steps", 0, "inputs", "id"], "Infinity"),
        "application/json",
        "Infinity is not a JSON number",
    ),
    (
        "POST",
        "/api/instances",
        b"name: fuzzed\nconnection: ops\nconfig: {since: 2026-12-04}\nflows: []",
        "application/yaml",
        "flows: List should have at least 1 item",
    ),
    (
        "POST",
        "/api/instances",
        b"name: fuzzed\nconfig: {photo: !!binary aGVsbG8=}",
        "application/yaml",
        "binary values are not JSON values",
    ),
    (
        "POST",
        "/api/instances",
        b"name: fuzzed\nconfig: {tags: !!set {a, b}}",
        "application/yaml",
        "set values are not JSON values",
    ),
    (
        "POST",
        "/api/instances",
        b"name: fuzzed\nconfig: {ratio: .nan}",
        "application/yaml",
        "the number at config.ratio is nan",
    ),
    (
        "POST",
        "/api/instances",
        billion_laughs().encode(),
        "application/yaml",
        "more than 100,000 values",
    ),
    ("POST", "/api/instances", b'{"name": "\xff"}', "application/json", "not UTF-8 text"),
    (
        "POST",
        "/api/instances",
        b"[" * 10_000 + b"]" * 10_000,
        "application/json",
        "nested deeper than 100 levels",
    ),
    (
        "POST",
        "/api/instances",
        b'{"name": ' + b"7" * 5000 + b"}",
        "application/json",
        "beyond 64 bits",
    ),
    (
        "POST",
        "/api/instances",
        json.dumps({**INSTANCE, "config": "text"}).encode(),
        "application/json",
        "config: Input should be a valid dictionary",
    ),
    (
        "POST",
        "/api/connections",
        json.dumps({**CONNECTION, "config": "text"}).encode(),
        "application/json",
        "config: Input should be a valid dictionary",
    ),
    (
        "PUT",
        "/api/connections/ops",
        b'{"config": "text"}',
        "application/json",
        "config: Input should be a valid dictionary",
    ),
    (
        "PUT",
        "/api/connections/ops",
        b'{"type": "pagerduty-oauth"}',
        "application/json",
        "input 'type': cannot change",
    ),
    (
        "POST",
        "/api/test-runs",
        b'{"action": "getIncident", "inputs": []}',
        "application/json",
        "inputs: Input should be a valid dictionary",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "named"),
    MEASURED,
    ids=[f"{m[0]} {m[1]} {m[4][:40]}" for m in MEASURED],
)
def test_each_measured_bad_input_is_a_400_naming_it_and_stores_nothing(
    acme: TestClient, method: str, path: str, body: bytes, content_type: str, named: str
) -> None:
    before = acme.get("/api/connections/ops").json()
    answer = acme.request(method, path, content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 400, answer.text
    assert named in answer.json()["error"]["message"]
    assert acme.get("/api/instances/fuzzed").status_code == 404
    assert acme.get("/api/connections/fuzzed").status_code == 404
    assert acme.get("/api/connections/ops").json() == before
    everything_still_reads(acme)


def test_a_yaml_body_sent_as_json_is_told_its_content_type(acme: TestClient) -> None:
    yaml_text = "name: fuzzed\nconnection: ops\nflows: []\n"
    answer = acme.post("/api/instances", content=yaml_text)
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert message.startswith("request body: not JSON: Expecting value (line 1, column 1)")
    assert message.endswith("it reads as YAML: send it with Content-Type: application/yaml")


def test_an_api_body_past_its_bound_is_refused_unread(acme: TestClient) -> None:
    answer = acme.post("/api/instances", content=b" " * (1024 * 1024 + 1))
    assert answer.status_code == 413 and "over 1024 KB" in answer.text


def signed(api: TestClient, subs: FakeSubscriptions, body: bytes, webhook_id: str) -> Any:
    headers = {
        "X-Webhook-Id": webhook_id,
        "X-PagerDuty-Signature": sign(body, secret_for(subs, PATH)),
        "Content-Type": "application/json",
    }
    return api.post(PATH, content=body, headers=headers)


@pytest.mark.parametrize("token", HOSTILE_TOKENS, ids=lambda t: t[:20])
def test_a_signed_delivery_that_is_not_plain_json_is_a_400_and_recorded_nowhere(
    acme: TestClient, subs: FakeSubscriptions, token: str
) -> None:
    body = splice(EVENT, ["event", "data", "title"], token)
    answer = signed(acme, subs, body, "hostile")
    assert answer.status_code == 400, answer.text
    assert "incidentsTrigger: input 'body'" in answer.json()["error"]["message"]
    assert acme.get("/api/executions").json() == []
    everything_still_reads(acme)


# Hypothesis: documents of every shape, and valid documents with one value replaced.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=12,
)


def paths_of(value: Any, prefix: list[str | int] | None = None) -> list[list[str | int]]:
    """Every path to a value inside ``value``."""
    prefix = prefix or []
    found: list[list[str | int]] = []
    if isinstance(value, dict | list):
        for key, inner in value.items() if isinstance(value, dict) else enumerate(value):
            found.append([*prefix, key])
            found.extend(paths_of(inner, [*prefix, key]))
    return found


# Drawn by index, so a failing example's description stays short.
hostile_tokens = st.sampled_from(range(len(HOSTILE_TOKENS))).map(HOSTILE_TOKENS.__getitem__)


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, Any]) -> bytes:
    """``document`` with one value replaced by a random value or a hostile token."""
    path = draw(st.sampled_from(paths_of(document)))
    if draw(st.booleans()):
        return splice(document, path, draw(hostile_tokens))
    replacement = draw(json_values)
    return splice(document, path, json.dumps(replacement, allow_nan=True))


ROUTES = [
    ("POST", "/api/instances", INSTANCE),
    ("PUT", "/api/instances/acme", {"connection": "ops", "flows": [FLOW]}),
    ("POST", "/api/connections", CONNECTION),
    ("PUT", "/api/connections/ops", {"config": {"from": "b@example.com"}}),
    (
        "POST",
        "/api/test-runs",
        {"action": "getIncident", "connection": "ops", "inputs": {"id": "Q1P5"}},
    ),
    ("POST", "/api/instances/acme/flows/on-incident/test", EVENT),
]

bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    hostile_tokens.map(str.encode),
)


requests = st.sampled_from(ROUTES).flatmap(
    lambda route: st.tuples(
        st.just(route[:2]),
        st.one_of(mutated(route[2]), bodies),
        st.sampled_from(["application/json", "application/yaml", ""]),
    )
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sent=requests)
@pytest.mark.no_spec  # fuzzed test runs ask PagerDuty for what no spec describes
def test_no_admin_route_answers_5xx_whatever_it_is_sent(
    fuzzed: TestClient, sent: tuple[tuple[str, str], bytes, str]
) -> None:
    (method, path), body, content_type = sent
    headers = {"Content-Type": content_type} if content_type else {}
    answer = fuzzed.request(method, path, content=body, headers=headers)
    # 502 relays PagerDuty's own refusal (a fuzzed incident id it does not know): an
    # answer, named as PagerDuty's; any other 5xx would be the runtime's fault.
    relayed = answer.status_code == 502 and answer.json()["error"]["type"] == "PagerDutyError"
    assert answer.status_code < 500 or relayed, (method, path, body[:300], answer.text)
    if answer.status_code >= 400:
        error = answer.json()["error"]
        assert error["message"] and "Traceback" not in error["message"]
    everything_still_reads(fuzzed)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=st.one_of(mutated(EVENT), bodies))
@pytest.mark.no_spec  # accepted deliveries run, and ask PagerDuty for fuzzed incident ids
def test_no_signed_delivery_is_answered_5xx_whatever_its_body(
    fuzzed: TestClient, subs: FakeSubscriptions, body: bytes
) -> None:
    webhook_id = f"fuzz-{len(fuzzed.get('/api/executions?limit=1000').json())}"
    answer = signed(fuzzed, subs, body, webhook_id)
    assert answer.status_code in (200, 202, 400), (body[:300], answer.text)
    everything_still_reads(fuzzed)


@pytest.mark.parametrize(
    "query",
    [
        "limit=NaN",
        "limit=9" + "9" * 5000,
        "since=not-a-time",
        "since=9999-99-99",
        "hours=x",
        "status=%ff",
        "limit=-5",
        "error=%00",
    ],
)
def test_bad_query_parameters_are_a_400_or_ignored_never_a_500(
    acme: TestClient, query: str
) -> None:
    for path in ("/api/executions", "/api/instances/acme/flows/on-incident/stats"):
        answer = acme.get(f"{path}?{query}")
        assert answer.status_code in (200, 400), (path, query, answer.text)


def test_the_ids_and_names_in_paths_are_never_a_500(acme: TestClient) -> None:
    for raw in ("%ff%fe", "a" * 5000, "..%2F..%2Fetc", "\u2603"):
        for path in ("/api/instances/{}", "/api/connections/{}", "/api/executions/{}"):
            answer = acme.get(path.format(raw))
            assert answer.status_code == 404, (path, raw, answer.text)
    for url in ("/api/instances/a%00b", "/api/executions?status=%00", "/webhooks/%00/x"):
        answer = acme.request("POST" if url.startswith("/webhooks") else "GET", url)
        assert answer.status_code == 400, (url, answer.text)
        assert answer.json()["error"]["message"] == "the URL holds a NUL character (%00)"
    answer = acme.post("/webhooks/%ff/%fe", content=b"{}")
    assert answer.status_code == 404 and "no flow" in answer.text


def test_a_nul_character_escaped_in_a_delivery_is_kept_and_runs(
    acme: TestClient, subs: FakeSubscriptions, pd: respx.MockRouter
) -> None:
    """JSON may escape a NUL (``\\u0000``); PostgreSQL keeps it in a ``json`` column, and
    the run sees it as it was sent."""
    pd.get(f"{REST}/incidents/Q1P5").respond(json={"incident": {"id": "Q1P5", "title": "t"}})
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    body = splice(EVENT, ["event", "data", "title"], '"fire\\u0000fire"')
    answer = signed(acme, subs, body, "nul")
    assert answer.status_code == 202, answer.text
    drain(acme)
    record = acme.get(f"/api/executions/{answer.json()['execution']}").json()
    assert record["status"] == "succeeded", (record["error"], record["steps"])
    assert record["trigger"]["event"]["data"]["title"] == "fire\x00fire"
