"""``RefreshingAuth``: the OAuth connection's ``httpx2.Auth``, with refresh after a 401.

The token comes from a ``TokenSource`` (the runtime's token manager) for every
request, so a refreshed token is used at once; after a 401 the source is asked for
a token newer than the refused one and the request is sent once more.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

import httpx2

# The manifest key of the OAuth 2.0 connection type.
OAUTH_TYPE = "pagerduty-oauth"


class TokenSource(Protocol):
    """Hands out a connection's valid access token, refreshing it when needed."""

    async def access_token(self, connection_id: str, stale: str | None = None) -> str:
        """A valid token; ``stale`` is one PagerDuty just refused."""
        ...


class RefreshingAuth(httpx2.Auth):
    """``Authorization: Bearer`` from the token source; after a 401, refresh once and retry."""

    def __init__(self, source: TokenSource, connection_id: str) -> None:
        self.source = source
        self.connection_id = connection_id

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        """Sign, send, and on 401 sign again with a refreshed token."""
        token = await self.source.access_token(self.connection_id)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            await response.aread()
            token = await self.source.access_token(self.connection_id, stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request
