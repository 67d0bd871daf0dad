"""The web console (server-rendered pages under /console): sign-in and its cookie, CSRF,
the execution log and page with Retry, the YAML deploy editor with errors at their line,
instances, connections and the component browser's Try it; no page shows a secret."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import respx
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.app import create_app
from pagerduty_connector.runtime.console.editor import locate_error
from pagerduty_connector.runtime.console.session import COOKIE
from pagerduty_connector.runtime.console.views import EXAMPLE_INSTANCE
from pagerduty_connector.runtime.settings import RuntimeSettings
from tests.conftest import REST
from tests.support.runtime import (
    ADMIN,
    API_KEY,
    AUTH,
    INCIDENT,
    answer_incident,
    deliver,
    drain,
    make_connection,
)

PATH = "/webhooks/acme-oncall/on-incident"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the console reads and writes through the API, which the API tests
    run on both databases."""
    return f"sqlite+aiosqlite:///{tmp_path / 'pdc.db'}"


@pytest.fixture
def console(
    runtime_settings: RuntimeSettings, pd: respx.MockRouter, subs: FakeSubscriptions
) -> Iterator[TestClient]:
    """The runtime app seen by a browser: https (the session cookie is Secure), no token."""
    app = create_app(runtime_settings)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        yield client


class as_admin:
    """The same client (and event loop) calling the API with the admin token."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.client.get(url, headers=AUTH, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.client.post(url, headers={**AUTH, **kwargs.pop("headers", {})}, **kwargs)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def sign_in_with(console: TestClient, token: str) -> Any:
    """Post ``token`` through the sign-in form, as a browser would (the form's CSRF
    token with it); the answer."""
    form = csrf_of(console.get("/console/login").text)
    return console.post("/console/login", data={"token": token, "csrf": form})


def signed_in(console: TestClient) -> str:
    """Sign in; the CSRF token of the session."""
    answer = sign_in_with(console, ADMIN)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/executions"
    return csrf_of(console.get("/console/executions").text)


def with_example_deployed(console: TestClient) -> str:
    """Sign in, create the connection ``ops`` and deploy the editor's example from the
    editor; the session's CSRF token."""
    csrf = signed_in(console)
    make_connection(as_admin(console))
    console.post("/console/instances/new", data={"yaml": EXAMPLE_INSTANCE, "csrf": csrf})
    return csrf


def assert_no_secret(html: str) -> None:
    for secret in (API_KEY, ADMIN):
        assert secret not in html


def test_pages_need_a_session_that_only_the_admin_token_starts(console: TestClient) -> None:
    assert console.get("/console/executions").headers["location"] == "/console/login"
    polled = console.get("/console/executions/rows", headers={"HX-Request": "true"})
    assert polled.headers["HX-Redirect"] == "/console/login"
    assert console.get("/console/static/console.css").status_code == 200  # open
    wrong = sign_in_with(console, "guess")
    assert wrong.status_code == 401 and "not the admin token" in wrong.text
    assert COOKIE not in console.cookies
    answer = sign_in_with(console, ADMIN)
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    assert "Path=/console" in cookie and ADMIN not in cookie
    assert console.get("/console/executions").status_code == 200
    # A forged cookie is refused like none.
    forged = answer.cookies[COOKIE][:-2] + "xx"
    console.cookies.clear()
    console.cookies.set(COOKIE, forged, domain="testserver.local", path="/console")
    assert console.get("/console/executions").status_code == 303


def test_forms_without_the_sessions_csrf_token_change_nothing(
    console: TestClient, pd: respx.MockRouter
) -> None:
    csrf = signed_in(console)
    make_connection(as_admin(console))
    refused = console.post("/console/instances/new", data={"yaml": EXAMPLE_INSTANCE})
    assert refused.status_code == 403
    refused = console.post("/console/instances/new", data={"yaml": EXAMPLE_INSTANCE, "csrf": "x"})
    assert refused.status_code == 403
    assert console.get("/api/instances", headers=AUTH).json() == []
    deployed = console.post("/console/instances/new", data={"yaml": EXAMPLE_INSTANCE, "csrf": csrf})
    assert deployed.status_code == 200 and "Deployed acme-oncall" in deployed.text
    assert [i["name"] for i in console.get("/api/instances", headers=AUTH).json()] == [
        "acme-oncall"
    ]


def test_the_editor_shows_a_deploy_error_at_the_line_it_names(
    console: TestClient, pd: respx.MockRouter
) -> None:
    csrf = signed_in(console)
    make_connection(as_admin(console))
    broken = EXAMPLE_INSTANCE.replace("action: createIncidentNote", "action: createIncidentNot")
    answer = console.post("/console/instances/new", data={"yaml": broken, "csrf": csrf})
    assert answer.status_code == 200  # the editor again, with the problem at its line
    line = broken.splitlines().index("        action: createIncidentNot") + 1
    assert "flow &#39;on-incident&#39;, step &#39;note&#39;, input &#39;action&#39;" in answer.text
    assert f"(line {line})" in answer.text
    flagged = re.search(r'id="flagged-line"[^>]*>(\d+)<', answer.text)
    assert flagged and int(flagged.group(1)) == line
    assert "createIncidentNot" in answer.text  # the text is kept for fixing
    # A misspelt templated input is named at its own line, not taken for a missing one.
    misspelt = EXAMPLE_INSTANCE.replace(
        '          note: "Investigating', '          nte: "Investigating'
    )
    answer = console.post("/console/instances/new", data={"yaml": misspelt, "csrf": csrf})
    line = next(n for n, text in enumerate(misspelt.splitlines(), 1) if "nte:" in text)
    assert "input &#39;nte&#39;" in answer.text and "did you mean &#39;note&#39;" in answer.text
    flagged = re.search(r'id="flagged-line"[^>]*>(\d+)<', answer.text)
    assert flagged and int(flagged.group(1)) == line
    assert console.get("/api/instances", headers=AUTH).json() == []  # nothing deployed
    not_yaml = console.post(
        "/console/instances/new", data={"yaml": "name: x\nflows: [\n  a: b", "csrf": csrf}
    )
    assert "Not valid YAML: line 4, column 1: did not find expected" in not_yaml.text
    assert "unicode string" not in not_yaml.text
    flagged = re.search(r'id="flagged-line"[^>]*>(\d+)<', not_yaml.text)
    assert flagged and int(flagged.group(1)) == 3  # the last line: the list is not closed
    # What JSON cannot say is refused here as in the API, before anything is sent.
    dated = console.post(
        "/console/instances/new", data={"yaml": "name: x\nphoto: !!binary aGk=", "csrf": csrf}
    )
    assert "Not valid YAML: line 2, column 8: binary values are not JSON values" in dated.text


def test_locate_error_walks_to_the_flow_step_and_input() -> None:
    text = EXAMPLE_INSTANCE
    lines = text.splitlines()
    at = locate_error(text, {"step": "on-incident.note (createIncidentNote)", "input": "note"})
    assert lines[at["line"]].strip().startswith("note:")
    at = locate_error(text, {"step": "on-incident.trigger (incidentsTrigger)", "input": "events"})
    assert lines[at["line"]].strip().startswith("events:")
    assert at["where"] == "flow 'on-incident', trigger, input 'events'"
    at = locate_error(text, {"step": "on-incident", "input": "trigger.type"})
    assert lines[at["line"]].strip() == "type: incidentsTrigger"
    assert locate_error(text, {"step": "elsewhere", "input": None})["line"] is None


def test_the_execution_log_and_page_with_retry_and_no_secret(
    console: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    csrf = signed_in(console)
    admin = as_admin(console)
    make_connection(admin)
    console.post("/console/instances/new", data={"yaml": EXAMPLE_INSTANCE, "csrf": csrf})
    answer_incident(pd)
    note = pd.post(f"{REST}/incidents/Q1P5/notes").respond(
        400, json={"error": {"message": "Invalid Input Provided", "code": 2001}}
    )
    delivered = deliver(admin, subs, PATH, "console-1")
    assert delivered.status_code == 202
    drain(console)
    execution = delivered.json()["execution"]

    listed = console.get("/console/executions", params={"status": "failed"})
    assert execution in listed.text and 'hx-trigger="every 2s"' in listed.text
    assert execution not in console.get("/console/executions?status=succeeded").text
    assert execution in console.get("/console/executions?error=Invalid+Input").text
    assert execution not in console.get("/console/executions?error=nothing-like-it").text
    rows = console.get("/console/executions/rows?instance=acme-oncall")
    assert "<html" not in rows.text and f'data-id="{execution}"' in rows.text

    shown = console.get(f"/console/executions/{execution}")
    assert shown.status_code == 200 and "Invalid Input Provided" in shown.text
    assert "Retry from where it stopped" in shown.text and "createIncidentNote" in shown.text
    assert "Retry from there on the current flow" in shown.text
    assert "Investigating: Server is on fire" in shown.text  # the note's input, templated
    assert_no_secret(shown.text)

    note.respond(201, json={"note": {"id": "N1"}})
    retried = console.post(f"/console/executions/{execution}/retry", data={"csrf": csrf})
    assert retried.status_code == 303
    new_page = retried.headers["location"]
    drain(console)
    retry = console.get(new_page)
    assert "succeeded" in retry.text and f"/console/executions/{execution}" in retry.text
    assert "on the deployed flow" in retry.text
    assert (
        console.post(f"/console/executions/{execution}/nope", data={"csrf": csrf}).status_code
        == 404
    )
    stats = console.get("/api/instances/acme-oncall/flows/on-incident/stats", headers=AUTH).json()
    assert len(stats["hours"]) == 24
    assert {k: v for k, v in stats["hours"][-1].items() if k != "hour"} == {
        "failed": 1,
        "succeeded": 1,
    }
    steps = {s["name"]: s for s in stats["steps"]}
    assert steps["incident"]["count"] == 1 and steps["note"]["count"] == 1  # not the retry
    assert steps["note"]["p50"] <= steps["note"]["p95"] <= steps["note"]["max"]
    chart = console.get("/console/instances/acme-oncall").text
    assert "Last 24 hours: 2 executions" in chart and "1 succeeded, 1 failed" in chart
    assert "Step durations (ms)" in chart
    on_current = console.post(
        f"/console/executions/{execution}/retry", data={"csrf": csrf, "flow": "current"}
    )
    assert on_current.status_code == 303
    drain(console)
    assert "on the current flow" in console.get(on_current.headers["location"]).text
    for page in (
        "/console/executions",
        "/console/instances",
        "/console/instances/acme-oncall",
        "/console/connections",
        "/console/component",
        "/console/component/getIncident",
    ):
        html = console.get(page)
        assert html.status_code == 200, page
        assert_no_secret(html.text)


def test_instances_enable_disable_and_teardown_with_confirmation(
    console: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    csrf = with_example_deployed(console)
    page = console.get("/console/instances/acme-oncall").text
    (held,) = subs.subscriptions
    assert held in page  # the subscription's PagerDuty id
    scopes = console.get("/console/connections").text
    assert "<code>incidents.write</code>" in scopes
    assert "acme-oncall: flow &#39;on-incident&#39; step &#39;note&#39;" in scopes
    for secret in subs.secrets.values():
        assert secret not in page
    assert (
        "incident.triggered" in page
        and "https://pdc.example.com/webhooks/acme-oncall/on-incident" in page
    )
    assert (
        console.post("/console/instances/acme-oncall/disable", data={"csrf": csrf}).status_code
        == 303
    )
    assert console.get("/api/instances/acme-oncall", headers=AUTH).json()["enabled"] is False
    unconfirmed = console.post(
        "/console/instances/acme-oncall/teardown", data={"csrf": csrf, "confirm": "x"}
    )
    assert unconfirmed.status_code == 400 and subs.subscriptions
    torn = console.post(
        "/console/instances/acme-oncall/teardown", data={"csrf": csrf, "confirm": "acme-oncall"}
    )
    assert torn.status_code == 303 and not subs.subscriptions
    assert console.get("/api/instances", headers=AUTH).json() == []


def test_try_an_action_and_rotate_a_key(console: TestClient, pd: respx.MockRouter) -> None:
    csrf = signed_in(console)
    form = console.get("/console/connections").text
    assert 'name="in.apiKey" type="password"' in form and 'name="in.region"' in form
    bad = {"csrf": csrf, "type": "pagerduty-api-key", "name": "ops", "in.region": "mars"}
    refused = console.post("/console/connections/new", data={**bad, "in.apiKey": API_KEY})
    assert 'id="connection-error"' in refused.text and "region" in refused.text
    assert_no_secret(refused.text)
    good = {**bad, "in.region": "us", "in.apiKey": API_KEY, "in.from": "oncall@example.com"}
    created = console.post("/console/connections/new", data=good)
    assert created.status_code == 303
    assert "ops: created" in console.get(created.headers["location"]).text
    pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    listing = console.get("/console/component").text
    assert 'id="step-kinds"' in listing and "<code>forEach</code>" in listing
    assert "<code>schedule</code>" in listing
    form = console.get("/console/component/getIncident").text
    assert 'id="output-example"' in form and "PT4KHLK" in form
    assert 'name="in.id"' in form and "<option>ops</option>" in form
    assert "Example: <code>PT4KHLK</code>" in form  # the reference's example for the input
    assert 'hx-get="/console/choices/selectIncident"' in form  # suggestions from a picklist
    pd.get(f"{REST}/incidents").respond(
        json={
            "incidents": [{"id": "PT4KHLK", "title": "The server is on fire."}],
            "limit": 100,
            "offset": 0,
            "more": False,
        }
    )
    offered = console.get("/console/choices/selectIncident", params={"connection": "ops"})
    assert '<option value="PT4KHLK">The server is on fire.</option>' in offered.text
    nothing = console.get("/console/choices/selectIncident", params={"connection": "nope"})
    assert "<option" not in nothing.text
    tried = console.post(
        "/console/component/getIncident", data={"csrf": csrf, "connection": "ops", "in.id": "Q1P5"}
    )
    assert tried.status_code == 200 and "Server is on fire" in tried.text
    missing = console.post(
        "/console/component/getIncident", data={"csrf": csrf, "connection": "ops"}
    )
    assert "id" in missing.text and 'id="try-error"' in missing.text
    rotated = console.post(
        "/console/connections/ops/key", data={"csrf": csrf, "apiKey": "u+NEW-key-9"}
    )
    assert rotated.status_code == 303
    page = console.get(rotated.headers["location"]).text
    assert "ops: key rotated" in page and "u+NEW-key-9" not in page


def test_a_flow_runs_with_a_sample_event_from_its_instance_page(
    console: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    csrf = with_example_deployed(console)
    answer_incident(pd)
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    page = console.get("/console/instances/acme-oncall").text
    sample = re.search(r'name="event"[^>]*>([^<]+)</textarea>', page)
    assert sample and "incident.triggered" in sample.group(1)
    event = sample.group(1).replace("&#34;", '"').replace("&quot;", '"')
    ran = console.post(
        "/console/instances/acme-oncall/flows/on-incident/test",
        data={"csrf": csrf, "event": event},
    )
    assert ran.status_code == 303 and ran.headers["location"].startswith("/console/executions/")
    drain(console)
    shown = console.get(ran.headers["location"]).text
    assert 'id="execution-status">succeeded' in shown and "Investigating:" in shown
    bad = console.post(
        "/console/instances/acme-oncall/flows/on-incident/test",
        data={"csrf": csrf, "event": "{}"},
    )
    assert bad.status_code == 400 and "V3 webhook event" in bad.text


def test_scopes_needed_names_each_place_a_scope_is_used() -> None:
    from pagerduty_connector.runtime.console.views import scopes_needed

    spec = {
        "actions": [
            {"key": "getIncident", "scope": "incidents.read"},
            {"key": "createIncidentNote", "scope": "incidents.write"},
        ],
        "triggers": [{"key": "incidentsTrigger", "scope": "webhook_subscriptions.write"}],
    }
    flow = {
        "name": "f",
        "trigger": {"type": "incidentsTrigger"},
        "steps": [{"name": "a", "action": "getIncident"}, {"name": "b", "action": "nope"}],
    }
    needs = scopes_needed(spec, [{"name": "i", "connection": "C1", "flows": [flow]}])
    assert needs == {
        "C1": {
            "webhook_subscriptions.write": ["i: flow 'f' trigger"],
            "incidents.read": ["i: flow 'f' step 'a'"],
        }
    }


def test_every_page_and_answer_carries_the_security_headers(
    console: TestClient, subs: FakeSubscriptions
) -> None:
    """Measured before: no Content-Security-Policy, framing or nosniff header anywhere."""
    csrf = signed_in(console)
    make_connection(as_admin(console))
    answers = {
        "sign-in": console.get("/console/login"),
        "a page": console.get("/console/executions"),
        "an error page": console.post("/console/executions/nope/retry", data={"csrf": csrf}),
        "a static file": console.get("/console/static/htmx.min.js"),
        "the API": as_admin(console).get("/api/connections"),
        "a consent page": console.get("/oauth/callback?state=unknown&code=x"),
        "the OpenAPI document": console.get("/openapi.json"),
    }
    for where, answer in answers.items():
        policy = answer.headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, where
        assert "default-src 'none'" in policy and "unsafe" not in policy, where
        assert answer.headers["x-frame-options"] == "DENY", where
        assert answer.headers["x-content-type-options"] == "nosniff", where
        assert answer.headers["referrer-policy"] == "no-referrer", where
    # Nothing on a page needs what the policy forbids: no inline script or style.
    for page in (answers["sign-in"].text, answers["a page"].text, answers["an error page"].text):
        assert "<script>" not in page and "javascript:" not in page
        assert " style=" not in page and "<style" not in page and " on" + "click=" not in page
    back = re.search(r'<a href="([^"]+)" id="back">', answers["an error page"].text)
    assert back and back.group(1) == "/console/executions/nope"


def test_wrong_tokens_are_throttled_per_client(console: TestClient) -> None:
    """Measured before: 300 wrong sign-ins in 0.4 s, none refused."""
    for _ in range(5):
        assert sign_in_with(console, "guess").status_code == 401
    throttled = sign_in_with(console, "guess")
    assert throttled.status_code == 429 and "Too many wrong tokens" in throttled.text
    assert 0 < int(throttled.headers["retry-after"]) <= 60
    # While throttled even the right token waits: guessing gains nothing by luck.
    assert sign_in_with(console, ADMIN).status_code == 429
    assert COOKIE not in console.cookies


def test_the_sign_in_form_needs_its_own_csrf_token(console: TestClient) -> None:
    """A page of another site cannot sign a browser in (to the attacker's session)."""
    no_form = console.post("/console/login", data={"token": ADMIN})
    assert no_form.status_code == 403 and "This form has expired" in no_form.text
    token = csrf_of(console.get("/console/login").text)
    other = TestClient(console.app, base_url="https://testserver", follow_redirects=False)
    forged = other.post("/console/login", data={"token": ADMIN, "csrf": token})  # no cookie
    assert forged.status_code == 403
    console.cookies.clear()  # the form's own cookie replaced by one the site never signed
    console.cookies.set("pdc_console_login", "forged", domain="testserver", path="/console/login")
    assert console.post("/console/login", data={"token": ADMIN, "csrf": token}).status_code == 403
    assert COOKIE not in console.cookies
    cookie = console.get("/console/login").headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console/login" in cookie


SCHEDULED_INSTANCE = """\
name: weekday
connection: ops
flows:
- name: morning
  trigger: {type: schedule, inputs: {cron: "0 9 * * 1-5", timezone: America/New_York}}
  steps:
  - name: note
    action: createIncidentNote
    inputs: {id: Q1P5, note: "Morning summary for {{ trigger.scheduledAt }}"}
"""


def test_a_scheduled_flow_shows_its_next_runs_and_runs_now_from_its_page(
    console: TestClient, pd: respx.MockRouter
) -> None:
    csrf = signed_in(console)
    make_connection(as_admin(console))
    deployed = console.post(
        "/console/instances/new", data={"yaml": SCHEDULED_INSTANCE, "csrf": csrf}
    )
    assert "Deployed weekday" in deployed.text, deployed.text
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    page = console.get("/console/instances/weekday").text
    runs = re.search(r'class="next-runs">(.*?)</dd>', page)
    # 09:00 New York time, and said to be (EST or EDT), each a machine-readable instant.
    assert (
        runs
        and len(
            re.findall(r'datetime="[^"]+T09:00:00-0[45]:00">[^<]* 09:00:00 E[SD]T<', runs.group(1))
        )
        == 3
    )
    assert "Webhook URL" not in page and 'name="event"' not in page
    ran = console.post("/console/instances/weekday/flows/morning/test", data={"csrf": csrf})
    assert ran.status_code == 303 and ran.headers["location"].startswith("/console/executions/")
    drain(console)
    shown = console.get(ran.headers["location"]).text
    assert 'id="execution-status">succeeded' in shown and "Morning summary for 20" in shown
    console.post("/console/instances/weekday/disable", data={"csrf": csrf})
    assert "none while disabled" in console.get("/console/instances/weekday").text


RECIPES = sorted((Path(__file__).resolve().parents[2] / "examples" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_each_recipe_deploys_from_the_console_editor(
    console: TestClient, subs: FakeSubscriptions, recipe: Path
) -> None:
    csrf = signed_in(console)
    make_connection(as_admin(console))
    slack = {
        "name": "slack-webhook",
        "type": "http-url",
        "config": {"url": "https://hooks.example.com/x"},
    }
    assert as_admin(console).post("/api/connections", json=slack).status_code == 201
    text = recipe.read_text()
    deployed = console.post("/console/instances/new", data={"yaml": text, "csrf": csrf})
    name = text.split("\nname: ", 1)[1].split()[0]
    assert f"Deployed {name}" in deployed.text, deployed.text


class Fields(HTMLParser):
    """Each form field of a page by its name: its tag and attributes, as a browser
    parses them (a quote left unescaped in an attribute would cut it short)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, list[tuple[str, dict[str, str | None]]]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("input", "textarea", "select") and found.get("name"):
            self.fields.setdefault(str(found["name"]), []).append((tag, found))


def fields_of(html: str) -> dict[str, list[tuple[str, dict[str, str | None]]]]:
    parser = Fields()
    parser.feed(html)
    return parser.fields


def test_try_it_has_a_widget_per_input_type_and_sends_typed_values(
    console: TestClient, pd: respx.MockRouter
) -> None:
    csrf = signed_in(console)
    make_connection(as_admin(console))
    fields = fields_of(console.get("/console/component/listIncidents").text)
    # A boolean: a hidden "false", then a checkbox that says "true" when ticked.
    assert [(t, a["type"], a["value"]) for t, a in fields["in.fetchAll"]] == [
        ("input", "hidden", "false"),
        ("input", "checkbox", "true"),
    ]
    ((tag, limit),) = fields["in.limit"]
    assert (tag, limit["type"], limit["min"], limit["placeholder"]) == (
        "input",
        "number",
        "1",
        "10",
    )
    ((tag, statuses),) = fields["in.statuses"]
    assert tag == "textarea" and str(statuses["placeholder"]).startswith("one per line")
    # JSON only where the input takes an object, its example whole in the placeholder.
    fields = fields_of(console.get("/console/component/createIncident").text)
    ((tag, body),) = fields["in.incident"]
    assert tag == "textarea" and str(body["placeholder"]).startswith('JSON, e.g. {"incident": {')
    assert str(body["placeholder"]).endswith("}}")
    listed = pd.get(f"{REST}/incidents").respond(
        json={"incidents": [], "limit": 5, "offset": 0, "more": False}
    )
    tried = console.post(
        "/console/component/listIncidents",
        data={
            "csrf": csrf,
            "connection": "ops",
            "in.fetchAll": "false",
            "in.limit": "5",
            "in.statuses": "triggered\nacknowledged\n",
        },
    )
    assert tried.status_code == 200 and 'id="try-result"' in tried.text, tried.text
    sent = listed.calls.last.request.url.params
    assert sent.get_list("statuses[]") == ["triggered", "acknowledged"]
    assert sent["limit"] == "5"


def test_connections_are_named_and_linked_and_times_are_read_as_people_read_them(
    console: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    csrf = signed_in(console)
    created = make_connection(as_admin(console))
    console.post("/console/instances/new", data={"yaml": EXAMPLE_INSTANCE, "csrf": csrf})
    link = '<a href="/console/connections#connection-ops">ops</a>'
    for path in ("/console/instances", "/console/instances/acme-oncall"):
        shown = console.get(path).text
        assert link in shown and created["id"] not in shown, path
    assert 'id="connection-ops"' in console.get("/console/connections").text
    # Redeploying starts from the YAML a person would write: the connection by name.
    editor = console.get("/console/instances/acme-oncall/edit").text
    assert "connection: ops\n" in editor and created["id"] not in editor
    answer_incident(pd)
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    assert deliver(console, subs, PATH, "t-1").status_code == 202
    drain(console)
    rows = console.get("/console/executions/rows").text
    moment = re.search(
        r'<time datetime="([^"]+)">(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC \(([^)]+)\)</time>', rows
    )
    assert moment, rows
    assert moment.group(1).endswith("+00:00") and "ago" in moment.group(3)
    assert "." not in moment.group(2)  # no microseconds for a person
    record = console.get(re.search(r'href="(/console/executions/[^"]+)"', rows).group(1)).text
    assert record.count(" UTC (") == 3  # received, started, finished


def test_deploying_a_name_that_exists_offers_to_redeploy_it(
    console: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    csrf = with_example_deployed(console)
    changed = EXAMPLE_INSTANCE.replace("Investigating:", "Looking into:")
    again = console.post("/console/instances/new", data={"yaml": changed, "csrf": csrf})
    assert again.status_code == 200
    assert "An instance named acme-oncall exists already" in again.text
    assert "use PUT" not in again.text
    assert 'formaction="/console/instances/acme-oncall/edit"' in again.text
    flagged = re.search(r'id="flagged-line"[^>]*>(\d+)<', again.text)
    assert flagged and int(flagged.group(1)) == 1  # the name's line
    redeployed = console.post(
        "/console/instances/acme-oncall/edit", data={"yaml": changed, "csrf": csrf}
    )
    assert redeployed.status_code == 200
    flows = console.get("/api/instances/acme-oncall", headers=AUTH).json()["flows"]
    assert "Looking into:" in json.dumps(flows)


def test_a_wrong_teardown_confirmation_keeps_the_instance_page(
    console: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    csrf = with_example_deployed(console)
    wrong = console.post(
        "/console/instances/acme-oncall/teardown", data={"csrf": csrf, "confirm": "acme"}
    )
    assert wrong.status_code == 400
    assert 'id="teardown-error"' in wrong.text and "Type the instance&#39;s name" in wrong.text
    assert "<h2>Flows</h2>" in wrong.text  # the page itself, not an error page
    assert console.get("/api/instances/acme-oncall", headers=AUTH).status_code == 200
    assert subs.subscriptions  # nothing was torn down


def test_each_trigger_has_a_page(console: TestClient) -> None:
    signed_in(console)
    listing = console.get("/console/component").text
    assert 'href="/console/component/triggers/incidentsTrigger"' in listing
    shown = console.get("/console/component/triggers/incidentsTrigger")
    assert shown.status_code == 200
    assert "<code>incident.triggered</code>" in shown.text
    assert "type: incidentsTrigger" in shown.text and 'id="trigger-output"' in shown.text
    assert "<code>filterType</code>" in shown.text
    missing = console.get("/console/component/triggers/incidentTrigger")
    assert missing.status_code == 404 and "did you mean &#39;incidentsTrigger&#39;" in missing.text
