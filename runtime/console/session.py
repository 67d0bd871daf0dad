"""The console's sign-in: the admin token buys a signed session cookie; forms carry a
CSRF token bound to that session.

The cookie (``pdc_console``) is HttpOnly and SameSite=Strict, Secure when the runtime's
public URL is https, and signed with a key derived from the runtime's secret key
(itsdangerous), so it cannot be forged or moved between installations. It holds a random
session id and the CSRF token; it expires after ``SESSION_SECONDS``. Changing the admin
token or the secret key signs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "pdc_console"
SESSION_SECONDS = 12 * 3600
# Pages reachable without a session: the sign-in form and the static files.
OPEN_PATHS = ("/console/login", "/console/static/")


def _serializer(settings: Any) -> URLSafeTimedSerializer:
    # Bound to the admin token too: rotating it ends every console session.
    key = hashlib.sha256(
        f"{settings.secret_key}\0{settings.admin_token}\0console".encode()
    ).hexdigest()
    return URLSafeTimedSerializer(key, salt="pdc-console-session")


def session_of(request: Request) -> dict[str, str] | None:
    """The signed-in session of a request, or ``None``."""
    settings = request.app.state.engine.settings
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        value = _serializer(settings).loads(raw, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    return value if isinstance(value, dict) and "csrf" in value else None


def token_matches(request: Request, given: str) -> bool:
    """Whether ``given`` is the runtime's admin token (constant time)."""
    expected = request.app.state.engine.settings.admin_token or ""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def sign_in(request: Request, response: Response) -> None:
    """Set a new session cookie on ``response``."""
    settings = request.app.state.engine.settings
    value = {"sid": secrets.token_urlsafe(16), "csrf": secrets.token_urlsafe(24)}
    response.set_cookie(
        COOKIE,
        _serializer(settings).dumps(value),
        max_age=SESSION_SECONDS,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=settings.public_url.startswith("https://"),
    )


def sign_out(response: Response) -> None:
    """Drop the session cookie."""
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")


def csrf_ok(request: Request, form_token: str | None) -> bool:
    """Whether a form's CSRF token is the session's."""
    session = session_of(request)
    return bool(session and form_token) and hmac.compare_digest(
        str(form_token).encode(), session["csrf"].encode()
    )


class ConsoleAuth:
    """Sends a request without a valid session to the sign-in page (htmx requests get
    an ``HX-Redirect`` so the whole page moves, not a fragment)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Let signed-in requests and the open paths through."""
        if scope["type"] == "http":
            request = Request(scope)
            path = scope["path"]
            if not path.startswith("/console"):  # a Starlette that strips the mount
                path = scope.get("root_path", "") + path
            if not path.startswith(OPEN_PATHS) and session_of(request) is None:
                login = "/console/login"
                if request.headers.get("hx-request"):
                    answer: Response = Response(status_code=204, headers={"HX-Redirect": login})
                else:
                    answer = RedirectResponse(login, status_code=303)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)
