"""The execution log, and test runs of one action or data source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from dbos import DBOS
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from pagerduty_connector.runtime.durable import PLAN_STEP, UNFINISHED, partition
from pagerduty_connector.runtime.flows import Flow, changed_before
from pagerduty_connector.runtime.http import engine_of, json_body, parse, row_or_404, shown
from pagerduty_connector.runtime.routes.connections import find_connection
from pagerduty_connector.runtime.routes.webhooks import flow_of, json_answer, record
from pagerduty_connector.runtime.store import ExecutionRow, InstanceRow, new_id, now, select


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
        "retryOf": row.retry_of,
        "replayOf": row.replay_of,
        "flowVersion": row.flow_version,
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
    summary: List executions, newest first (filters instance, flow, status, error text,
      since an ISO time; limit)
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
    if params.get("error"):
        query = query.where(ExecutionRow.error.contains(params["error"], autoescape=True))
    if params.get("since"):
        try:
            since = datetime.fromisoformat(params["since"])
        except ValueError:
            raise HTTPException(400, "since must be an ISO 8601 time") from None
        query = query.where(ExecutionRow.received_at >= since.replace(tzinfo=since.tzinfo or UTC))
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
    return await shown(
        request, ExecutionRow, "id", "execution", lambda row: execution_view(row, full=True)
    )


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


RETRYABLE = ("failed", "cancelled", "succeeded_with_errors")


class RetryIn(BaseModel):
    """How to retry: on the flow the failed run ran (``deployed``, the default) or on
    the instance's flow as it is now (``current``: a fix deployed since)."""

    model_config = ConfigDict(extra="forbid")
    flow: Literal["deployed", "current"] = "deployed"


async def retry_execution(request: Request) -> JSONResponse:
    """
    summary: Retry an ended, unsucceeded execution from where it failed (earlier steps keep
      their outputs and are not sent again), on the flow it ran or on the current one
    requestBody: {description: 'optional: {"flow": "deployed"} (default) or {"flow": "current"}'}
    responses:
      202: {description: the new execution, which points at the original (retryOf)}
      400: {description: the body is not a retry's}
      404: {description: no such execution}
      409: {description: "the execution is still running, succeeded or was skipped; or, on the
        current flow, a step before the failed one changed or the flow is gone"}
    """
    engine = engine_of(request)
    wanted: RetryIn = parse(RetryIn, await json_body(request))
    async with engine.store.session() as db:
        original = await row_or_404(
            db, ExecutionRow, request.path_params["id"], "execution", suggest=False
        )
        instance = await db.get(InstanceRow, original.instance_id)
    if original.status not in RETRYABLE:
        advice = {
            "skipped": f"it was skipped ({original.reason}): replay it to run its event",
            "succeeded": "it succeeded: replay it to run its event again",
        }.get(original.status, "it has not ended yet")
        raise HTTPException(409, f"execution '{original.id}' is {original.status}: {advice}")
    definition = original.flow_definition  # a retry's own flow, else the first plan's
    if wanted.flow == "current":
        definition = await _current_flow(original, instance)
    checkpoint = await engine.durable.retry_point(original)
    received = now()
    retry = {
        column.name: getattr(original, column.key) for column in ExecutionRow.__table__.columns
    }
    retry.update(
        id=new_id(),
        webhook_id=None,
        event_id=None,
        status="received",
        reason=None,
        steps=[],
        error=None,
        received_at=received,
        started_at=received,
        finished_at=None,
        retry_of=original.id,
        replay_of=None,
        flow_version=wanted.flow,
        flow_definition=definition,
    )
    await engine.writer.record(retry)
    await engine.durable.fork(
        original.id,
        checkpoint,
        retry["id"],
        partition(original.instance_id, original.flow),
        patient=await engine.patient(original.instance_id, original.flow),
    )
    answer = {"execution": retry["id"], "retryOf": original.id, "flowVersion": wanted.flow}
    return JSONResponse(answer, status_code=202)


async def _current_flow(original: ExecutionRow, instance: InstanceRow | None) -> dict[str, Any]:
    """The instance's flow now, if a retry of ``original`` can run on it: the steps
    before the failed one (whose outputs the retry keeps) must be as they ran; a 409
    naming the first that changed otherwise."""
    current = (
        next((f for f in instance.flows if f["name"] == original.flow), None) if instance else None
    )
    if current is None:
        raise HTTPException(
            409, f"flow '{original.flow}' is no longer deployed: retry on the deployed flow"
        )
    ran = original.flow_definition or await _planned_flow(original.id)
    if ran is not None:
        changed = changed_before(
            Flow.model_validate(ran), Flow.model_validate(current), original.steps or []
        )
        if changed is not None:
            raise HTTPException(
                409,
                f"step '{changed}' changed since the run, and it ran before the step that "
                "failed: a retry keeps its output, so it cannot run on the current flow; "
                "replay the execution to run the current flow from the start",
            )
    return current


async def _planned_flow(execution_id: str) -> dict[str, Any] | None:
    """The flow an execution's run planned (its first checkpoint), if it got that far."""
    for step in await DBOS.list_workflow_steps_async(execution_id):
        if step["function_name"] == PLAN_STEP and isinstance(step["output"], dict):
            return step["output"].get("flow")
    return None


async def cancel_execution(request: Request) -> JSONResponse:
    """
    summary: Cancel an execution that has not ended (a queued run never starts; a running
      one stops before its next step; Retry runs it on from there)
    responses:
      200: {description: the execution, now cancelled}
      404: {description: no such execution}
      409: {description: the execution has ended}
    """
    engine = engine_of(request)
    async with engine.store.session() as db:
        row = await row_or_404(
            db, ExecutionRow, request.path_params["id"], "execution", suggest=False
        )
    if row.status not in UNFINISHED:
        raise HTTPException(409, f"execution '{row.id}' is {row.status}: it has ended")
    await engine.durable.cancel(row.id)
    await engine.finish(row.id, "cancelled", error="cancelled by an operator")
    async with engine.store.session() as db:
        cancelled = await row_or_404(db, ExecutionRow, row.id, "execution")
    return JSONResponse(execution_view(cancelled, full=False))


async def replay_execution(request: Request) -> JSONResponse:
    """
    summary: Replay an execution (its trigger payload again, on the instance's current flow)
    responses:
      202: {description: the new execution, which points at the original (replayOf)}
      404: {description: no such execution, or its instance or flow is gone}
    """
    engine = engine_of(request)
    async with engine.store.session() as db:
        original = await row_or_404(
            db, ExecutionRow, request.path_params["id"], "execution", suggest=False
        )
    engine.intake.forget(original.instance_id)
    target, flow = await flow_of(engine, original.instance_id, original.flow)
    headers = {**original.headers, "x-pdc-replay-of": original.id}
    headers.pop("x-webhook-id", None)
    body = original.received_body.encode()
    answer = await record(
        engine, target, flow, body, headers, original.trigger or {}, replay_of=original.id
    )
    return json_answer(answer)


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def flow_stats(request: Request) -> JSONResponse:
    """
    summary: A flow's executions per hour by status, and its steps' duration percentiles
      (the last ``hours`` hours, 24 by default, at most 168; retries count in the hours,
      not in the durations)
    responses:
      200: {description: "hours (oldest first) and steps (p50, p95, max in ms)"}
    """
    engine = engine_of(request)
    try:
        hours = min(max(int(request.query_params.get("hours", "24")), 1), 168)
    except ValueError:
        raise HTTPException(400, "hours must be a whole number") from None
    instance, flow = request.path_params["name"], request.path_params["flow"]
    start = now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    query = select(
        ExecutionRow.received_at, ExecutionRow.status, ExecutionRow.steps, ExecutionRow.retry_of
    ).where(
        ExecutionRow.instance_id == instance,
        ExecutionRow.flow == flow,
        ExecutionRow.received_at >= start,
    )
    slots = [start + timedelta(hours=n) for n in range(hours)]
    counts: list[dict[str, int]] = [{} for _ in slots]
    durations: dict[str, list[float]] = {}
    async with engine.store.session() as db:
        for received, status, steps, retry_of in (await db.execute(query)).all():
            received = received if received.tzinfo else received.replace(tzinfo=UTC)
            slot = int((received - start).total_seconds() // 3600)
            if 0 <= slot < hours:
                counts[slot][status] = counts[slot].get(status, 0) + 1
            # A retry replays the steps before the failed one from their checkpoints in
            # no time: its durations would drag the percentiles down.
            for step in [] if retry_of else steps or []:
                if isinstance(step.get("durationMs"), int | float):
                    durations.setdefault(step["name"], []).append(float(step["durationMs"]))
    step_stats = []
    for name, values in durations.items():
        ordered = sorted(values)
        step_stats.append(
            {
                "name": name,
                "count": len(ordered),
                "p50": _percentile(ordered, 0.5),
                "p95": _percentile(ordered, 0.95),
                "max": ordered[-1],
            }
        )
    return JSONResponse(
        {
            "hours": [{"hour": s.isoformat(), **c} for s, c in zip(slots, counts, strict=True)],
            "steps": step_stats,
        }
    )
