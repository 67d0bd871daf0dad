"""respx for the PagerDuty client's own transport (``component/transport.py``).

respx stands in for PagerDuty by patching httpcore, which the PagerDuty client no longer
sends through. This mocker patches the client's transport the same way, for every respx
router at once (it shares the httpcore mocker's routers): a test's ``respx.mock`` answers
the client's requests as before, everything above the wire (the client's retries, error
mapping, pagination) runs as in production; with no router active, requests go out (the
tests against local servers: the stand-in, the fault tests).
"""

from __future__ import annotations

from typing import Any

import httpx2
from respx.mocks import AbstractRequestMocker, HTTPCoreMocker


class TransportMocker(AbstractRequestMocker):
    """Routes ``AiohttpTransport.handle_async_request`` through the active respx routers."""

    name = "pdc-transport"
    targets = ["pagerduty_connector.component.transport.AiohttpTransport"]
    target_methods = ["handle_async_request"]

    @classmethod
    def mock(cls, spec: Any) -> Any:
        """The patched method: respx's, or the real one while no router is active."""
        routed = super().mock(spec)

        async def handle(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not cls.routers:
                return await spec(self, *args, **kwargs)
            return await routed(self, *args, **kwargs)

        return handle

    @classmethod
    def to_httpx_request(cls, **kwargs: Any) -> httpx2.Request:
        """The request respx routes and records: a copy of the client's (which its auth
        flow changes in place when it sends it again, refreshed)."""
        request: httpx2.Request = kwargs["request"]
        return httpx2.Request(
            request.method,
            request.url,
            headers=request.headers.raw,
            stream=request.stream,
            extensions=request.extensions,
        )

    @classmethod
    async def from_async_httpx_response(
        cls, httpx_response: Any, target: Any, **kwargs: Any
    ) -> httpx2.Response:
        """The route's answer as the transport gives it (its body not yet decoded)."""
        body = b"".join([chunk async for chunk in httpx_response.stream])
        return httpx2.Response(
            httpx_response.status_code,
            headers=httpx_response.headers.raw,
            stream=httpx2.ByteStream(body),
            request=kwargs["request"],
        )


def install() -> None:
    """Patch the transport for the whole test session, answering through whichever
    respx routers are active."""
    TransportMocker.routers = HTTPCoreMocker.routers
    TransportMocker.start()
