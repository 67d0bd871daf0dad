"""Connections: create (an API key is checked with PagerDuty first), read, rotate, delete.

Secrets are sealed at rest and shown as ``***``, never returned.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pagerduty_connector.component.client import RetryPolicy
from pagerduty_connector.component.errors import (
    InputError,
    PagerDutyError,
    did_you_mean,
)
from pagerduty_connector.component.inputs import clean_inputs
from pagerduty_connector.component.manifest import Input
from pagerduty_connector.component.redact import MASK
from pagerduty_connector.connections.oauth import OAUTH_TYPE
from pagerduty_connector.runtime.consent import consent_url
from pagerduty_connector.runtime.deploy import credentials_of
from pagerduty_connector.runtime.engine import Engine
from pagerduty_connector.runtime.flows import Flow
from pagerduty_connector.runtime.http import engine_of, json_body, listed, nearest, parse
from pagerduty_connector.runtime.outbound import CREDENTIAL_TYPES
from pagerduty_connector.runtime.store import (
    ConnectionRow,
    InstanceRow,
    now,
    select,
)
from pagerduty_connector.runtime.tokens import oauth_status

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class ConnectionIn(BaseModel):
    """A connection to create: its name, type and input values."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME.pattern)
    type: str
    config: dict[str, Any] = Field(default_factory=dict)


class ConnectionUpdateIn(BaseModel):
    """A change to a connection: new input values (a rotated key, say). ``name`` and
    ``type`` may be sent back as read, but cannot change."""

    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None
    type: str | None = None


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


def connection_inputs(engine: Engine, type_key: str) -> list[Input]:
    """The inputs of a connection type: the component's (PagerDuty), or an http step's
    credential (``runtime/outbound.py``); ``InputError`` naming the nearest type."""
    declared = next((c for c in engine.manifest.connections if c.key == type_key), None)
    if declared is not None:
        return declared.inputs
    if type_key in CREDENTIAL_TYPES:
        return CREDENTIAL_TYPES[type_key]
    known = [*(c.key for c in engine.manifest.connections), *CREDENTIAL_TYPES]
    hint = did_you_mean(type_key, known)
    raise InputError(
        "connection", "type", f"unknown connection type{hint} (known: {', '.join(known)})"
    )


def split_connection_inputs(
    engine: Engine, type_key: str, values: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Clean a connection's inputs; return ``(plain config, secrets)``."""
    inputs = connection_inputs(engine, type_key)
    cleaned = clean_inputs(type_key, inputs, values)
    secret = {i.key for i in inputs if i.secret}
    plain = {k: v for k, v in cleaned.items() if k not in secret and v is not None}
    return plain, {k: v for k, v in cleaned.items() if k in secret and v is not None}


# How the key check retries: once, within seconds (see verify_api_key).
CHECK_RETRY = RetryPolicy(max_retries=1, budget=5.0)


async def verify_api_key(engine: Engine, row: ConnectionRow) -> None:
    """Ask PagerDuty ``GET /abilities``; a rejected key is a clear 400, nothing stored."""
    if row.type != "pagerduty-api-key":
        return
    async with engine.client(engine.connection_config(row)) as client:
        try:
            # A person waits on this answer: one quick retry, not a flow step's patience.
            await client.request("GET", "/abilities", retry=CHECK_RETRY, timeout=10.0)
        except PagerDutyError as exc:
            if exc.status in (401, 403):
                raise InputError(
                    "connection",
                    "apiKey",
                    f"PagerDuty rejected the API key (HTTP {exc.status}: {exc.message})",
                ) from None
            if exc.status is None:
                exc.add(
                    "; the key was not checked and nothing was stored: try again, or check "
                    "the connection's region and PAGERDUTY_API_URL"
                )
            raise


async def find_connection(engine: Engine, ref: str) -> ConnectionRow:
    """A connection by id or name, or 404."""
    async with engine.store.session() as db:
        row = await db.get(ConnectionRow, ref)
        if row is None:
            query = select(ConnectionRow).where(ConnectionRow.name == ref)
            row = (await db.execute(query)).scalar_one_or_none()
        if row is None:
            hint = await nearest(db, ConnectionRow.name, ref)
            raise HTTPException(404, f"no connection '{ref}'{hint}")
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
    return await listed(engine_of(request), query, connection_view)


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
    change = parse(ConnectionUpdateIn, await json_body(request))
    for field in ("name", "type"):
        given = getattr(change, field)
        if given is not None and given != getattr(row, field):
            raise InputError("connection", field, f"cannot change ({getattr(row, field)!r})")
    keys = {i.key for i in connection_inputs(engine, row.type)}
    stored_secrets = engine.box.open(row.secrets)
    merged = {
        **{k: v for k, v in row.config.items() if k in keys},
        **{k: v for k, v in stored_secrets.items() if k in keys},
        **change.config,
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
        await engine.intake.announce()
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
        if row.type in CREDENTIAL_TYPES:  # named by http steps, not held by the instance
            instances = (await db.execute(select(InstanceRow.id, InstanceRow.flows))).all()
            users = sorted(
                name
                for name, flows in instances
                if any(
                    row.name in dict(credentials_of(Flow.model_validate(f))).values() for f in flows
                )
            )
        if users:
            raise HTTPException(
                409, f"connection '{row.name}' is used by instances: {', '.join(users)}"
            )
        stored = await db.get(ConnectionRow, row.id)
        await db.delete(stored)
        await db.commit()
    return Response(status_code=204)
