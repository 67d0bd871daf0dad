"""``rawRequest``: any REST call with the connection's auth and PagerDuty headers.

The URL is relative to the connection's API base; an absolute URL is accepted
only when it points at that same base host, so the token never leaves for a
foreign host.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

from pagerduty_connector.component.client import RetryPolicy, decode_json
from pagerduty_connector.component.context import StepContext
from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.inputs import CleanedInputs
from pagerduty_connector.component.redact import redact, redact_mapping
from pagerduty_connector.component.registry import action

KEY = "rawRequest"


def resolve_url(ctx: StepContext, url: str) -> tuple[str, str]:
    """Return ``(absolute URL, path for messages)`` or refuse a foreign host."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        base = urlsplit(ctx.client.rest_url)
        if (parts.scheme, parts.netloc.lower()) != (base.scheme, base.netloc.lower()):
            raise InputError(
                KEY,
                "url",
                f"refusing to send the connection's credentials to {parts.scheme}://"
                f"{parts.netloc}: use a path relative to {ctx.client.rest_url} "
                "(for example /incidents)",
            )
        return url, parts.path or "/"
    path = "/" + url.lstrip("/")
    return ctx.client.url_for(path), urlsplit(path).path


def retry_policy(inputs: CleanedInputs) -> RetryPolicy:
    """The step's own retry settings (the reference's defaults: no retries)."""
    delay_ms = inputs.get("retryDelayMS") or 0
    exponential = bool(inputs.get("useExponentialBackoff"))
    return RetryPolicy(
        max_retries=inputs.get("maxRetries") or 0,
        base_delay=(delay_ms / 1000) if not exponential else max(delay_ms / 1000, 0.5),
        exponential=exponential,
        jitter=exponential,
        retry_all_errors=bool(inputs.get("retryAllErrors")),
    )


def _multipart(
    inputs: CleanedInputs,
) -> tuple[dict[str, Any] | None, list[tuple[str, tuple[str, bytes, str]]] | None]:
    form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in inputs.get("formData") or []}
    names = dict(inputs.get("fileDataFileNames") or [])
    files = []
    for key, value in inputs.get("fileData") or []:
        content = value.encode() if isinstance(value, str) else json.dumps(value).encode()
        files.append((key, (str(names.get(key) or key), content, "application/octet-stream")))
    return form or None, files or None


def _result(response: Any, response_type: str, method: str, path: str) -> dict[str, Any]:
    if response_type == "json":
        data: Any = decode_json(response, method, path)
    elif response_type in ("text", "document"):
        data = response.text
    else:
        data = base64.b64encode(response.content).decode("ascii")
    result = {"data": data, "statusCode": response.status_code}
    if response_type in ("binary", "arraybuffer"):
        result["encoding"] = "base64"
        result["contentType"] = response.headers.get("content-type")
    return result


@action(KEY)
async def raw_request(ctx: StepContext, inputs: CleanedInputs) -> dict[str, Any]:
    """Send the request as described by the inputs and return its body."""
    url, path = resolve_url(ctx, inputs["url"])
    method = inputs["method"]
    data = inputs.get("data")
    form, files = _multipart(inputs)
    if data is not None and (form or files):
        raise InputError(KEY, "data", "cannot be combined with formData or fileData")
    headers = {k: str(v) for k, v in inputs.get("headers") or []}
    timeout_ms = inputs.get("timeout")
    if inputs.get("debugRequest"):
        ctx.logger.info(
            "rawRequest debug: %s %s params=%s headers=%s body=%s",
            method,
            path,
            redact_mapping(dict(inputs.get("queryParams") or [])),
            redact_mapping(headers),
            redact(json.dumps(data)[:2000]) if data is not None else None,
        )
    response = await ctx.client.request(
        method,
        path,
        url=url,
        params=list(inputs.get("queryParams") or []),
        json=data if isinstance(data, dict | list) else None,
        content=data if isinstance(data, str) else None,
        data=form,
        files=files,
        headers=headers,
        from_email=inputs.get("from"),
        retry=retry_policy(inputs),
        timeout=timeout_ms / 1000 if timeout_ms else None,
    )
    if inputs.get("debugRequest"):
        ctx.logger.info("rawRequest debug: %s %s -> %s", method, path, response.status_code)
    return _result(response, inputs["responseType"], method, path)
