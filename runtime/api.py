"""The runtime's HTTP surface: management API (admin token) and webhook intake.

Routes live in one list (``ROUTES``); errors map to JSON in one table
(``EXCEPTION_HANDLERS``). Handler docstrings are the OpenAPI operations served
at ``/openapi.json``.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any, TypeVar

import yaml
from pagerduty_connector.component.errors import (
    ComponentError,
    ConfigurationError,
    DeployError,
    InputError,
    ManifestError,
    PagerDutyError,
    SignatureError,
)
from pagerduty_connector.component.inputs import clean_inputs
from pagerduty_connector.component.manifest import Input, InputType
from pagerduty_connector.component.redact import MASK, get_logger, redact
from pagerduty_connector.component.registry import TRIGGERS
from pagerduty_connector.runtime.deploy import (
    deploy_triggers,
    require_connection,
    subscribed_flows,
    teardown_triggers,
    undo_deploy,
)
from pagerduty_connector.runtime.engine import Engine, Known
from pagerduty_connector.runtime.flows import Flow, validate_flow
from pagerduty_connector.runtime.intake import IntakeTarget
from pagerduty_connector.runtime.oauth import OAUTH_TYPE, check_scopes, consent_url, oauth_status
from pagerduty_connector.runtime.oauth import callback as oauth_callback
from pagerduty_connector.runtime.oauth import start as oauth_start
from pagerduty_connector.runtime.store import (
    ConnectionRow,
    ExecutionRow,
    InstanceRow,
    new_id,
    now,
    select,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator
from starlette.types import ASGIApp, Receive, Scope, Send

log = get_logger("api")
RowT = TypeVar("RowT")
MAX_WEBHOOK_BYTES = 2 * 1024 * 1024
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DROPPED_HEADERS = {"authorization", "cookie", "proxy-authorization"}

schemas = SchemaGenerator(
    {"openapi": "3.0.3", "info": {"title": "PagerDuty connector runtime", "version": "0.1.0"}}
)


def engine_of(request: Request) -> Engine:
    """The engine the app was started with."""
    return request.app.state.engine


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (or YAML, when sent as ``application/yaml``), or a 400."""
    raw = await request.body() or b"{}"
    if "yaml" in request.headers.get("content-type", ""):
        try:
            body = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise HTTPException(400, f"request body is not YAML: {exc}") from None
        kind = "YAML mapping"
    else:
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise HTTPException(400, f"request body is not JSON: {exc.msg}") from None
        kind = "JSON object"
    if not isinstance(body, dict):
        raise HTTPException(400, f"request body must be a {kind}")
    return body


def parse(model: type[BaseModel], body: dict[str, Any]) -> Any:
    """Validate ``body`` with ``model``; a 400 listing each field's problem."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise HTTPException(400, problems) from None


async def row_or_404(db: AsyncSession, model: type[RowT], key: str, what: str) -> RowT:
    """The row of ``model`` with primary key ``key``, or a 404 naming what is missing."""
    row = await db.get(model, key)
    if row is None:
        raise HTTPException(404, f"no {what} '{key}'")
    return row


async def _listed(engine: Engine, query: Any, view: Any) -> JSONResponse:
    """Every row ``query`` selects, each shown by ``view(engine, row)``."""
    async with engine.store.session() as db:
        rows = (await db.execute(query)).scalars()
        return JSONResponse([view(engine, r) for r in rows])


# --- component specification -----------------------------------------------------


def input_schema(spec: Input) -> dict[str, Any]:
    """JSON Schema of the values one input accepts (before cleaning)."""
    if spec.collection == "valuelist":
        item: dict[str, Any] = {"type": "string"}
        if spec.model and spec.unknownValues == "reject":
            item["enum"] = spec.model
        schema: dict[str, Any] = {"anyOf": [item, {"type": "array", "items": item}]}
    elif spec.collection == "keyvaluelist":
        pair = {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}}
        schema = {"anyOf": [{"type": "object"}, {"type": "array", "items": pair}]}
    elif spec.type is InputType.BOOLEAN:
        schema = {"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]}
    elif spec.type is InputType.CODE:
        schema = {"anyOf": [{"type": "object"}, {"type": "array"}, {"type": "string"}]}
    elif spec.clean == "integer":
        schema = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^-?\d+$"}]}
    else:
        schema = {"type": "string"}
        if spec.model:
            schema["enum"] = spec.model
    schema.update(title=spec.label)
    if spec.comments:
        schema["description"] = spec.comments
    if spec.default is not None:
        schema["default"] = spec.default
    if spec.secret:
        schema.update(writeOnly=True, **{"x-secret": True})
    return schema


def inputs_schema(inputs: list[Input]) -> dict[str, Any]:
    """JSON Schema of a step's (or connection's) inputs object."""
    usable = [i for i in inputs if i.type is not InputType.CONNECTION]
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {i.key: input_schema(i) for i in usable},
        "required": [i.key for i in usable if i.required and i.default is None],
    }


async def component_spec(request: Request) -> JSONResponse:
    """
    summary: The component specification, with a JSON Schema per action's inputs
    responses:
      200: {description: "connections, triggers, data sources and actions"}
    """
    manifest = engine_of(request).manifest

    def entry(item: Any) -> dict[str, Any]:
        out = {"key": item.key, "label": item.label, "description": item.description}
        if getattr(item, "scope", None):
            out["scope"] = item.scope
        out["inputs"] = inputs_schema(item.inputs)
        out["secretInputs"] = [i.key for i in item.inputs if i.secret]
        return out

    return JSONResponse(
        {
            "key": manifest.key,
            "label": manifest.label,
            "connections": [entry(c) for c in manifest.connections],
            "triggers": [
                {**entry(t), "events": [e.value for e in t.events]} for t in manifest.triggers
            ],
            "dataSources": [entry(d) for d in manifest.dataSources],
            "actions": [entry(a) for a in manifest.actions],
        }
    )


# --- connections ----------------------------------------------------------------


class ConnectionIn(BaseModel):
    """A connection to create: its name, type and input values."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME.pattern)
    type: str
    config: dict[str, Any] = Field(default_factory=dict)


def connection_view(engine: Engine, row: ConnectionRow) -> dict[str, Any]:
    """A connection as the API shows it: secrets masked, never returned."""
    secret_keys = engine.box.open(row.secrets).keys()
    view = {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "config": {k: v for k, v in row.config.items() if k != "oauth"},
        "secrets": {key: MASK for key in sorted(secret_keys)},
        "createdAt": row.created_at.isoformat(),
        "updatedAt": row.updated_at.isoformat(),
    }
    if row.type == OAUTH_TYPE:
        view["oauth"] = {**oauth_status(row), "consentUrl": consent_url(engine, row.id)}
    return view


def split_connection_inputs(
    engine: Engine, type_key: str, values: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Clean a connection's inputs; return ``(plain config, secrets)``."""
    declared = next((c for c in engine.manifest.connections if c.key == type_key), None)
    if declared is None:
        known = ", ".join(c.key for c in engine.manifest.connections)
        raise InputError("connection", "type", f"unknown connection type (known: {known})")
    cleaned = clean_inputs(type_key, declared.inputs, values)
    secret = {i.key for i in declared.inputs if i.secret}
    plain = {k: v for k, v in cleaned.items() if k not in secret and v is not None}
    return plain, {k: v for k, v in cleaned.items() if k in secret and v is not None}


async def verify_api_key(engine: Engine, row: ConnectionRow) -> None:
    """Ask PagerDuty ``GET /abilities``; a rejected key is a clear 400, nothing stored."""
    if row.type != "pagerduty-api-key":
        return
    async with engine.client(engine.connection_config(row)) as client:
        try:
            await client.request("GET", "/abilities")
        except PagerDutyError as exc:
            if exc.status in (401, 403):
                raise InputError(
                    "connection",
                    "apiKey",
                    f"PagerDuty rejected the API key (HTTP {exc.status}: {exc.message})",
                ) from None
            raise


async def find_connection(engine: Engine, ref: str) -> ConnectionRow:
    """A connection by id or name, or 404."""
    async with engine.store.session() as db:
        row = await db.get(ConnectionRow, ref)
        if row is None:
            query = select(ConnectionRow).where(ConnectionRow.name == ref)
            row = (await db.execute(query)).scalar_one_or_none()
    if row is None:
        raise HTTPException(404, f"no connection '{ref}'")
    return row


async def create_connection(request: Request) -> JSONResponse:
    """
    summary: Create a connection (an API key is checked with PagerDuty first)
    responses:
      201: {description: the connection, secrets masked}
      400: {description: invalid input or a key PagerDuty rejects}
    """
    engine = engine_of(request)
    data: ConnectionIn = parse(ConnectionIn, await json_body(request))
    plain, secrets = split_connection_inputs(engine, data.type, data.config)
    if data.type == OAUTH_TYPE:
        plain["oauth"] = {"status": "needs_consent", "reason": "consent was never given"}
    row = ConnectionRow(
        name=data.name, type=data.type, config=plain, secrets=engine.box.seal(secrets)
    )
    await verify_api_key(engine, row)
    async with engine.store.session() as db:
        db.add(row)
        try:
            await db.commit()
        except IntegrityError:
            raise HTTPException(409, f"a connection named '{data.name}' exists") from None
    return JSONResponse(connection_view(engine, row), status_code=201)


async def list_connections(request: Request) -> JSONResponse:
    """
    summary: List connections (secrets masked)
    responses:
      200: {description: connections}
    """
    query = select(ConnectionRow).order_by(ConnectionRow.name)
    return await _listed(engine_of(request), query, connection_view)


async def get_connection(request: Request) -> JSONResponse:
    """
    summary: Read one connection (secrets masked)
    responses:
      200: {description: the connection}
      404: {description: no such connection}
    """
    engine = engine_of(request)
    row = await find_connection(engine, request.path_params["ref"])
    return JSONResponse(connection_view(engine, row))


async def update_connection(request: Request) -> JSONResponse:
    """
    summary: Update a connection's inputs, e.g. rotate its key (checked with PagerDuty)
    responses:
      200: {description: the updated connection}
      400: {description: invalid input or a key PagerDuty rejects; nothing changed}
    """
    engine = engine_of(request)
    row = await find_connection(engine, request.path_params["ref"])
    body = await json_body(request)
    declared = next(c for c in engine.manifest.connections if c.key == row.type)
    keys = {i.key for i in declared.inputs}
    stored_secrets = engine.box.open(row.secrets)
    merged = {
        **{k: v for k, v in row.config.items() if k in keys},
        **{k: v for k, v in stored_secrets.items() if k in keys},
        **(body.get("config") or {}),
    }
    plain, secrets = split_connection_inputs(engine, row.type, merged)
    # Tokens from consent and the consent status are not inputs; they stay as they are.
    kept = {k: v for k, v in stored_secrets.items() if k not in keys}
    status = {k: v for k, v in row.config.items() if k == "oauth"}
    candidate = ConnectionRow(
        id=row.id,
        name=row.name,
        type=row.type,
        config={**plain, **status},
        secrets=engine.box.seal({**secrets, **kept}),
    )
    await verify_api_key(engine, candidate)
    async with engine.store.session() as db:
        stored = await db.get(ConnectionRow, row.id)
        assert stored is not None
        stored.config, stored.secrets, stored.updated_at = (
            candidate.config,
            candidate.secrets,
            now(),
        )
        await db.commit()
        engine.intake.clear()
        return JSONResponse(connection_view(engine, stored))


async def delete_connection(request: Request) -> Response:
    """
    summary: Delete a connection no deployed instance uses
    responses:
      204: {description: deleted}
      409: {description: instances use it (named in the message)}
    """
    engine = engine_of(request)
    row = await find_connection(engine, request.path_params["ref"])
    async with engine.store.session() as db:
        query = select(InstanceRow.id).where(InstanceRow.connection_id == row.id)
        users = sorted((await db.execute(query)).scalars())
        if users:
            raise HTTPException(
                409, f"connection '{row.name}' is used by instances: {', '.join(users)}"
            )
        stored = await db.get(ConnectionRow, row.id)
        await db.delete(stored)
        await db.commit()
    return Response(status_code=204)


# --- instances -------------------------------------------------------------------


class InstanceIn(BaseModel):
    """An instance to deploy: name, connection, flows and whether it is enabled."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME.pattern)
    connection: str | None = None
    enabled: bool = True
    flows: list[Flow] = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)


def instance_view(engine: Engine, row: InstanceRow) -> dict[str, Any]:
    """An instance with its webhook URLs (one per flow)."""
    return {
        "name": row.id,
        "enabled": row.enabled,
        "connection": row.connection_id,
        "flows": row.flows,
        "config": row.config,
        "webhookUrls": {f["name"]: engine.webhook_url(row.id, f["name"]) for f in row.flows},
        "state": row.state,
        "createdAt": row.created_at.isoformat(),
        "updatedAt": row.updated_at.isoformat(),
    }


async def _validated_instance(engine: Engine, data: InstanceIn) -> tuple[str | None, list[str]]:
    """Validate every flow, step and input; return the connection id and warnings."""
    names = [f.name for f in data.flows]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InputError(data.name, "flows", f"flow name '{duplicate}' is used twice")
    warnings = [w for flow in data.flows for w in validate_flow(flow, engine.manifest)]
    if data.connection is None:
        return None, warnings
    connection = await find_connection(engine, data.connection)
    check_scopes(connection, scopes_needed(engine, data.flows))
    return connection.id, warnings


def scopes_needed(engine: Engine, flows: list[Flow]) -> dict[str, str]:
    """Where each OAuth scope is needed: every step's action and every subscribed trigger."""
    needs: dict[str, str] = {}
    for flow in flows:
        trigger = next(t for t in engine.manifest.triggers if t.key == flow.trigger.type)
        if trigger.scope and subscribed_flows([{"trigger": {"type": trigger.key}}]):
            needs[f"flow '{flow.name}' trigger"] = trigger.scope
        for step in flow.steps:
            scope = getattr(engine.manifest.runnable(step.action), "scope", None)
            if scope:
                needs[f"flow '{flow.name}' step '{step.name}'"] = scope
    return needs


async def _deploy(engine: Engine, db: AsyncSession, row: InstanceRow) -> list[str]:
    """Run the triggers' deploy hooks and commit; undo what they created if that fails."""
    require_connection(row)
    result = await deploy_triggers(engine, db, row)
    try:
        await db.commit()
        engine.intake.forget(row.id)
    except Exception:
        await db.rollback()
        connection = await db.get(ConnectionRow, row.connection_id) if row.connection_id else None
        if connection is not None:
            await undo_deploy(engine, connection, result)
        raise
    return result.log


def _deployed_view(engine: Engine, row: InstanceRow, log: list[str], warnings: list[str]) -> Any:
    return {**instance_view(engine, row), "deploy": {"log": log, "warnings": warnings}}


async def deploy_instance(request: Request) -> JSONResponse:
    """
    summary: Deploy an instance (JSON or YAML; every flow, step and input validated first)
    responses:
      201: {description: the instance with its webhook URLs and what the deploy did}
      400: {description: a flow, step or input is invalid; nothing stored}
      502: {description: PagerDuty refused a subscription; what the deploy created was removed}
    """
    engine = engine_of(request)
    data: InstanceIn = parse(InstanceIn, await json_body(request))
    connection_id, warnings = await _validated_instance(engine, data)
    row = InstanceRow(
        id=data.name,
        enabled=data.enabled,
        connection_id=connection_id,
        flows=[f.model_dump() for f in data.flows],
        config=data.config,
        state={"deployed": True},
    )
    async with engine.store.session() as db:
        if await db.get(InstanceRow, data.name):
            raise HTTPException(409, f"instance '{data.name}' exists: use PUT to redeploy")
        db.add(row)
        log = await _deploy(engine, db, row)
    return JSONResponse(_deployed_view(engine, row, log, warnings), status_code=201)


async def redeploy_instance(request: Request) -> JSONResponse:
    """
    summary: Update and redeploy an instance (JSON or YAML)
    responses:
      200: {description: the redeployed instance}
      400: {description: invalid; the deployed instance is unchanged}
      502: {description: PagerDuty refused; the deployed instance is unchanged}
    """
    engine = engine_of(request)
    name = request.path_params["name"]
    data: InstanceIn = parse(InstanceIn, {**await json_body(request), "name": name})
    connection_id, warnings = await _validated_instance(engine, data)
    async with engine.store.session() as db:
        row = await row_or_404(db, InstanceRow, name, "instance")
        row.enabled, row.connection_id = data.enabled, connection_id
        row.flows = [f.model_dump() for f in data.flows]
        row.config, row.updated_at, row.state = data.config, now(), {"deployed": True}
        log = await _deploy(engine, db, row)
        return JSONResponse(_deployed_view(engine, row, log, warnings))


async def list_instances(request: Request) -> JSONResponse:
    """
    summary: List instances
    responses:
      200: {description: instances}
    """
    query = select(InstanceRow).order_by(InstanceRow.id)
    return await _listed(engine_of(request), query, instance_view)


async def get_instance(request: Request) -> JSONResponse:
    """
    summary: Read one instance and its webhook URLs
    responses:
      200: {description: the instance}
      404: {description: no such instance}
    """
    engine = engine_of(request)
    async with engine.store.session() as db:
        row = await row_or_404(db, InstanceRow, request.path_params["name"], "instance")
    return JSONResponse(instance_view(engine, row))


async def set_enabled(request: Request) -> JSONResponse:
    """
    summary: Enable or disable an instance
    responses:
      200: {description: the instance}
    """
    engine = engine_of(request)
    action = request.path_params["action"]
    if action not in ("enable", "disable"):
        raise HTTPException(404, f"unknown instance action '{action}' (enable or disable)")
    async with engine.store.session() as db:
        row = await row_or_404(db, InstanceRow, request.path_params["name"], "instance")
        row.enabled, row.updated_at = action == "enable", now()
        await db.commit()
        engine.intake.forget(row.id)
        return JSONResponse(instance_view(engine, row))


async def delete_instance(request: Request) -> Response:
    """
    summary: Tear down and delete an instance (its executions are kept)
    responses:
      204: {description: deleted, with every webhook subscription it had}
      502: {description: teardown incomplete; the instance is kept, disabled, with the reason}
    """
    engine = engine_of(request)
    name = request.path_params["name"]
    async with engine.store.session() as db:
        row = await row_or_404(db, InstanceRow, name, "instance")
        try:
            await teardown_triggers(engine, db, row)
        except ComponentError as exc:
            await db.rollback()
            reason = f"teardown of instance '{name}' is incomplete: {exc}"
            row = await db.get(InstanceRow, name)
            assert row is not None
            row.enabled, row.updated_at = False, now()
            row.state = {"deployed": False, "teardown": "incomplete", "reason": redact(reason)}
            await db.commit()
            engine.intake.forget(name)
            advice = "the instance is disabled; retry DELETE to finish"
            raise DeployError(f"{reason}; {advice}") from None
        await db.delete(row)
        await db.commit()
    engine.intake.forget(name)
    return Response(status_code=204)


# --- executions and test runs ---------------------------------------------------------


def execution_view(row: ExecutionRow, *, full: bool) -> dict[str, Any]:
    """An execution record; ``full`` adds the received body, headers and steps."""
    out: dict[str, Any] = {
        "id": row.id,
        "instance": row.instance_id,
        "flow": row.flow,
        "status": row.status,
        "responseStatus": row.response_status,
        "error": row.error,
        "reason": row.reason,
        "receivedAt": row.received_at.isoformat(),
        "startedAt": row.started_at.isoformat() if row.started_at else None,
        "finishedAt": row.finished_at.isoformat() if row.finished_at else None,
    }
    if full:
        out.update(
            webhookId=row.webhook_id,
            receivedBody=row.received_body,
            headers=row.headers,
            trigger=row.trigger,
            steps=row.steps,
        )
    return out


async def list_executions(request: Request) -> JSONResponse:
    """
    summary: List executions, newest first (filters instance, flow, status; limit)
    responses:
      200: {description: executions}
    """
    engine = engine_of(request)
    query = select(ExecutionRow).order_by(ExecutionRow.received_at.desc())
    params = request.query_params
    for column, name in (
        (ExecutionRow.instance_id, "instance"),
        (ExecutionRow.flow, "flow"),
        (ExecutionRow.status, "status"),
    ):
        if params.get(name):
            query = query.where(column == params[name])
    try:
        limit = min(max(int(params.get("limit", "100")), 1), 1000)
    except ValueError:
        raise HTTPException(400, "limit must be a whole number") from None
    async with engine.store.session() as db:
        rows = (await db.execute(query.limit(limit))).scalars()
        return JSONResponse([execution_view(r, full=False) for r in rows])


async def get_execution(request: Request) -> JSONResponse:
    """
    summary: Read one execution with its received body and every step's record
    responses:
      200: {description: the execution}
      404: {description: no such execution}
    """
    engine = engine_of(request)
    async with engine.store.session() as db:
        row = await row_or_404(db, ExecutionRow, request.path_params["id"], "execution")
    return JSONResponse(execution_view(row, full=True))


class StepTrialIn(BaseModel):
    """One action or data source to try with a stored connection."""

    model_config = ConfigDict(extra="forbid")
    action: str
    connection: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)


async def run_test_step(request: Request) -> JSONResponse:
    """
    summary: Run one action or data source with a stored connection and return its result
    responses:
      200: {description: the step's result}
      400: {description: invalid input; nothing was sent}
    """
    engine = engine_of(request)
    data: StepTrialIn = parse(StepTrialIn, await json_body(request))
    connection = await find_connection(engine, data.connection) if data.connection else None
    result = await engine.run_action(connection, data.action, data.inputs, {})
    return JSONResponse({"result": result})


# --- webhook intake ------------------------------------------------------------------


async def _record(
    engine: Engine,
    target: IntakeTarget,
    flow: dict[str, Any],
    body: bytes,
    headers: dict[str, str],
    output: dict[str, Any],
) -> JSONResponse:
    """Store the delivery as an execution, then start it unless there is a reason not to."""
    trigger = TRIGGERS[flow["trigger"]["type"]]
    reason = None
    if not target.enabled:
        reason = "instance is disabled"
    elif hasattr(trigger, "skip_reason"):
        reason = trigger.skip_reason(output, flow["trigger"]["inputs"])
    status = "received" if reason is None else "skipped"
    received = now()
    row = {
        "id": new_id(),
        "instance_id": target.instance_id,
        "flow": flow["name"],
        "webhook_id": headers.get("x-webhook-id"),
        "status": status,
        "reason": reason,
        "received_body": redact(body.decode("utf-8", "replace")),
        "headers": headers,
        "response_status": 202,
        "trigger": output,
        "steps": [],
        "error": None,
        "received_at": received,
        "started_at": None,
        "finished_at": received if reason else None,
    }
    if not await engine.writer.record(row):
        return JSONResponse({"duplicate": True, "webhookId": row["webhook_id"]}, status_code=200)
    if reason is None:
        known = Known(output, flow["name"], target.instance_id, target.flows, target.connection)
        engine.submit(row["id"], target.instance_id, flow["name"], known)
    return JSONResponse({"execution": row["id"], "status": status}, status_code=202)


async def _flow_of(
    engine: Engine, instance_id: str, flow_name: str
) -> tuple[IntakeTarget, dict[str, Any]]:
    target = await engine.intake.get(instance_id)
    flow = target.flows.get(flow_name) if target else None
    if target is None or flow is None:
        raise HTTPException(404, f"no flow '{flow_name}' in instance '{instance_id}'")
    return target, flow


async def receive_webhook(request: Request) -> JSONResponse:
    """
    summary: Receive a signed PagerDuty webhook for one flow; recorded before it is answered
    responses:
      202: {description: recorded; the flow runs in the background (or is skipped, with why)}
      200: {description: a redelivery already recorded; nothing new starts}
      400: {description: unsigned, malformed signature, or not a V3 webhook event}
      403: {description: the signature matches no secret held for this flow}
      404: {description: no such instance or flow}
      413: {description: body over 2 MB}
    """
    engine = engine_of(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        raise HTTPException(413, "webhook body is over 2 MB")
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise HTTPException(413, "webhook body is over 2 MB")
    flow_name = request.path_params["flow"]
    target, flow = await _flow_of(engine, request.path_params["instance"], flow_name)
    headers = {k: v for k, v in request.headers.items() if k not in _DROPPED_HEADERS}
    trigger = TRIGGERS[flow["trigger"]["type"]]
    if hasattr(trigger, "verify"):
        trigger.verify(body, headers, target.secrets.get(flow_name, []))
    return await _record(engine, target, flow, body, headers, trigger.parse(body, headers))


async def test_flow(request: Request) -> JSONResponse:
    """
    summary: Run a flow now with a sample trigger payload (no signature; admin only)
    responses:
      202: {description: recorded; the flow runs in the background}
      400: {description: the payload is not what the flow's trigger accepts}
    """
    engine = engine_of(request)
    params = request.path_params
    engine.intake.forget(params["name"])
    target, flow = await _flow_of(engine, params["name"], params["flow"])
    body = await request.body()
    output = TRIGGERS[flow["trigger"]["type"]].parse(body, {})
    return await _record(engine, target, flow, body, {"x-pdc-test-run": "true"}, output)


async def health(request: Request) -> JSONResponse:
    """
    summary: Liveness
    responses:
      200: {description: ok}
    """
    return JSONResponse({"status": "ok"})


async def openapi(request: Request) -> Response:
    """The OpenAPI document of this API, built from the handlers' docstrings."""
    return JSONResponse(schemas.get_schema(routes=request.app.routes))


ROUTES = [
    # First, because routes are matched in order and deliveries are the hot path.
    Route("/webhooks/{instance}/{flow}", receive_webhook, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/connections/{id}/oauth/start", oauth_start, methods=["GET"]),
    Route("/oauth/callback", oauth_callback, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    Route("/api/component", component_spec, methods=["GET"]),
    Route("/api/connections", create_connection, methods=["POST"]),
    Route("/api/connections", list_connections, methods=["GET"]),
    Route("/api/connections/{ref}", get_connection, methods=["GET"]),
    Route("/api/connections/{ref}", update_connection, methods=["PUT"]),
    Route("/api/connections/{ref}", delete_connection, methods=["DELETE"]),
    Route("/api/instances", deploy_instance, methods=["POST"]),
    Route("/api/instances", list_instances, methods=["GET"]),
    Route("/api/instances/{name}", get_instance, methods=["GET"]),
    Route("/api/instances/{name}", redeploy_instance, methods=["PUT"]),
    Route("/api/instances/{name}", delete_instance, methods=["DELETE"]),
    Route("/api/instances/{name}/{action:str}", set_enabled, methods=["POST"]),
    Route("/api/instances/{name}/flows/{flow}/test", test_flow, methods=["POST"]),
    Route("/api/executions", list_executions, methods=["GET"]),
    Route("/api/executions/{id}", get_execution, methods=["GET"]),
    Route("/api/test-runs", run_test_step, methods=["POST"]),
]


class AdminAuth:
    """Requires ``Authorization: Bearer <admin token>`` on every ``/api/`` route.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` spawns a task group
    and memory streams per request, which would tax every webhook delivery too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Reject unauthenticated management calls before any handler runs."""
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            request = Request(scope)
            expected = f"Bearer {request.app.state.engine.settings.admin_token}"
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                denied = _error(401, "Unauthorized", "a valid admin bearer token is required")
                await denied(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": kind, "message": redact(message), **extra}}, status_code=status
    )


async def _input_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    return _error(400, "InputError", str(exc), step=exc.action, input=exc.input_key)


async def _pagerduty_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PagerDutyError)
    return _error(502, "PagerDutyError", str(exc), pagerduty=exc.to_dict())


async def _signature_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SignatureError)
    log.warning("refused a webhook for %s: %s", request.url.path, exc)
    return _error(exc.status, "SignatureError", str(exc))


async def _deploy_error(request: Request, exc: Exception) -> JSONResponse:
    return _error(502, "DeployError", str(exc))


async def _component_error(request: Request, exc: Exception) -> JSONResponse:
    status = 500 if isinstance(exc, ManifestError) else 400
    kind = "ConfigurationError" if isinstance(exc, ConfigurationError) else type(exc).__name__
    return _error(status, kind, str(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, "HTTPError", str(exc.detail))


EXCEPTION_HANDLERS = {
    InputError: _input_error,
    PagerDutyError: _pagerduty_error,
    SignatureError: _signature_error,
    DeployError: _deploy_error,
    ComponentError: _component_error,
    HTTPException: _http_error,
}
