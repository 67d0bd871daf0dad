"""Connection types: what a step authenticates to PagerDuty with.

``pagerduty-api-key`` sends ``Authorization: Token token=<key>``;
``pagerduty-oauth`` sends ``Authorization: Bearer <access token>``. Both are
``httpx2.Auth`` classes so the client never builds the header itself, and the
OAuth class can later refresh and retry after a 401 without the client knowing.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Literal

import httpx2

from pagerduty_connector.component.errors import ConfigurationError

Region = Literal["us", "eu"]
ConnectionKind = Literal["apiKey", "oauth2"]


class HeaderAuth(httpx2.Auth):
    """Sets a fixed ``Authorization`` value; the OAuth flow will refresh it in place."""

    def __init__(self, value: str) -> None:
        self._header = value

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        """Set the header on the outgoing request."""
        request.headers["Authorization"] = self._header
        yield request


def token_auth(api_key: str) -> HeaderAuth:
    """PagerDuty REST API key: ``Authorization: Token token=<key>``."""
    return HeaderAuth(f"Token token={api_key}")


def bearer_auth(access_token: str) -> HeaderAuth:
    """OAuth 2.0 access token: ``Authorization: Bearer <token>``."""
    return HeaderAuth(f"Bearer {access_token}")


@dataclass(frozen=True)
class ConnectionConfig:
    """A resolved connection: its kind, secret, default From email and region."""

    kind: ConnectionKind
    secret: str = field(repr=False)
    from_email: str | None = None
    region: Region = "us"
    refreshing: httpx2.Auth | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.secret:
            raise ConfigurationError(f"the {self.kind} connection has no token")
        if self.region not in ("us", "eu"):
            raise ConfigurationError(f"region must be 'us' or 'eu', got {self.region!r}")

    def auth(self) -> httpx2.Auth:
        """The ``httpx2.Auth`` that signs REST requests for this connection."""
        if self.refreshing is not None:
            return self.refreshing
        return token_auth(self.secret) if self.kind == "apiKey" else bearer_auth(self.secret)

    @classmethod
    def from_env(cls) -> ConnectionConfig:
        """Build the CLI's connection from ``PAGERDUTY_*`` environment variables."""
        # Imported here: pydantic-settings costs tens of milliseconds to import, and
        # only the CLI and the runtime's start read the environment.
        from pagerduty_connector.component.environment import read_environment

        env = read_environment()
        if not env.api_token and not env.oauth_token:
            raise ConfigurationError(
                "no PagerDuty credentials: set PAGERDUTY_API_TOKEN (a REST API key) "
                "or PAGERDUTY_OAUTH_TOKEN (an OAuth access token)"
            )
        return cls(
            kind="apiKey" if env.api_token else "oauth2",
            secret=env.api_token or env.oauth_token or "",
            from_email=env.from_email,
            region=env.region,
        )
