"""One table mapping exceptions to JSON error answers: ``{"error": {"type", "message"}}``.

Messages pass through the redactor, so no secret leaves in an error.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from pagerduty_connector.component.errors import (
    ComponentError,
    ConfigurationError,
    DeployError,
    InputError,
    ManifestError,
    PagerDutyError,
    SignatureError,
)
from pagerduty_connector.component.redact import get_logger, redact

log = get_logger("api")


def error_response(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    """The JSON error answer, its message redacted."""
    return JSONResponse(
        {"error": {"type": kind, "message": redact(message), **extra}}, status_code=status
    )


async def _input_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    return error_response(400, "InputError", str(exc), step=exc.action, input=exc.input_key)


async def _pagerduty_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PagerDutyError)
    return error_response(502, "PagerDutyError", str(exc), pagerduty=exc.to_dict())


async def _signature_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SignatureError)
    log.warning("refused a webhook for %s: %s", request.url.path, exc)
    return error_response(exc.status, "SignatureError", str(exc))


async def _deploy_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(502, "DeployError", str(exc))


async def _component_error(request: Request, exc: Exception) -> JSONResponse:
    status = 500 if isinstance(exc, ManifestError) else 400
    kind = "ConfigurationError" if isinstance(exc, ConfigurationError) else type(exc).__name__
    return error_response(status, kind, str(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, "HTTPError", str(exc.detail))


EXCEPTION_HANDLERS = {
    InputError: _input_error,
    PagerDutyError: _pagerduty_error,
    SignatureError: _signature_error,
    DeployError: _deploy_error,
    ComponentError: _component_error,
    HTTPException: _http_error,
}
