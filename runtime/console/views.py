"""The console's pages: executions, instances (with a YAML deploy editor), connections
and the component browser. Each handler reads and changes through the API (``api.call``)
and renders a Jinja2 template; forms that change something carry the CSRF token."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any
from urllib.parse import urlencode

import pendulum
import yaml
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from pagerduty_connector.component.documents import DocumentError, load_yaml
from pagerduty_connector.component.errors import did_you_mean
from pagerduty_connector.component.redact import redact
from pagerduty_connector.runtime.console.api import ApiError, call
from pagerduty_connector.runtime.console.editor import locate_error
from pagerduty_connector.runtime.console.session import (
    SignInThrottle,
    csrf_ok,
    login_form_ok,
    session_of,
    set_login_token,
    sign_in,
    sign_out,
    token_matches,
)
from pagerduty_connector.runtime.flows import Flow, actions_of
from pagerduty_connector.runtime.tokens import granted_covers

templates = Jinja2Templates(
    env=Environment(
        loader=PackageLoader("pagerduty_connector.runtime.console", "templates"),
        autoescape=select_autoescape(default=True),
    )
)
templates.env.filters["pretty"] = lambda value: redact(
    json.dumps(value, indent=2, sort_keys=True, default=str)
)


def when(value: Any, relative: bool = True, zone: str | None = None) -> Markup | str:
    """A moment as a person reads it: to the second, with its time zone (UTC, or ``zone``:
    a schedule's own), and how long ago (or until) when within a day; ``<time>`` keeps
    the exact instant."""
    if not value:
        return "—"
    try:
        moment = pendulum.parse(str(value))
    except (ValueError, pendulum.parsing.exceptions.ParserError):
        return str(value)
    if not isinstance(moment, pendulum.DateTime):
        return str(value)
    if moment.tzinfo is None:  # the store's SQLite rows come back naive, in UTC
        moment = moment.replace(tzinfo=pendulum.UTC)
    try:
        moment = moment.in_timezone(zone or "UTC")
    except pendulum.tz.exceptions.InvalidTimezone:
        moment = moment.in_timezone("UTC")
    shown = moment.format("YYYY-MM-DD HH:mm:ss zz")
    ago = pendulum.now("UTC") - moment
    if relative and abs(ago.total_seconds()) < 86_400:
        shown += f" ({moment.diff_for_humans()})"
    return Markup('<time datetime="{}">{}</time>').format(moment.isoformat(), shown)


templates.env.filters["when"] = when
STATUSES = (
    "received",
    "running",
    "waiting",
    "succeeded",
    "succeeded_with_errors",
    "failed",
    "cancelled",
    "skipped",
)
EXAMPLE_INSTANCE = """\
name: acme-oncall
connection: ops
flows:
  - name: on-incident
    trigger:
      type: incidentsTrigger
      inputs:
        events: [incident.triggered]
        webhookDescription: acme on-call
        filterType: account_reference
    steps:
      - name: incident
        action: getIncident
        inputs:
          id: "{{ trigger.event.data.id }}"
      - name: note
        action: createIncidentNote
        inputs:
          id: "{{ steps.incident.data.incident.id }}"
          note: "Investigating: {{ steps.incident.data.incident.title }}"
"""


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a page with the session's CSRF token and the current section."""
    session = session_of(request) or {}
    context.setdefault("section", template.split("_")[0].split(".")[0])
    # The page one level up from the one that failed (a form posted to .../teardown goes
    # back to the instance): a link, not script, which the console's policy forbids.
    context.setdefault("back", request.url.path.rstrip("/").rsplit("/", 1)[0] or "/console")
    return templates.TemplateResponse(
        request, template, {"csrf": session.get("csrf", ""), **context}, status_code=status
    )


async def form_of(request: Request) -> dict[str, str] | Response:
    """The submitted form, or a 403 page when its CSRF token is not the session's."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    if not csrf_ok(request, form.get("csrf")):
        return page(request, "error.html", 403, message="This form has expired: reload the page.")
    return form


async def login(request: Request) -> Response:
    """The sign-in form; posting the admin token starts a session. The form carries a
    CSRF token of its own, and wrong tokens are throttled per client address."""
    if request.method == "GET":
        return _login_page(request)
    client = request.client.host if request.client else "?"
    throttle: SignInThrottle = request.app.state.sign_in_throttle
    wait = throttle.wait(client)
    if wait:
        seconds = int(wait) + 1
        answer = _login_page(request, 429, f"Too many wrong tokens: try again in {seconds} s.")
        answer.headers["Retry-After"] = str(seconds)
        return answer
    form = await request.form()
    if not login_form_ok(request, str(form.get("csrf", "")) or None):
        return _login_page(request, 403, "This form has expired: sign in again.")
    if not token_matches(request, str(form.get("token", ""))):
        throttle.failed(client)
        return _login_page(request, 401, "That is not the admin token.")
    response = RedirectResponse("/console/executions", status_code=303)
    sign_in(request, response)
    return response


def _login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    """The sign-in form, with a fresh CSRF token in a hidden field and in its cookie."""
    token = secrets.token_urlsafe(24)
    response = page(request, "login.html", status, section="login", error=error, login=token)
    set_login_token(request, response, token)
    return response


async def logout(request: Request) -> Response:
    """End the session."""
    form = await form_of(request)
    if isinstance(form, Response):
        return form
    response = RedirectResponse("/console/login", status_code=303)
    sign_out(response)
    return response


def _filters(request: Request) -> dict[str, str]:
    names = ("instance", "flow", "status", "error", "since")
    return {n: request.query_params[n] for n in names if request.query_params.get(n)}


async def executions(request: Request) -> Response:
    """The execution log with its filters; the table refreshes itself while runs go on."""
    filters = _filters(request)
    rows = await call(request, "GET", "/executions", params={**filters, "limit": "200"})
    instances = await call(request, "GET", "/instances")
    return page(
        request,
        "executions.html",
        rows=rows,
        filters=filters,
        statuses=STATUSES,
        instances=[i["name"] for i in instances],
        query=urlencode(filters),
    )


async def execution_rows(request: Request) -> Response:
    """The table's rows alone (htmx polls this)."""
    filters = _filters(request)
    rows = await call(request, "GET", "/executions", params={**filters, "limit": "200"})
    return page(request, "executions_rows.html", rows=rows)


async def execution(request: Request) -> Response:
    """One execution: the event, each step's timeline, the error, Retry and Replay."""
    try:
        record = await call(request, "GET", f"/executions/{request.path_params['id']}")
    except ApiError as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    live = record["status"] in ("received", "running", "waiting")
    return page(request, "execution.html", e=record, live=live)


async def rerun(request: Request) -> Response:
    """Retry (from the failed step) or replay (every step) an execution."""
    form = await form_of(request)
    if isinstance(form, Response):
        return form
    how = request.path_params["how"]
    if how not in ("retry", "replay"):
        return page(request, "error.html", 404, message=f"No such action '{how}'.")
    # A retry runs on the flow the run ran, or with flow=current on the flow now.
    body = {"flow": form["flow"]} if how == "retry" and form.get("flow") else {}
    try:
        path = f"/executions/{request.path_params['id']}/{how}"
        started = await call(request, "POST", path, json=body)
    except ApiError as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    return RedirectResponse(f"/console/executions/{started['execution']}", status_code=303)


async def connection_names(request: Request) -> dict[str, str]:
    """Each connection's name by its id (instances refer to connections by id)."""
    return {c["id"]: c["name"] for c in await call(request, "GET", "/connections")}


async def instances(request: Request) -> Response:
    """Every instance with its flows and state."""
    rows = await call(request, "GET", "/instances")
    return page(request, "instances.html", rows=rows, names=await connection_names(request))


async def instance(request: Request) -> Response:
    """One instance: flows, trigger events and filter, webhook URLs, subscriptions."""
    return await _instance_page(request, request.path_params["name"])


async def _instance_page(
    request: Request, name: str, status: int = 200, **context: Any
) -> Response:
    try:
        row = await call(request, "GET", f"/instances/{name}")
    except ApiError as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    charts = {
        f["name"]: chart(await call(request, "GET", f"/instances/{name}/flows/{f['name']}/stats"))
        for f in row["flows"]
    }
    samples = {f["name"]: sample_event(f) for f in row["flows"]}
    names = await connection_names(request)
    return page(
        request,
        "instance.html",
        status,
        i=row,
        charts=charts,
        samples=samples,
        names=names,
        **context,
    )


def sample_event(flow: dict[str, Any]) -> str:
    """A V3 webhook event of the flow's first selected type, to edit and run."""
    events = flow["trigger"]["inputs"].get("events") or ["incident.triggered"]
    resource = events[0].split(".")[0]
    event = {
        "event": {
            "id": "01SAMPLEEVENT00000000000000",
            "event_type": events[0],
            "resource_type": resource,
            "occurred_at": "2026-01-01T00:00:00Z",
            "agent": None,
            "client": None,
            "data": {"id": "Q1P5", "type": resource, "title": "Sample: server is on fire"},
        }
    }
    return json.dumps(event, indent=2)


async def test_run(request: Request) -> Response:
    """Run a flow now with an edited sample event (the API's test run), then show it."""
    form = await form_of(request)
    if isinstance(form, Response):
        return form
    name, flow = request.path_params["name"], request.path_params["flow"]
    try:
        started = await call(
            request, "POST", f"/instances/{name}/flows/{flow}/test", content=form.get("event", "")
        )
    except ApiError as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    return RedirectResponse(f"/console/executions/{started['execution']}", status_code=303)


CHART_STATUSES = ("succeeded", "failed", "running", "received", "skipped")


def chart(stats: dict[str, Any], height: int = 80, bar: int = 14) -> dict[str, Any]:
    """Stacked bars (one per hour, by status) laid out for the SVG in ``instance.html``."""
    totals = [sum(h.get(s, 0) for s in CHART_STATUSES) for h in stats["hours"]]
    top = max(totals, default=0) or 1
    bars = []
    for n, hour in enumerate(stats["hours"]):
        y = height
        parts = []
        for status in CHART_STATUSES:
            count = hour.get(status, 0)
            if count:
                size = max(1.0, count / top * height)
                y -= size
                parts.append({"status": status, "y": y, "height": size, "count": count})
        label = ", ".join(f"{p['count']} {p['status']}" for p in parts) or "none"
        bars.append({"x": n * (bar + 2), "parts": parts, "hour": hour["hour"], "label": label})
    return {
        "bars": bars,
        "width": len(bars) * (bar + 2),
        "height": height,
        "bar": bar,
        "top": max(totals, default=0),
        "total": sum(totals),
        "steps": stats["steps"],
    }


async def instance_action(request: Request) -> Response:
    """Enable, disable or tear down an instance."""
    form = await form_of(request)
    if isinstance(form, Response):
        return form
    name, action = request.path_params["name"], request.path_params["action"]
    if action not in ("enable", "disable", "teardown"):
        return page(request, "error.html", 404, message=f"No such action '{action}'.")
    try:
        if action == "teardown":
            if form.get("confirm") != name:
                # The instance's page again, the problem at the form, nothing lost.
                message = f"Type the instance's name ({name}) to confirm the teardown."
                return await _instance_page(request, name, 400, teardown_error=message)
            await call(request, "DELETE", f"/instances/{name}")
            return RedirectResponse("/console/instances", status_code=303)
        await call(request, "POST", f"/instances/{name}/{action}")
    except ApiError as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    return RedirectResponse(f"/console/instances/{name}", status_code=303)


async def editor(request: Request) -> Response:
    """Deploy (or redeploy) an instance from YAML; errors are shown at the line they name."""
    name = request.path_params.get("name")
    if request.method == "GET":
        text = EXAMPLE_INSTANCE
        if name:
            row = await call(request, "GET", f"/instances/{name}")
            # The connection by its name, as a person wrote it (the API takes either).
            connection = (await connection_names(request)).get(row["connection"], row["connection"])
            document = {"name": name, "connection": connection, "flows": row["flows"]}
            text = yaml.safe_dump(document, sort_keys=False)
        return page(request, "editor.html", text=text, name=name, section="instances")
    form = await form_of(request)
    if isinstance(form, Response):
        return form
    text = form.get("yaml", "")
    try:
        document = load_yaml(text)
        if not isinstance(document, dict):
            raise DocumentError("the document must be a mapping with name, connection and flows")
    except DocumentError as exc:
        said = str(exc).removeprefix("not YAML: ")
        line = re.match(r"line (\d+),", said)
        # At the end of the text (an unclosed bracket), the last line is the one to fix.
        at = min(int(line[1]) - 1, text.count("\n")) if line else None
        problem = {"line": at, "message": f"Not valid YAML: {said}"}
        return _editor(request, text, name, problem)
    target = name or str(document.get("name", ""))
    try:
        if name:
            body = {k: v for k, v in document.items() if k != "name"}
            result = await call(request, "PUT", f"/instances/{name}", json=body)
        else:
            result = await call(request, "POST", "/instances", json=document)
    except ApiError as exc:
        if exc.status == 409 and not name:
            # The name is taken: offer to redeploy that instance with this text instead.
            problem = {
                "message": f"An instance named {target} exists already: redeploy it with "
                "this YAML, or choose another name.",
                "line": next(
                    (n for n, line in enumerate(text.splitlines()) if line.startswith("name:")),
                    None,
                ),
                "redeploy": target,
            }
            return _editor(request, text, name, problem)
        problem = {"message": exc.message, **locate_error(text, exc.details)}
        return _editor(request, text, name, problem)
    return page(request, "deployed.html", i=result, name=target, section="instances")


def _editor(request: Request, text: str, name: str | None, error: dict[str, Any]) -> Response:
    # 200: the page asked for is the editor, shown again with the problem at its line.
    return page(request, "editor.html", text=text, name=name, error=error, section="instances")


async def connections(request: Request) -> Response:
    """Connections: type, region, OAuth status and consent link; key rotation."""
    return await _connections_page(request, notice=request.query_params.get("notice"))


async def _connections_page(request: Request, status: int = 200, **context: Any) -> Response:
    rows = await call(request, "GET", "/connections")
    spec = await call(request, "GET", "/component")
    needs = scopes_needed(spec, await call(request, "GET", "/instances"))
    for row in rows:
        granted = str((row.get("oauth") or {}).get("scope") or "").split()
        row["scopes"] = [
            {"scope": scope, "where": where, "granted": granted_covers(granted, scope)}
            for scope, where in sorted(needs.get(row["id"], {}).items())
        ]
    return page(
        request, "connections.html", status, rows=rows, types=spec["connections"], **context
    )


def scopes_needed(spec: dict[str, Any], instances: list[dict[str, Any]]) -> dict[str, Any]:
    """Per connection id, each OAuth scope its instances' flows need and where."""
    scope_of = {item["key"]: item.get("scope") for item in [*spec["actions"], *spec["triggers"]]}
    needs: dict[str, dict[str, list[str]]] = {}
    for instance in instances:
        wanted = needs.setdefault(instance["connection"] or "", {})
        for flow in instance["flows"]:
            uses = [("trigger", flow["trigger"]["type"])]
            steps = actions_of(Flow.model_validate(flow))
            uses += [(f"step '{name}'", action) for name, action in steps]
            for where, key in uses:
                if scope_of.get(key):
                    place = f"{instance['name']}: flow '{flow['name']}' {where}"
                    wanted.setdefault(scope_of[key], []).append(place)
    return needs


async def create_connection(request: Request) -> Response:
    """Create a connection from its type's form (secrets go to the API, never back)."""
    form = await form_of(request)
    if isinstance(form, Response):
        return form
    spec = await call(request, "GET", "/component")
    chosen = next((c for c in spec["connections"] if c["key"] == form.get("type")), None)
    config = form_inputs(form, chosen["inputs"].get("properties") or {} if chosen else {})
    body = {"name": form.get("name", ""), "type": form.get("type", ""), "config": config}
    try:
        created = await call(request, "POST", "/connections", json=body)
    except ApiError as exc:
        return await _connections_page(request, error=exc.message, chosen=body["type"])
    notice = urlencode({"notice": f"{created['name']}: created"})
    return RedirectResponse(f"/console/connections?{notice}", status_code=303)


async def rotate_key(request: Request) -> Response:
    """Replace an API-key connection's key (checked by the API before it is stored)."""
    form = await form_of(request)
    if isinstance(form, Response):
        return form
    name = request.path_params["name"]
    try:
        current = await call(request, "GET", f"/connections/{name}")
        config = {**current["config"], "apiKey": form.get("apiKey", "")}
        await call(
            request, "PUT", f"/connections/{name}", json={"type": current["type"], "config": config}
        )
    except ApiError as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    return RedirectResponse(
        f"/console/connections?{urlencode({'notice': f'{name}: key rotated'})}", status_code=303
    )


async def component(request: Request) -> Response:
    """Every action, trigger and data source of the component."""
    return page(request, "component.html", spec=await call(request, "GET", "/component"))


async def trigger(request: Request) -> Response:
    """One webhook trigger: the events it selects from, its inputs, what a flow's steps
    read as ``trigger``, and how a flow names it."""
    spec = await call(request, "GET", "/component")
    key = request.path_params["key"]
    found = next((t for t in spec["triggers"] if t["key"] == key), None)
    if found is None:
        known = [t["key"] for t in spec["triggers"]]
        message = f"No trigger '{key}'{did_you_mean(key, known)}."
        return page(request, "error.html", 404, message=message)
    return page(request, "trigger.html", section="component", t=found)


async def action(request: Request) -> Response:
    """One action or data source: its inputs, examples, and a Try it form."""
    spec = await call(request, "GET", "/component")
    key = request.path_params["key"]
    runnable = next((a for a in [*spec["actions"], *spec["dataSources"]] if a["key"] == key), None)
    if runnable is None:
        return page(request, "error.html", 404, message=f"No action or data source '{key}'.")
    names = [c["name"] for c in await call(request, "GET", "/connections")]
    result = error = None
    values: dict[str, str] = {}
    if request.method == "POST":
        form = await form_of(request)
        if isinstance(form, Response):
            return form
        values = {k[3:]: v for k, v in form.items() if k.startswith("in.") and v != ""}
        inputs = form_inputs(form, runnable["inputs"].get("properties") or {})
        body = {"action": key, "connection": form.get("connection") or None, "inputs": inputs}
        try:
            result = (await call(request, "POST", "/test-runs", json=body))["result"]
        except ApiError as exc:
            error = exc.message
    return page(
        request,
        "action.html",
        section="component",
        a=runnable,
        connections=names,
        values=values,
        result=result,
        error=error,
    )


async def choices(request: Request) -> Response:
    """A picklist data source's results as ``<option>``s for an input's suggestions
    (empty when it cannot run, e.g. no connection yet; the input still takes text)."""
    body = {
        "action": request.path_params["key"],
        "connection": request.query_params.get("connection"),
    }
    try:
        found = (await call(request, "POST", "/test-runs", json=body))["result"]
    except ApiError:
        found = {}
    listed = found.get("result") if isinstance(found, dict) else None
    return page(request, "choices.html", choices=listed if isinstance(listed, list) else [])


def kind_of(schema: dict[str, Any]) -> str:
    """Which form widget an input's JSON Schema gets: ``boolean`` (a checkbox),
    ``integer`` (a number field), ``list`` (strings, one per line), ``choice`` (a pick
    list), ``text``, or ``json`` (objects and anything else)."""
    shapes = [s.get("type") for s in schema.get("anyOf", [])]
    if shapes[:1] == ["boolean"]:
        return "boolean"
    if shapes[:1] == ["integer"]:
        return "integer"
    if shapes == ["string", "array"] and schema["anyOf"][1].get("items", {}).get("type") == (
        "string"
    ):
        return "list"
    if schema.get("enum"):
        return "choice"
    if schema.get("type") == "string":
        return "text"
    return "json"


templates.env.globals["kind_of"] = kind_of


def form_inputs(form: dict[str, str], schemas: dict[str, Any]) -> dict[str, Any]:
    """The ``in.*`` fields of a form as input values, each read as its widget wrote it: a
    checkbox's ``true``/``false``, a number, one string per line, JSON for the rest."""
    values: dict[str, Any] = {}
    for name, text in form.items():
        if not name.startswith("in.") or text == "":
            continue
        key = name[3:]
        kind = kind_of(schemas.get(key, {}))
        if kind == "boolean":
            values[key] = text == "true"
        elif kind == "integer" and re.fullmatch(r"-?\d+", text.strip()):
            values[key] = int(text)
        elif kind == "list":
            values[key] = [line.strip() for line in text.splitlines() if line.strip()]
        elif kind == "json":
            values[key] = _typed(text)
        else:
            values[key] = text
    return values


def _typed(value: str) -> Any:
    """A form value as JSON when it is JSON (objects, lists, numbers), else the text."""
    text = value.strip()
    if text[:1] in "{[" or text in ("true", "false", "null"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


async def home(request: Request) -> Response:
    """The console starts at the execution log."""
    return RedirectResponse("/console/executions", status_code=303)
