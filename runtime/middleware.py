"""``AdminAuth``: the admin bearer token, required on the management API's mount.

A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` spawns a task group and
memory streams per request. It wraps only the ``/api`` mount, so webhook deliveries,
health checks and the consent pages never pass through it.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from pagerduty_connector.runtime.errors import error_response


class AdminAuth:
    """Answers 401 unless ``Authorization: Bearer <admin token>`` is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Reject an unauthenticated call before any handler runs."""
        if scope["type"] == "http":
            token = scope["app"].state.engine.settings.admin_token
            given = Headers(scope=scope).get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                message = "a valid admin bearer token is required"
                denied = error_response(401, "Unauthorized", message)
                await denied(scope, receive, send)
                return
        await self.app(scope, receive, send)
