"""OAuth tokens: the code exchange, refresh (one at a time, rotated), and scope checks.

``TokenManager`` hands out a connection's access token, refreshing it shortly
before it expires and once after a 401 (through ``RefreshingAuth``), one refresh
at a time per connection, and stores the rotated refresh token. A refresh token
PagerDuty no longer accepts marks the connection as needing consent again. The
identity endpoints are called with authlib's client; they are not the REST API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import httpx2
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from pagerduty_connector.component.client import tls_context
from pagerduty_connector.component.errors import ConfigurationError, InputError
from pagerduty_connector.component.redact import get_logger, register_secret
from pagerduty_connector.connections.oauth import OAUTH_TYPE
from pagerduty_connector.runtime.consent import consent_url
from pagerduty_connector.runtime.store import ConnectionRow, now

if TYPE_CHECKING:
    from pagerduty_connector.runtime.engine import Engine

log = get_logger("oauth")
OIDC_SCOPES = {"openid", "profile", "email", "offline_access"}
NO_API_SCOPE = (
    "the token grants no API scope (granted: '{granted}'); PagerDuty grants only 'openid' "
    "when asked for scopes the app does not have: check the app's scopes and the "
    "connection's 'scopes' input, then grant consent again"
)


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

    def __init__(
        self, engine: Engine, margin: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.margin = margin
        # Wall-clock seconds: expiries are absolute times; tests pass a clock they advance.
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._tokens: dict[str, tuple[str, float]] = {}

    async def authorization_url(self, row: ConnectionRow, state: str, verifier: str) -> str:
        """PagerDuty's authorize URL for ``row`` with ``state`` and the PKCE challenge."""
        client = _oauth_client(self.engine, row, "")
        try:
            url, _ = client.create_authorization_url(
                row.config["authorizeUrl"], state=state, code_verifier=verifier
            )
        finally:
            await client.aclose()
        return str(url)

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
        # From expires_in on our own clock when given (authlib's expires_at is on its own).
        lifetime = token.get("expires_in")
        expires = (
            self.clock() + float(lifetime)
            if lifetime
            else float(token.get("expires_at") or self.clock() + 3600)
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
        if stale is None and cached and cached[1] - self.clock() > self.margin:
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
            fresh = access != stale if stale else expires - self.clock() > self.margin
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
