"""OAuth consent: the signed consent link, the authorize redirect, and the callback.

``/connections/{id}/oauth/start`` sends the person granting consent to PagerDuty's
authorize page with a random single-use ``state`` bound to the connection (it
expires after ``STATE_TTL``) and a PKCE S256 challenge; ``/oauth/callback`` checks
the state and has the token manager exchange the code. The start link needs no
admin token (the person consenting has none), so it is signed with the runtime's
key (itsdangerous) and expires after ``LINK_TTL``.
"""

from __future__ import annotations

import html
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import update
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from pagerduty_connector.component.errors import ConfigurationError
from pagerduty_connector.component.redact import get_logger
from pagerduty_connector.connections.oauth import OAUTH_TYPE
from pagerduty_connector.runtime.store import ConnectionRow, OAuthStateRow, now

if TYPE_CHECKING:
    from pagerduty_connector.runtime.engine import Engine

log = get_logger("oauth")
STATE_TTL = timedelta(minutes=10)
LINK_TTL = timedelta(days=7)
LINK_SALT = "pdc-oauth-consent-link"


def link_signer(engine: Engine) -> URLSafeTimedSerializer:
    """Signs and checks consent links with the runtime's key (timestamped)."""
    return URLSafeTimedSerializer(engine.settings.secret_key or "", salt=LINK_SALT)


def consent_url(engine: Engine, connection_id: str) -> str:
    """Where the person granting consent starts: a signed link, valid for ``LINK_TTL``.

    Nobody can start a consent, and so bind the connection to their own PagerDuty
    account, without a link the runtime handed out.
    """
    token = link_signer(engine).dumps(connection_id)
    base = engine.settings.public_url.rstrip("/")
    return f"{base}/connections/{connection_id}/oauth/start?link={token}"


def _check_link(engine: Engine, connection_id: str, token: str) -> None:
    if not token:
        raise HTTPException(403, "this consent link is incomplete: ask for a new one")
    try:
        signed_for = link_signer(engine).loads(token, max_age=LINK_TTL.total_seconds())
    except SignatureExpired:
        raise HTTPException(403, "this consent link has expired: ask for a new one") from None
    except BadSignature:
        raise HTTPException(403, "this consent link is not valid: ask for a new one") from None
    if signed_for != connection_id:
        raise HTTPException(403, "this consent link is not valid: ask for a new one")


def _page(title: str, message: str, status: int = 200) -> HTMLResponse:
    body = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p id='message'>{html.escape(message)}</p>"
        "</body></html>"
    )
    return HTMLResponse(body, status_code=status)


async def start(request: Request) -> RedirectResponse:
    """
    summary: Start OAuth consent for a connection (the browser is sent to PagerDuty)
    responses:
      302: {description: to the authorize page, with state and a PKCE challenge}
      403: {description: the link is not one the runtime signed, or it expired}
      404: {description: no such OAuth connection}
    """
    engine: Engine = request.app.state.engine
    connection_id = request.path_params["id"]
    _check_link(engine, connection_id, request.query_params.get("link", ""))
    async with engine.store.session() as db:
        row = await db.get(ConnectionRow, connection_id)
        if row is None or row.type != OAUTH_TYPE:
            raise HTTPException(404, "no OAuth connection with that id")
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(32)
        url = await engine.oauth.authorization_url(row, state, verifier)
        db.add(
            OAuthStateRow(
                state=state, connection_id=row.id, verifier=engine.box.seal({"v": verifier})
            )
        )
        await db.commit()
    return RedirectResponse(url, status_code=302)


async def callback(request: Request) -> HTMLResponse:
    """
    summary: Finish OAuth consent (PagerDuty redirects the browser here)
    responses:
      200: {description: a page saying the connection is ready}
      400: {description: a page saying what went wrong (denied, unknown/reused/expired state)}
    """
    engine: Engine = request.app.state.engine
    params = request.query_params
    state = params.get("state", "")
    async with engine.store.session() as db:
        claimed = await db.execute(
            update(OAuthStateRow)
            .where(OAuthStateRow.state == state, OAuthStateRow.used_at.is_(None))
            .values(used_at=now())
        )
        stored = await db.get(OAuthStateRow, state) if claimed.rowcount == 1 else None  # type: ignore[attr-defined]
        await db.commit()
    if stored is None:
        log.warning("refused an OAuth callback with an unknown or reused state")
        return _page(
            "Connection not authorized",
            "This consent link is unknown or was already used. Start again from the "
            "connection's consent link.",
            400,
        )
    created = (
        stored.created_at
        if stored.created_at.tzinfo
        else stored.created_at.replace(tzinfo=now().tzinfo)
    )
    if now() - created > STATE_TTL:
        return _page(
            "Connection not authorized",
            "This consent link expired. Start again from the connection's consent link.",
            400,
        )
    if params.get("error"):
        reason = "you declined access" if params["error"] == "access_denied" else params["error"]
        return _page("Connection not authorized", f"PagerDuty did not grant access: {reason}.", 400)
    try:
        name, status = await engine.oauth.exchange(
            stored.connection_id, params.get("code", ""), engine.box.open(stored.verifier)["v"]
        )
    except ConfigurationError as exc:
        return _page("Connection not authorized", str(exc), 400)
    if status.get("status") != "connected":
        return _page("Connection not usable", f"{name}: {status.get('reason')}.", 400)
    return _page("Connection ready", f"The connection '{name}' is ready. You can close this page.")
