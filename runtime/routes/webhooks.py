"""Webhook intake, the hot path: verify a delivery, record it durably, answer, run later.

``receive_webhook`` is a plain ASGI endpoint (``AsgiRoute``): no ``Request`` or
``Response`` object per delivery, which cost intake a tenth of its CPU. Refusals are
raised as the same exceptions as elsewhere, so the app's exception handlers answer them.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pagerduty_connector.component.contracts import Trigger
from pagerduty_connector.component.errors import SignatureError, did_you_mean
from pagerduty_connector.component.redact import redact, redact_data
from pagerduty_connector.component.registry import TRIGGERS
from pagerduty_connector.runtime.durable import placement
from pagerduty_connector.runtime.engine import Engine
from pagerduty_connector.runtime.flows import concurrency_key
from pagerduty_connector.runtime.intake import IntakeTarget
from pagerduty_connector.runtime.store import (
    new_id,
    now,
)
from pagerduty_connector.runtime.store.writer import QUEUE_KEY

MAX_WEBHOOK_BYTES = 2 * 1024 * 1024
_DROPPED_HEADERS = {b"authorization", b"cookie", b"proxy-authorization"}
_JSON_HEADERS = [(b"content-type", b"application/json")]
# Made once: json.dumps with any option builds a new encoder per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class AsgiRoute(Route):
    """A route whose endpoint is a plain ASGI function ``(scope, receive, send)``.

    Starlette would wrap a function endpoint as ``request -> response``; this one is
    called as it is. Its docstring still documents the operation in ``/openapi.json``.
    """

    def __init__(self, path: str, endpoint: ASGIApp, *, methods: list[str]) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.app = endpoint


async def record(
    engine: Engine,
    target: IntakeTarget,
    flow: dict[str, Any],
    body: bytes,
    headers: dict[str, str],
    output: dict[str, Any],
    replay_of: str | None = None,
    signed: bool = False,
    event_id: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Store the delivery as an execution, its run queued in the same commit unless there
    is a reason not to; the answer's status and JSON body. A ``signed`` delivery keeps
    PagerDuty's event id, so the same event sent again (under any ``X-Webhook-Id``)
    starts nothing; so does a schedule's tick (its ``event_id`` is the tick's time)."""
    trigger = TRIGGERS.get(flow["trigger"]["type"])  # None: a schedule
    reason = None
    if not target.enabled:
        reason = "instance is disabled"
    elif trigger is not None:
        reason = trigger.skip_reason(output, flow["trigger"]["inputs"])
    status = "received" if reason is None else "skipped"
    received = now()
    text = body.decode("utf-8", "replace")
    masked = redact(text)
    # Without a backslash in the body no JSON escape can spell a secret the text scan
    # missed, so the event (parsed from this text) needs its own walk only when the
    # scan found one or the body has escapes: 20 us a delivery saved, nearly always.
    if masked != text or "\\" in text:
        output = redact_data(output)
    joined = "\n".join(headers.values())
    if redact(joined) != joined:
        headers = {name: redact(value) for name, value in headers.items()}
        output = {**output, "headers": {k.lower(): v for k, v in headers.items()}}
    row = {
        "id": new_id(),
        "instance_id": target.instance_id,
        "flow": flow["name"],
        "webhook_id": headers.get("x-webhook-id"),
        "event_id": event_id or (_event_id(output) if signed else None),
        "status": status,
        "reason": reason,
        "received_body": masked,
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
        patient = flow["name"] in target.patient
        row[QUEUE_KEY] = placement(target.instance_id, flow["name"], key, patient=patient)
    if reason is None:  # the run, started here, plans from this instead of the row
        engine.durable.remember(row["id"], target.instance_id, flow["name"], output)
    recorded = False
    try:
        recorded = await engine.writer.record(row)
    finally:
        if not recorded:
            engine.durable.planned.pop(row["id"], None)
    if not recorded:
        return 200, {"duplicate": True, "webhookId": row["webhook_id"], "eventId": row["event_id"]}
    return 202, {"execution": row["id"], "status": status}


def _event_id(output: dict[str, Any]) -> str | None:
    """PagerDuty's id of a delivered event, when it has a usable one."""
    event_id = output["event"].get("id")
    return event_id if isinstance(event_id, str) and 0 < len(event_id) <= 200 else None


def json_answer(answer: tuple[int, dict[str, Any]]) -> JSONResponse:
    """``record``'s answer as a response, for the management API's handlers."""
    status, payload = answer
    return JSONResponse(payload, status_code=status)


async def flow_of(
    engine: Engine,
    instance_id: str,
    flow_name: str,
    *,
    fresh: bool = False,
    suggest: bool = False,
) -> tuple[IntakeTarget, dict[str, Any]]:
    """The instance's intake view and the named flow, or a 404; ``fresh`` reads it again
    unless it was just read. ``suggest`` names the nearest flow (for the admin: a
    delivery's sender is not told the instance's other flows)."""
    cache = engine.intake
    target = await (cache.refresh(instance_id) if fresh else cache.get(instance_id))
    flow = target.flows.get(flow_name) if target else None
    if target is None or flow is None:
        hint = did_you_mean(flow_name, target.flows) if suggest and target else ""
        raise HTTPException(404, f"no flow '{flow_name}' in instance '{instance_id}'{hint}")
    return target, flow


async def receive_webhook(scope: Scope, receive: Receive, send: Send) -> None:
    """
    summary: Receive a signed PagerDuty webhook for one flow; recorded before it is answered
    responses:
      202: {description: recorded; the flow runs in the background (or is skipped, with why)}
      200: {description: "a redelivery (same X-Webhook-Id, or the same event id) already
        recorded; nothing new starts"}
      400: {description: unsigned, malformed signature, or not a V3 webhook event}
      403: {description: the signature matches no secret held for this flow}
      404: {description: no such instance or flow}
      413: {description: body over 2 MB}
    """
    engine: Engine = scope["app"].state.engine
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name not in _DROPPED_HEADERS:
            headers[name.decode("latin-1")] = value.decode("latin-1")
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        raise HTTPException(413, "webhook body is over 2 MB")
    body = await _body(receive)
    if body is None:  # the sender went away: nobody to answer, nothing recorded
        return
    instance, flow_name = scope["path_params"]["instance"], scope["path_params"]["flow"]

    async def verified(fresh: bool) -> tuple[IntakeTarget, dict[str, Any], Trigger]:
        target, flow = await flow_of(engine, instance, flow_name, fresh=fresh)
        trigger = TRIGGERS.get(flow["trigger"]["type"])
        if trigger is None:
            raise HTTPException(404, f"flow '{flow_name}' runs on a schedule: it takes no webhooks")
        trigger.verify(body, headers, target.secrets.get(flow_name, []))
        return target, flow, trigger

    try:
        target, flow, trigger = await verified(fresh=False)
    except (HTTPException, SignatureError) as refused:
        if getattr(refused, "status_code", getattr(refused, "status", 0)) not in (403, 404):
            raise
        # Another process may have just deployed: read the instance again, then decide.
        target, flow, trigger = await verified(fresh=True)
    output = trigger.output(body, headers)
    status, payload = await record(engine, target, flow, body, headers, output, signed=True)
    answer = _ENCODE(payload).encode()
    headers_out = [*_JSON_HEADERS, (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers_out})
    await send({"type": "http.response.body", "body": answer})


async def _body(receive: Receive) -> bytes | None:
    """The request body, or ``None`` if the client disconnected; a 413 past 2 MB."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_WEBHOOK_BYTES:
            raise HTTPException(413, "webhook body is over 2 MB")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def health(request: Request) -> JSONResponse:
    """
    summary: Liveness (the process answers; restart it if this fails)
    responses:
      200: {description: ok}
    """
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    """
    summary: Readiness (this process can record a delivery now; send it traffic)
    responses:
      200: {description: ready}
      503: {description: "not ready: what is wrong, by part (engine, database, writer)"}
    """
    problems = await request.app.state.engine.readiness()
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})
