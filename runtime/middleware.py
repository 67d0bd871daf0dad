"""``AdminAuth``: the admin bearer token, required on the management API's mount.

A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` spawns a task group and
memory streams per request. It wraps only the ``/api`` mount, so webhook deliveries,
health checks and the consent pages never pass through it.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pagerduty_connector.runtime.errors import error_response

# On every answer but a delivery's: the console's pages load scripts, styles and images
# from the runtime only (htmx is vendored; no inline script or style anywhere), are never
# framed (clickjacking on consent or teardown), are not sniffed into another type, and
# send no referrer (URLs can carry consent links).
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def secured(send: Send) -> Send:
    """``send`` that adds ``SECURITY_HEADERS`` to the answer's headers."""

    async def send_secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
        await send(message)

    return send_secured


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
