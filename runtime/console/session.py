"""The console's sign-in: the admin token buys a signed session cookie; forms carry a
CSRF token bound to that session.

The cookie (``pdc_console``) is HttpOnly and SameSite=Strict, Secure when the runtime's
public URL is https, and signed with a key derived from the runtime's secret key
(itsdangerous), so it cannot be forged or moved between installations. It holds a random
session id and the CSRF token; it expires after ``SESSION_SECONDS``. Changing the admin
token or the secret key signs everyone out. The sign-in form carries a CSRF token of its
own (a signed cookie and a hidden field that must match), and wrong tokens are throttled
per client address (``SignInThrottle``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "pdc_console"
SESSION_SECONDS = 12 * 3600
# Pages reachable without a session: the sign-in form and the static files.
OPEN_PATHS = ("/console/login", "/console/static/")


def _serializer(settings: Any, purpose: str = "session") -> URLSafeTimedSerializer:
    # Bound to the admin token too: rotating it ends every console session.
    key = hashlib.sha256(
        f"{settings.secret_key}\0{settings.admin_token}\0console".encode()
    ).hexdigest()
    return URLSafeTimedSerializer(key, salt=f"pdc-console-{purpose}")


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


LOGIN_COOKIE = "pdc_console_login"
LOGIN_SECONDS = 3600


def set_login_token(request: Request, response: Response, token: str) -> None:
    """Set the sign-in form's CSRF ``token`` as a short-lived signed cookie: a page of
    another site cannot read it, so it cannot post a form that matches it (a forged
    sign-in would put the victim's browser in the attacker's session)."""
    signed = _serializer(request.app.state.engine.settings, "login").dumps(token)
    response.set_cookie(
        LOGIN_COOKIE,
        signed,
        max_age=LOGIN_SECONDS,
        path="/console/login",
        httponly=True,
        samesite="strict",
        secure=request.app.state.engine.settings.public_url.startswith("https://"),
    )


def login_form_ok(request: Request, form_token: str | None) -> bool:
    """Whether a posted sign-in form carries the token its page was given."""
    raw = request.cookies.get(LOGIN_COOKIE)
    if not raw or not form_token:
        return False
    try:
        token = _serializer(request.app.state.engine.settings, "login").loads(
            raw, max_age=LOGIN_SECONDS
        )
    except BadSignature:
        return False
    return hmac.compare_digest(str(form_token).encode(), str(token).encode())


class SignInThrottle:
    """At most ``ATTEMPTS`` wrong admin tokens per client address in ``WINDOW`` seconds;
    past that the address waits until its oldest failure leaves the window. Kept in this
    process (each replica throttles on its own), for at most ``CLIENTS`` addresses."""

    ATTEMPTS = 5
    WINDOW = 60.0
    CLIENTS = 10_000

    def __init__(self) -> None:
        self._failures: dict[str, list[float]] = {}

    def wait(self, client: str) -> float:
        """Seconds ``client`` must wait before its next try (0: it may try now)."""
        recent = self._recent(client)
        if len(recent) < self.ATTEMPTS:
            return 0.0
        return max(recent[0] + self.WINDOW - time.monotonic(), 0.0)

    def failed(self, client: str) -> None:
        """Count a wrong token from ``client``."""
        recent = self._recent(client)
        recent.append(time.monotonic())
        self._failures[client] = recent[-self.ATTEMPTS :]
        if len(self._failures) > self.CLIENTS:  # the longest-known address goes
            del self._failures[next(iter(self._failures))]

    def _recent(self, client: str) -> list[float]:
        cutoff = time.monotonic() - self.WINDOW
        return [moment for moment in self._failures.get(client, []) if moment > cutoff]


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
