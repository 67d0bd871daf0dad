"""One table mapping exceptions to JSON error answers: ``{"error": {"type", "message"}}``.

Messages pass through the redactor, so no secret leaves in an error. A database that
cannot be reached or written is a 503 with ``Retry-After``: what was sent can be sent
again (PagerDuty retries a delivery answered 5xx), and nothing was recorded.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
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
from pagerduty_connector.runtime.metrics import DATABASE_UNAVAILABLE
from pagerduty_connector.runtime.store.outage import (
    RETRY_AFTER,
    StoreUnavailable,
    unavailable,
    why,
)

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


class _OutageLog:
    """One log line when requests start meeting a database outage, then at most one per
    ``every`` seconds with how many were answered 503 (not one line per delivery)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every, self.count, self.said = every, 0, -every

    def meet(self, exc: Exception) -> None:
        self.count += 1
        moment = time.monotonic()
        if moment - self.said >= self.every:
            log.warning(
                "the database is unavailable: %d requests answered 503 (%s)", self.count, why(exc)
            )
            self.count, self.said = 0, moment


_outage = _OutageLog()


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    if not unavailable(exc):  # a statement of ours the database refused: a fault to fix
        log.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "DatabaseError", "the database refused the request (logged)")
    _outage.meet(exc)
    DATABASE_UNAVAILABLE.labels("request").inc()
    answer = error_response(
        503,
        "Unavailable",
        "the database is unavailable, so nothing was recorded or changed: "
        f"try again in {RETRY_AFTER} s",
    )
    answer.headers["Retry-After"] = str(RETRY_AFTER)
    return answer


EXCEPTION_HANDLERS = {
    InputError: _input_error,
    PagerDutyError: _pagerduty_error,
    SignatureError: _signature_error,
    DeployError: _deploy_error,
    ComponentError: _component_error,
    HTTPException: _http_error,
    StoreUnavailable: _store_error,
    SQLAlchemyError: _store_error,
}
