"""The OAuth 2.0 connection: consent (authorization code + PKCE S256), tokens, refresh.

``/connections/{id}/oauth/start`` sends the person granting consent to PagerDuty's
authorize page with a random single-use ``state`` bound to the connection (it
expires after ``STATE_TTL``) and a PKCE challenge; ``/oauth/callback`` checks the
state, exchanges the code with the client secret and verifier (authlib), and
stores the tokens and the granted scope, sealed. ``TokenManager`` hands out the
access token, refreshing it shortly before it expires and once after a 401, one
refresh at a time per connection, and stores the rotated refresh token. A
refresh token PagerDuty no longer accepts marks the connection as needing
consent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import secrets
import time
from collections.abc import AsyncGenerator, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx2
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from pagerduty_connector.component.client import tls_context
from pagerduty_connector.component.errors import ConfigurationError, InputError
from pagerduty_connector.component.redact import get_logger, register_secret
from pagerduty_connector.runtime.store import ConnectionRow, OAuthStateRow, now
from sqlalchemy import update
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

if TYPE_CHECKING:
    from pagerduty_connector.runtime.engine import Engine

log = get_logger("oauth")
OAUTH_TYPE = "pagerduty-oauth"
STATE_TTL = timedelta(minutes=10)
LINK_TTL = timedelta(days=7)
OIDC_SCOPES = {"openid", "profile", "email", "offline_access"}
NO_API_SCOPE = (
    "the token grants no API scope (granted: '{granted}'); PagerDuty grants only 'openid' "
    "when asked for scopes the app does not have: check the app's scopes and the "
    "connection's 'scopes' input, then grant consent again"
)


def _link_signature(engine: Engine, connection_id: str, expires: int) -> str:
    key = (engine.settings.secret_key or "").encode()
    message = f"oauth-start:{connection_id}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def consent_url(engine: Engine, connection_id: str) -> str:
    """Where the person granting consent starts: a signed link, valid for ``LINK_TTL``.

    The link needs no admin token (the person consenting has none), so it is signed:
    nobody can start a consent, and so bind the connection to their own PagerDuty
    account, without a link the runtime handed out.
    """
    expires = int(time.time() + LINK_TTL.total_seconds())
    signature = _link_signature(engine, connection_id, expires)
    base = engine.settings.public_url.rstrip("/")
    return f"{base}/connections/{connection_id}/oauth/start?expires={expires}&sig={signature}"


def _check_link(engine: Engine, connection_id: str, expires: str, signature: str) -> None:
    if not expires.isdigit() or not signature:
        raise HTTPException(403, "this consent link is incomplete: ask for a new one")
    wanted = _link_signature(engine, connection_id, int(expires))
    if not hmac.compare_digest(wanted, signature):
        raise HTTPException(403, "this consent link is not valid: ask for a new one")
    if int(expires) < time.time():
        raise HTTPException(403, "this consent link has expired: ask for a new one")


def redirect_uri(engine: Engine) -> str:
    """The callback registered with the PagerDuty app."""
    return f"{engine.settings.public_url.rstrip('/')}/oauth/callback"


def _oauth_client(engine: Engine, row: ConnectionRow, secret: str) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=row.config["clientId"],
        client_secret=secret,
        redirect_uri=redirect_uri(engine),
        scope=row.config.get("scopes") or "write",
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_post",
        verify=tls_context(),
        timeout=30,
    )


def oauth_status(row: ConnectionRow) -> dict[str, Any]:
    """What the API shows of an OAuth connection's state (never a token)."""
    return dict(row.config.get("oauth") or {"status": "needs_consent"})


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
    params = request.query_params
    _check_link(engine, connection_id, params.get("expires", ""), params.get("sig", ""))
    async with engine.store.session() as db:
        row = await db.get(ConnectionRow, connection_id)
        if row is None or row.type != OAUTH_TYPE:
            raise HTTPException(404, "no OAuth connection with that id")
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(32)
        client = _oauth_client(engine, row, "")
        url, _ = client.create_authorization_url(
            row.config["authorizeUrl"], state=state, code_verifier=verifier
        )
        await client.aclose()
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


def granted_covers(granted: Iterable[str], needed: str) -> bool:
    """Whether a granted scope set allows an operation needing ``needed``.

    Classic ``write`` covers everything and ``read`` every ``*.read``; a scoped
    ``x.write`` also covers ``x.read``.
    """
    have = set(granted)
    if "write" in have or needed in have:
        return True
    if needed.endswith(".read"):
        return "read" in have or needed.removesuffix(".read") + ".write" in have
    return False


def check_scopes(connection: ConnectionRow, needs: dict[str, str]) -> None:
    """Refuse a deploy whose steps and triggers need scopes the connection was not granted.

    ``needs`` maps where a scope is needed (``flow 'x' step 'y'``) to the scope.
    """
    if connection.type != OAUTH_TYPE:
        return
    status = oauth_status(connection)
    if status.get("status") != "connected":
        raise InputError(
            "connection",
            connection.name,
            f"has no usable grant ({status.get('reason') or 'consent was never given'}): "
            "grant consent first",
        )
    granted = str(status.get("scope") or "").split()
    missing = sorted(
        {
            f"{scope} ({where})"
            for where, scope in needs.items()
            if not granted_covers(granted, scope)
        }
    )
    if missing:
        raise InputError(
            "connection",
            connection.name,
            f"was granted '{' '.join(granted)}' but the flows need: {', '.join(missing)}; "
            "add the scopes to the app and the connection, then grant consent again",
        )


class TokenManager:
    """Access tokens of OAuth connections: cached, refreshed one at a time, persisted."""

    def __init__(self, engine: Engine, margin: float = 60.0) -> None:
        self.engine = engine
        self.margin = margin
        self._locks: dict[str, asyncio.Lock] = {}
        self._tokens: dict[str, tuple[str, float]] = {}

    async def exchange(
        self, connection_id: str, code: str, verifier: str
    ) -> tuple[str, dict[str, Any]]:
        """Trade an authorization code for tokens and store them; name and status."""
        async with self.engine.store.session() as db:
            row = await db.get(ConnectionRow, connection_id)
            if row is None:
                raise ConfigurationError("the connection was deleted during consent")
            secrets_ = self.engine.box.open(row.secrets)
            client = _oauth_client(self.engine, row, secrets_.get("clientSecret", ""))
            try:
                token = await client.fetch_token(
                    row.config["tokenUrl"], code=code, code_verifier=verifier
                )
            except (OAuthError, httpx2.HTTPError) as exc:
                raise ConfigurationError(f"PagerDuty refused the code exchange: {exc}") from None
            finally:
                await client.aclose()
            self._store(row, secrets_, token)
            await db.commit()
            return row.name, oauth_status(row)

    def _store(self, row: ConnectionRow, sealed: dict[str, Any], token: dict[str, Any]) -> None:
        access = str(token.get("access_token") or "")
        register_secret(access)
        register_secret(str(token.get("refresh_token") or ""))
        expires = float(
            token.get("expires_at") or time.time() + float(token.get("expires_in") or 3600)
        )
        scope = str(token.get("scope") or "")
        sealed.update(
            accessToken=access,
            refreshToken=token.get("refresh_token") or sealed.get("refreshToken"),
            expiresAt=expires,
        )
        row.secrets = self.engine.box.seal(sealed)
        if not set(scope.split()) - OIDC_SCOPES:
            reason = NO_API_SCOPE.format(granted=scope)
            row.config = {
                **row.config,
                "oauth": {"status": "scope_rejected", "scope": scope, "reason": reason},
            }
        else:
            row.config = {**row.config, "oauth": {"status": "connected", "scope": scope}}
        row.updated_at = now()
        self._tokens[row.id] = (access, expires)
        self.engine.intake.clear()

    async def access_token(self, connection_id: str, stale: str | None = None) -> str:
        """A valid access token; ``stale`` is one PagerDuty just refused (refresh unless
        another step already has)."""
        cached = self._tokens.get(connection_id)
        if stale is None and cached and cached[1] - time.time() > self.margin:
            return cached[0]
        lock = self._locks.setdefault(connection_id, asyncio.Lock())
        async with lock, self.engine.store.session() as db:
            row = await db.get(ConnectionRow, connection_id)
            if row is None:
                raise ConfigurationError("the OAuth connection no longer exists")
            sealed = self.engine.box.open(row.secrets)
            access = str(sealed.get("accessToken") or "")
            expires = float(sealed.get("expiresAt") or 0)
            if not access or oauth_status(row).get("status") == "needs_consent":
                raise ConfigurationError(
                    f"connection '{row.name}' needs consent: open "
                    f"{consent_url(self.engine, row.id)}"
                )
            fresh = access != stale if stale else expires - time.time() > self.margin
            if fresh:
                self._tokens[row.id] = (access, expires)
                return access
            try:
                await self._refresh(row, sealed)
            finally:
                await db.commit()  # a rotated token, or the mark that consent is needed
            return self._tokens[row.id][0]

    async def _refresh(self, row: ConnectionRow, sealed: dict[str, Any]) -> None:
        client = _oauth_client(self.engine, row, str(sealed.get("clientSecret") or ""))
        try:
            token = await client.refresh_token(
                row.config["tokenUrl"], refresh_token=sealed.get("refreshToken")
            )
        except OAuthError as exc:
            if exc.error in ("invalid_grant", "invalid_token", "unauthorized_client"):
                sealed.pop("accessToken", None)
                sealed.pop("refreshToken", None)
                row.secrets = self.engine.box.seal(sealed)
                reason = f"PagerDuty refused the refresh token ({exc.error})"
                row.config = {**row.config, "oauth": {"status": "needs_consent", "reason": reason}}
                row.updated_at = now()
                self._tokens.pop(row.id, None)
                raise ConfigurationError(
                    f"connection '{row.name}' needs consent again: {reason}; open "
                    f"{consent_url(self.engine, row.id)}"
                ) from None
            raise ConfigurationError(f"refreshing the OAuth token failed: {exc}") from None
        except httpx2.HTTPError as exc:
            raise ConfigurationError(f"refreshing the OAuth token failed: {exc}") from None
        finally:
            await client.aclose()
        self._store(row, sealed, token)
        log.info("refreshed the OAuth token of connection '%s'", row.name)


class RefreshingAuth(httpx2.Auth):
    """``Authorization: Bearer`` from the token manager; after a 401, refresh once and retry."""

    def __init__(self, manager: TokenManager, connection_id: str) -> None:
        self.manager = manager
        self.connection_id = connection_id

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        """Sign, send, and on 401 sign again with a refreshed token."""
        token = await self.manager.access_token(self.connection_id)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            await response.aread()
            token = await self.manager.access_token(self.connection_id, stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request
