"""Webhook intake, the hot path: verify a delivery, record it durably, answer, run later."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from pagerduty_connector.component.contracts import Trigger
from pagerduty_connector.component.errors import SignatureError
from pagerduty_connector.component.redact import redact
from pagerduty_connector.component.registry import TRIGGERS
from pagerduty_connector.runtime.durable import placement
from pagerduty_connector.runtime.engine import Engine
from pagerduty_connector.runtime.flows import concurrency_key
from pagerduty_connector.runtime.http import engine_of
from pagerduty_connector.runtime.intake import IntakeTarget
from pagerduty_connector.runtime.store import (
    new_id,
    now,
)
from pagerduty_connector.runtime.store.writer import QUEUE_KEY

MAX_WEBHOOK_BYTES = 2 * 1024 * 1024
_DROPPED_HEADERS = {"authorization", "cookie", "proxy-authorization"}


async def record(
    engine: Engine,
    target: IntakeTarget,
    flow: dict[str, Any],
    body: bytes,
    headers: dict[str, str],
    output: dict[str, Any],
    replay_of: str | None = None,
) -> JSONResponse:
    """Store the delivery as an execution, then start it unless there is a reason not to."""
    trigger = TRIGGERS[flow["trigger"]["type"]]
    reason = None
    if not target.enabled:
        reason = "instance is disabled"
    else:
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
        "retry_of": None,
        "replay_of": replay_of,
    }
    if reason is None:  # its run is queued in the transaction that records it
        key = concurrency_key(flow, output)
        row[QUEUE_KEY] = placement(target.instance_id, flow["name"], key)
    if not await engine.writer.record(row):
        return JSONResponse({"duplicate": True, "webhookId": row["webhook_id"]}, status_code=200)
    return JSONResponse({"execution": row["id"], "status": status}, status_code=202)


async def flow_of(
    engine: Engine, instance_id: str, flow_name: str, *, fresh: bool = False
) -> tuple[IntakeTarget, dict[str, Any]]:
    """The instance's intake view and the named flow, or a 404; ``fresh`` reads it again
    unless it was just read."""
    cache = engine.intake
    target = await (cache.refresh(instance_id) if fresh else cache.get(instance_id))
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
    instance, flow_name = request.path_params["instance"], request.path_params["flow"]
    headers = {k: v for k, v in request.headers.items() if k not in _DROPPED_HEADERS}

    async def verified(fresh: bool) -> tuple[IntakeTarget, dict[str, Any], Trigger]:
        target, flow = await flow_of(engine, instance, flow_name, fresh=fresh)
        trigger = TRIGGERS[flow["trigger"]["type"]]
        trigger.verify(body, headers, target.secrets.get(flow_name, []))
        return target, flow, trigger

    try:
        target, flow, trigger = await verified(fresh=False)
    except (HTTPException, SignatureError) as refused:
        if getattr(refused, "status_code", getattr(refused, "status", 0)) not in (403, 404):
            raise
        # Another process may have just deployed: read the instance again, then decide.
        target, flow, trigger = await verified(fresh=True)
    return await record(engine, target, flow, body, headers, trigger.output(body, headers))


async def health(request: Request) -> JSONResponse:
    """
    summary: Liveness
    responses:
      200: {description: ok}
    """
    return JSONResponse({"status": "ok"})
