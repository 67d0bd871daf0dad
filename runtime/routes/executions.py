"""The execution log, and test runs of one action or data source."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from pagerduty_connector.runtime.http import engine_of, json_body, parse, shown
from pagerduty_connector.runtime.routes.connections import find_connection
from pagerduty_connector.runtime.store import (
    ExecutionRow,
    select,
)


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
