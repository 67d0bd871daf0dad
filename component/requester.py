"""The generic requester: runs any action or data source by key.

``run_step`` cleans the inputs, then either executes the action's declared
request (path placeholders, query mapping, body shape, pagination), runs the
picklist of a data source, or hands over to a registered code implementation.
Results follow the reference component: ``{"data": <response body>}``, and for
fetch-all ``{"data": {"<collection>": [...]}}``, plus ``warnings`` when any.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pagerduty_connector.component import registry
from pagerduty_connector.component.context import StepContext
from pagerduty_connector.component.errors import InputError, did_you_mean
from pagerduty_connector.component.inputs import CleanedInputs, clean_inputs
from pagerduty_connector.component.manifest import Action, Body, DataSource, Request
from pagerduty_connector.component.pagination import fetch_all


@dataclass
class PreparedCall:
    """A declared request with every input bound: ready for the client."""

    method: str
    path: str
    params: list[tuple[str, Any]]
    body: Any
    from_email: str | None


def bind_path(owner: str, template: str, names: list[str], inputs: Mapping[str, Any]) -> str:
    """Fill ``{placeholders}`` with URL-escaped input values."""
    path = template
    for name in names:
        value = inputs.get(name)
        if value is None or str(value) == "":
            raise InputError(owner, name, "is required (it is part of the URL)")
        path = path.replace(f"{{{name}}}", quote(str(value), safe=""))
    return path


def query_params(mapping: dict[str, str], inputs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Map inputs to query parameters; list values repeat the ``name[]`` parameter."""
    params: list[tuple[str, Any]] = []
    for key, name in mapping.items():
        value = inputs.get(key)
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            params.append((name, item))
    return params


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def _reference(value: Any, kind: str) -> Any:
    """An id as PagerDuty's ``{"id": ..., "type": kind}``; each of a list likewise."""
    if isinstance(value, list):
        return [_reference(item, kind) for item in value]
    return {"id": value, "type": kind} if isinstance(value, str) else value


def build_body(owner: str, spec: Body, inputs: Mapping[str, Any]) -> Any:
    """Shape the JSON body; accepts wrapped and unwrapped values, never double-wraps."""
    if spec.fields is not None:
        body: dict[str, Any] = {}
        for dotted, key in spec.fields.items():
            if inputs.get(key) is not None:
                value = inputs[key]
                if key in spec.references:
                    value = _reference(value, spec.references[key])
                _set_dotted(body, dotted, value)
        return body
    assert spec.input is not None
    value = inputs.get(spec.input)
    if spec.wrapper is None:
        return value
    if isinstance(value, dict) and set(value) == {spec.wrapper}:
        value = value[spec.wrapper]
    if spec.stringField and isinstance(value, str):
        value = {spec.stringField: value}
    if spec.list and isinstance(value, dict):
        value = [value]
    expected = list if spec.list else dict
    if not isinstance(value, expected):
        shape = "an array" if spec.list else "a JSON object"
        raise InputError(
            owner,
            spec.input,
            f"expected {shape} (optionally wrapped as {{{spec.wrapper!r}: ...}}), "
            f"got {type(value).__name__}",
        )
    return {spec.wrapper: value}


def prepare(action: Action, inputs: Mapping[str, Any]) -> PreparedCall:
    """Bind a declarative action's inputs into a ``PreparedCall``."""
    req: Request = action.request  # type: ignore[assignment]
    return PreparedCall(
        method=req.method,
        path=bind_path(action.key, req.path, req.path_params, inputs),
        params=query_params(req.query, inputs),
        body=build_body(action.key, req.body, inputs) if req.body else None,
        from_email=inputs.get("from"),
    )


async def execute_request(
    ctx: StepContext, action: Action, inputs: CleanedInputs
) -> dict[str, Any]:
    """Run a declarative action and shape its result."""
    req = action.request
    assert req is not None
    call = prepare(action, inputs)
    default_from = ctx.client.connection.from_email if ctx.client.connection else None
    if req.requiresFrom and not (call.from_email or default_from):
        raise InputError(
            action.key,
            "from",
            "PagerDuty requires a From header (the email of a user on the account) for this "
            "request: set this input or the connection's default From email",
        )
    if req.paginate and inputs.get("fetchAll"):
        page = await fetch_all(
            ctx.client, call.path, req.paginate.collection, call.params, ctx.progress
        )
        result: dict[str, Any] = {"data": {req.paginate.collection: page.items}}
        if page.warnings:
            result["warnings"] = page.warnings
        return result
    body = await ctx.client.request_json(
        call.method,
        call.path,
        base=req.base,
        params=call.params,
        json=call.body,
        from_email=call.from_email,
        requires_from=req.requiresFrom,
    )
    return {"data": body}


async def run_step(ctx: StepContext, key: str, raw_inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Run the action or data source ``key`` with ``raw_inputs``; return its result."""
    try:
        item = ctx.manifest.runnable(key)
    except KeyError:
        hint = did_you_mean(key, ctx.manifest.runnable_keys())
        raise InputError(key, None, f"no action or data source has this key{hint}") from None
    inputs = clean_inputs(key, item.inputs, raw_inputs)
    if isinstance(item, DataSource):
        result = await registry.DATASOURCE_KINDS[item.type](ctx, item, inputs)
    elif item.request is not None:
        result = await execute_request(ctx, item, inputs)
    else:
        result = await registry.ACTIONS[key](ctx, inputs)
    if inputs.warnings:
        result["warnings"] = [*inputs.warnings, *result.get("warnings", [])]
    return result
