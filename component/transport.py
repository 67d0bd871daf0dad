"""The PagerDuty client's HTTP transport: aiohttp's connection pool under httpx's API.

The client (``component/client.py``) keeps httpx's requests, responses, auth, timeouts
and errors; only the wire is aiohttp's, whose HTTP parser and pool are C and plain
asyncio where httpcore's are Python on anyio: a request and its answer cost 150 us of
CPU instead of 600 (``bench/flow_throughput.py``; two requests a run). aiohttp's
failures are raised as the httpx errors the client already tells apart: a connection
never made (refused, unresolvable, no TLS, no connection in time) as ``ConnectError``
or ``ConnectTimeout`` (nothing was sent), anything after as ``ReadError``,
``ReadTimeout`` or ``RemoteProtocolError`` (it may have arrived).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from typing import Any

import aiohttp
import httpx2

# Headers httpx sets that aiohttp writes itself from the request it sends.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """An httpx transport sending over one aiohttp session per event loop."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext,
        max_connections: int = 100,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._ssl = verify
        self._limit = max_connections
        self._keepalive = keepalive_expiry
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        # HTTP(S)_PROXY and NO_PROXY apply, as they do to httpx (read once, at start).
        self._environment = urllib.request.getproxies_environment()
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _session(self) -> aiohttp.ClientSession:
        # A session belongs to the loop it was made on; a client shared by two loops
        # (a test's and the server's) gets one on each.
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl,
                limit=self._limit,
                keepalive_timeout=self._keepalive,
                enable_cleanup_closed=False,
            )
            session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=_NoCookies()
            )
            self._sessions[loop] = session
        return session

    def _proxy(self, url: httpx2.URL) -> str | None:
        """The proxy ``HTTP(S)_PROXY``/``NO_PROXY`` name for ``url``'s host, as httpx
        would use, looked up once per host (aiohttp's own lookup, ``trust_env``, reads
        the environment and ``~/.netrc`` at every request: 5 % of a run's CPU)."""
        key = (url.scheme, url.host)
        if key not in self._proxies:
            proxy = self._environment.get(url.scheme)
            if proxy and urllib.request.proxy_bypass_environment(url.host, self._environment):
                proxy = None
            self._proxies[key] = proxy
        return self._proxies[key]

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` and read its whole answer (PagerDuty's are pages of JSON)."""
        body = await request.aread()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.decode("latin-1").lower() not in _OWN_HEADERS
        ]
        limits = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=_sum(limits.get("pool"), limits.get("connect")),
            sock_connect=limits.get("connect"),
            sock_read=limits.get("read"),
        )
        try:
            async with self._session().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
                proxy=self._proxy(request.url),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            ) as answer:
                content = await answer.read()
                return httpx2.Response(
                    answer.status,
                    headers=[(k, v) for k, v in answer.raw_headers],
                    stream=httpx2.ByteStream(content),
                    extensions={"http_version": b"HTTP/1.1", "reason_phrase": _reason(answer)},
                    request=request,
                )
        except aiohttp.ConnectionTimeoutError as exc:
            raise _as(httpx2.ConnectTimeout, exc, "no connection in time", request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise _as(httpx2.ConnectError, exc, "could not connect", request) from exc
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise _as(httpx2.ReadTimeout, exc, "no answer in time", request) from exc
        except aiohttp.ServerDisconnectedError as exc:
            said = "the server closed the connection without answering"
            raise _as(httpx2.RemoteProtocolError, exc, said, request) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
            raise _as(httpx2.RemoteProtocolError, exc, "a malformed answer", request) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _as(httpx2.ReadError, exc, "the connection failed", request) from exc

    async def aclose(self) -> None:
        """Close this loop's session (a session of another loop closes with its loop)."""
        loop = asyncio.get_running_loop()
        session = self._sessions.pop(loop, None)
        if session is not None:
            await session.close()


class _NoCookies(aiohttp.DummyCookieJar):
    """PagerDuty's API sets no cookie a client should send back (httpx's client keeps
    its own jar above the transport)."""


def _sum(*parts: float | None) -> float | None:
    present = [p for p in parts if p is not None]
    return sum(present) if present else None


def _as(
    kind: type[httpx2.TransportError], exc: BaseException, fallback: str, request: httpx2.Request
) -> httpx2.TransportError:
    """aiohttp's failure as the httpx error ``kind``, saying what aiohttp said."""
    return kind(str(exc).strip() or fallback, request=request)


def _reason(answer: Any) -> bytes:
    return (answer.reason or "").encode("latin-1", "replace")
