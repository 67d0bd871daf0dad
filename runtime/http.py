"""Request helpers shared by the routes: the engine, bodies, validation, lookups."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from pagerduty_connector.runtime.engine import Engine

RowT = TypeVar("RowT")
ModelT = TypeVar("ModelT", bound=BaseModel)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def engine_of(request: Request) -> Engine:
    """The engine the app was started with."""
    return request.app.state.engine


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (or YAML, when sent as ``application/yaml``), or a 400."""
    raw = await request.body() or b"{}"
    if "yaml" in request.headers.get("content-type", ""):
        try:
            body = yaml.load(raw, Loader=_YAML_LOADER)
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


def parse(model: type[ModelT], body: dict[str, Any]) -> ModelT:
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


async def listed(engine: Engine, query: Any, view: Callable[[Engine, Any], Any]) -> JSONResponse:
    """Every row ``query`` selects, each shown by ``view(engine, row)``."""
    async with engine.store.session() as db:
        rows = (await db.execute(query)).scalars()
        return JSONResponse([view(engine, r) for r in rows])


async def shown(
    request: Request, model: type[RowT], param: str, what: str, view: Callable[[RowT], Any]
) -> JSONResponse:
    """The row named by path parameter ``param``, shown by ``view``, or a 404."""
    async with engine_of(request).store.session() as db:
        row = await row_or_404(db, model, request.path_params[param], what)
    return JSONResponse(view(row))
