"""Instances: deploy (validated, then the triggers' deploy hooks), read, redeploy,
enable and disable, tear down, and test a flow with a sample payload.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pagerduty_connector.component.errors import (
    ComponentError,
    DeployError,
)
from pagerduty_connector.component.redact import get_logger, redact
from pagerduty_connector.component.registry import TRIGGERS
from pagerduty_connector.runtime import schedules, state
from pagerduty_connector.runtime.deploy import (
    check_credentials,
    deploy,
    scopes_needed,
    teardown,
    validate_flows,
)
from pagerduty_connector.runtime.engine import Engine
from pagerduty_connector.runtime.flows import Flow
from pagerduty_connector.runtime.http import (
    engine_of,
    json_body,
    listed,
    parse,
    read_body,
    row_or_404,
)
from pagerduty_connector.runtime.routes.connections import NAME, find_connection
from pagerduty_connector.runtime.routes.webhooks import (
    MAX_WEBHOOK_BYTES,
    flow_of,
    json_answer,
    record,
)
from pagerduty_connector.runtime.store import (
    InstanceRow,
    SubscriptionRow,
    now,
    select,
)
from pagerduty_connector.runtime.tokens import check_scopes

log = get_logger("instances")


class InstanceIn(BaseModel):
    """An instance to deploy: name, connection, flows and whether it is enabled."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME.pattern)
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
        "webhookUrls": {
            f["name"]: engine.webhook_url(row.id, f["name"])
            for f in row.flows
            if not schedules.is_scheduled(f)
        },
        "schedules": {
            f["name"]: {
                **f["trigger"]["inputs"],
                "next": schedules.next_runs(f["trigger"]["inputs"]),
            }
            for f in row.flows
            if schedules.is_scheduled(f) and row.enabled
        },
        "state": row.state,
        "createdAt": row.created_at.isoformat(),
        "updatedAt": row.updated_at.isoformat(),
    }


async def _validated(engine: Engine, data: InstanceIn) -> tuple[str | None, list[str]]:
    """Validate every flow, step and input, and the connection's scopes; return the
    connection id and warnings."""
    warnings = validate_flows(engine, data.name, data.flows)
    await check_credentials(engine, data.flows)
    if data.connection is None:
        return None, warnings
    connection = await find_connection(engine, data.connection)
    check_scopes(connection, scopes_needed(engine, data.flows))
    return connection.id, warnings


async def _deployed(
    engine: Engine, name: str, log: list[str], warnings: list[str], status: int = 200
) -> JSONResponse:
    """The stored instance, with what its deploy did."""
    async with engine.store.session() as db:
        row = await row_or_404(db, InstanceRow, name, "instance")
    view = {**instance_view(engine, row), "deploy": {"log": log, "warnings": warnings}}
    return JSONResponse(view, status_code=status)


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
    connection_id, warnings = await _validated(engine, data)
    row = InstanceRow(
        id=data.name,
        enabled=data.enabled,
        connection_id=connection_id,
        flows=[f.model_dump() for f in data.flows],
        config=data.config,
        state={"deployed": True},
    )
    async with engine.deploys.hold(data.name):
        async with engine.store.session() as db:
            if await db.get(InstanceRow, data.name):
                raise HTTPException(409, f"instance '{data.name}' exists: use PUT to redeploy")
        log = await deploy(engine, row)
    return await _deployed(engine, data.name, log, warnings, status=201)


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
    connection_id, warnings = await _validated(engine, data)
    async with engine.deploys.hold(name):
        async with engine.store.session() as db:
            await row_or_404(db, InstanceRow, name, "instance")
        row = InstanceRow(
            id=name,
            enabled=data.enabled,
            connection_id=connection_id,
            flows=[f.model_dump() for f in data.flows],
            config=data.config,
            state={"deployed": True},
            updated_at=now(),
        )
        log = await deploy(engine, row)
    return await _deployed(engine, name, log, warnings)


async def list_instances(request: Request) -> JSONResponse:
    """
    summary: List instances
    responses:
      200: {description: instances}
    """
    query = select(InstanceRow).order_by(InstanceRow.id)
    return await listed(engine_of(request), query, instance_view)


async def get_instance(request: Request) -> JSONResponse:
    """
    summary: Read one instance, its webhook URLs and the webhook subscriptions it holds
    responses:
      200: {description: the instance}
      404: {description: no such instance}
    """
    engine = engine_of(request)
    async with engine.store.session() as db:
        row = await row_or_404(db, InstanceRow, request.path_params["name"], "instance")
        query = select(SubscriptionRow).where(SubscriptionRow.instance_id == row.id)
        held = (await db.execute(query.order_by(SubscriptionRow.flow))).scalars().all()
    view = instance_view(engine, row)
    # Never the signing secret: the flow, PagerDuty's id and where it delivers.
    view["subscriptions"] = [{"flow": h.flow, "id": h.subscription_id, "url": h.url} for h in held]
    return JSONResponse(view)


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
        await engine.intake.announce(row.id)
        await schedules.sync(engine, row.id)  # a disabled instance keeps no schedule
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
    async with engine.deploys.hold(name):
        async with engine.store.session() as db:
            row = await row_or_404(db, InstanceRow, name, "instance")
        try:
            await teardown(engine, row)
        except ComponentError as exc:
            reason = f"teardown of instance '{name}' is incomplete: {exc}"
            async with engine.store.session() as db:
                kept = await row_or_404(db, InstanceRow, name, "instance")
                kept.enabled, kept.updated_at = False, now()
                kept.state = {"deployed": False, "teardown": "incomplete", "reason": redact(reason)}
                await db.commit()
            await engine.intake.announce(name)
            advice = "the instance is disabled; retry DELETE to finish"
            raise DeployError(f"{reason}; {advice}") from None
        async with engine.store.session() as db:
            await db.execute(delete(SubscriptionRow).where(SubscriptionRow.instance_id == name))
            await db.execute(delete(InstanceRow).where(InstanceRow.id == name))
            await db.commit()
        await state.forget(engine.store, name)
        await schedules.sync(engine, name)
    await engine.intake.announce(name)
    return Response(status_code=204)


async def instance_state(request: Request) -> JSONResponse:
    """
    summary: An instance's key/value store as its flows left it (state steps)
    responses:
      200: {description: "each live key: value, expiresAt, updatedAt"}
      404: {description: no such instance}
    """
    engine = engine_of(request)
    name = request.path_params["name"]
    async with engine.store.session() as db:
        await row_or_404(db, InstanceRow, name, "instance")
    return JSONResponse(await state.listed(engine.store, name))


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
    target, flow = await flow_of(engine, params["name"], params["flow"], suggest=True)
    body = await read_body(request, MAX_WEBHOOK_BYTES)
    if schedules.is_scheduled(flow):  # a tick now; the body is not read
        output = schedules.tick_output(flow["trigger"]["inputs"], now())
        body = json.dumps(output).encode()
    else:
        output = TRIGGERS[flow["trigger"]["type"]].output(body, {})
    return json_answer(await record(engine, target, flow, body, {"x-pdc-test-run": "true"}, output))
