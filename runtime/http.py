"""Request helpers shared by the routes: the engine, bodies, validation, lookups."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from pagerduty_connector.component.documents import DocumentError, load_json, load_yaml
from pagerduty_connector.component.errors import did_you_mean

if TYPE_CHECKING:
    from pagerduty_connector.runtime.engine import Engine

RowT = TypeVar("RowT")
ModelT = TypeVar("ModelT", bound=BaseModel)


def engine_of(request: Request) -> Engine:
    """The engine the app was started with."""
    return request.app.state.engine


# The largest body the management API reads: an instance of many flows is tens of KB.
MAX_BODY_BYTES = 1024 * 1024


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, or a 413 as soon as it passes ``limit`` bytes (it is never read
    whole into memory past that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body is over {limit // 1024} KB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is over {limit // 1024} KB")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (or YAML, when sent as ``application/yaml``), checked to
    be plain JSON within bounds (``component/documents.py``); a 400 naming what is wrong."""
    raw = await read_body(request) or b"{}"
    as_yaml = "yaml" in request.headers.get("content-type", "")
    kind = "YAML mapping" if as_yaml else "JSON object"
    try:
        body = load_yaml(raw) if as_yaml else load_json(raw)
    except DocumentError as exc:
        hint = "" if as_yaml else _yaml_hint(raw)
        raise HTTPException(400, f"request body: {exc}{hint}") from None
    if not isinstance(body, dict):
        raise HTTPException(400, f"request body must be a {kind}")
    return body


def _yaml_hint(raw: bytes) -> str:
    """A hint when a body that is not JSON reads as a YAML mapping: its content type."""
    try:
        looks_like_yaml = isinstance(load_yaml(raw), dict)
    except DocumentError:
        return ""
    return (
        "; it reads as YAML: send it with Content-Type: application/yaml" if looks_like_yaml else ""
    )


def parse(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    """Validate ``body`` with ``model``; a 400 listing each field's problem."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise HTTPException(400, problems) from None


# Names read to suggest the nearest one (instances, connections: a few dozen at most).
NEAREST_OF = 1000


async def nearest(db: AsyncSession, column: Any, name: str) -> str:
    """``did_you_mean``'s hint for ``name`` among the values of ``column`` (names people
    gave: instances, connections), or ``""``."""
    names = (await db.execute(select(column).limit(NEAREST_OF))).scalars()
    return did_you_mean(name, names)


async def row_or_404(
    db: AsyncSession, model: type[RowT], key: str, what: str, *, suggest: bool = True
) -> RowT:
    """The row of ``model`` with primary key ``key``, or a 404 naming what is missing and,
    with ``suggest`` (rows named by people, not generated ids), the nearest name."""
    row = await db.get(model, key)
    if row is None:
        column = model.__mapper__.primary_key[0]  # type: ignore[attr-defined]
        hint = await nearest(db, column, key) if suggest else ""
        raise HTTPException(404, f"no {what} '{key}'{hint}")
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
