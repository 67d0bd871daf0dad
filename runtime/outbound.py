"""HTTP requests to services other than PagerDuty (the ``http`` step): Slack and Teams
incoming webhooks, ServiceNow, Jira, a team's own endpoint.

- **Credentials** are connections of their own types (``CREDENTIAL_TYPES``: a bearer
  token, basic auth, a secret header, or a secret URL such as a Slack webhook's), sealed
  at rest like every connection and never shown. A PagerDuty connection is never used:
  its key reaches PagerDuty only, through the one PagerDuty client.
- **No request reaches an address that is not public** (loopback, private, link-local
  such as a cloud's metadata service, reserved) unless ``PDC_HTTP_ALLOW`` names its host
  or network: the check is made on each address the name resolves to, inside the
  connection itself (``GuardedBackend``), and the connection goes to the address checked,
  so a name that resolves to something else a moment later (DNS rebinding) gains nothing.
  Redirects are not followed.
- **Bounded**: a response over ``MAX_RESPONSE_BYTES`` is cut off and fails the step; a
  request has ``timeout`` seconds in all (at most ``MAX_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import httpcore2

from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.manifest import Input, InputType

MAX_RESPONSE_BYTES = 1024 * 1024
MAX_TIMEOUT = 60.0
USER_AGENT = "pagerduty-connector/0.1 (http step)"

# Connection types of the http step, declared as the manifest declares its connections.
CREDENTIAL_TYPES: dict[str, list[Input]] = {
    "http-bearer": [
        Input(key="token", label="Bearer token", type=InputType.PASSWORD, required=True)
    ],
    "http-basic": [
        Input(key="username", label="User name", required=True),
        Input(key="password", label="Password", type=InputType.PASSWORD, required=True),
    ],
    "http-header": [
        Input(key="header", label="Header name", required=True, example="X-Api-Key"),
        Input(key="value", label="Header value", type=InputType.PASSWORD, required=True),
    ],
    "http-url": [
        Input(
            key="url",
            label="Secret URL (e.g. a Slack or Teams incoming webhook)",
            type=InputType.PASSWORD,
            required=True,
        )
    ],
}


class OutboundError(InputError):
    """An http step's request could not be made, or was refused, or its answer was an
    error: the message says which and why."""

    def __init__(self, problem: str, *, retryable: bool = False, sent: bool = True) -> None:
        super().__init__("http", None, problem)
        self.retryable, self.sent = retryable, sent


def allowance(text: str | None) -> tuple[frozenset[str], tuple[Any, ...]]:
    """``PDC_HTTP_ALLOW`` read: host names, and networks (``10.0.0.0/8``, ``127.0.0.1``)."""
    hosts: set[str] = set()
    networks: list[Any] = []
    for part in (text or "").split(","):
        item = part.strip().lower()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            hosts.add(item)
    return frozenset(hosts), tuple(networks)


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """httpcore's network backend with the address check: a host is resolved here, each
    of its addresses checked, and the connection made to the one checked."""

    def __init__(self, allowed_hosts: frozenset[str], allowed_networks: tuple[Any, ...]) -> None:
        self._inner = httpcore2.AnyIOBackend()
        self._hosts, self._networks = allowed_hosts, allowed_networks

    def _allowed(self, host: str, address: Any) -> bool:
        return (
            address.is_global
            or host.lower() in self._hosts
            or any(address in network for network in self._networks)
        )

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend interface)
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore2.AsyncNetworkStream:
        """Resolve ``host``, refuse it if any address is not allowed, connect to one."""
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore2.ConnectError(f"{host} does not resolve ({exc})") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in found]
        refused = next((a for a in addresses if not self._allowed(host, a)), None)
        if refused is not None:
            raise _Refused(
                f"{host} resolves to {refused}, which is not a public address (loopback, "
                "private, link-local or reserved): allow it with PDC_HTTP_ALLOW if it is meant"
            )
        return await self._inner.connect_tcp(
            str(addresses[0]), port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend interface)
        socket_options: Any = None,
    ) -> httpcore2.AsyncNetworkStream:
        """Never: an http step reaches hosts, not local sockets."""
        raise _Refused("unix sockets are not reachable from an http step")

    async def sleep(self, seconds: float) -> None:
        """As the default backend sleeps."""
        await self._inner.sleep(seconds)


class _Refused(httpcore2.ConnectError):
    """A connection the guard refused (not a network failure: never retried)."""


class Outbound:
    """The pool of the http step's connections, one per runtime process."""

    def __init__(self, allow: str | None) -> None:
        hosts, networks = allowance(allow)
        from pagerduty_connector.component.client import tls_context

        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=tls_context(),
            max_connections=50,
            network_backend=GuardedBackend(hosts, networks),
        )

    async def aclose(self) -> None:
        """Close the pool."""
        await self._pool.aclose()

    async def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Any,
        credential: tuple[str, dict[str, Any]] | None,
        seconds: float,
    ) -> dict[str, Any]:
        """Send one request; ``{"status", "headers", "body"}`` (JSON when it is JSON), or
        ``OutboundError`` saying whether it may be tried again."""
        method = method.upper()
        if credential is not None:
            url, headers = _with_credential(url, dict(headers), *credential)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OutboundError(f"{_safe(url)!r} is not an http(s) URL")
        content, content_type = _content(body)
        sent_headers = {"user-agent": USER_AGENT, **{k.lower(): v for k, v in headers.items()}}
        if content_type and "content-type" not in sent_headers:
            sent_headers["content-type"] = content_type
        limit = min(max(seconds, 1.0), MAX_TIMEOUT)
        extensions = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), limit)}
        try:
            async with asyncio.timeout(limit):
                async with self._pool.stream(
                    method,
                    url,
                    headers=list(sent_headers.items()),
                    content=content,
                    extensions=extensions,
                ) as response:
                    received = await _read_bounded(response)
        except _Refused as exc:
            raise OutboundError(str(exc)) from None
        except (httpcore2.ConnectError, httpcore2.ConnectTimeout, httpcore2.PoolTimeout) as exc:
            raise OutboundError(
                f"could not connect to {parts.hostname} ({type(exc).__name__}: {exc})",
                retryable=True,
                sent=False,
            ) from None
        except (TimeoutError, httpcore2.TimeoutException, httpcore2.NetworkError) as exc:
            raise OutboundError(
                f"no answer from {parts.hostname} ({type(exc).__name__})",
                retryable=method in ("GET", "HEAD", "PUT", "DELETE"),
            ) from None
        except httpcore2.ProtocolError as exc:
            raise OutboundError(f"{parts.hostname} broke the HTTP protocol ({exc})") from None
        status = response.status
        answer = {
            "status": status,
            "headers": {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers
            },
            "body": _decoded(received),
        }
        if status >= 400:
            retry = status == 429 or (status >= 500 and method in ("GET", "HEAD", "PUT", "DELETE"))
            text = answer["body"] if isinstance(answer["body"], str) else json.dumps(answer["body"])
            raise OutboundError(
                f"{method} {parts.hostname}{parts.path or '/'}: HTTP {status}: {text[:300]}",
                retryable=retry,
            )
        return answer


async def _read_bounded(response: Any) -> bytes:
    chunks, size = [], 0
    async for chunk in response.aiter_stream():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise OutboundError(f"the answer is over {MAX_RESPONSE_BYTES // 1024} KB; not read")
        chunks.append(chunk)
    return b"".join(chunks)


def _decoded(data: bytes) -> Any:
    if not data:
        return None
    text = data.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _content(body: Any) -> tuple[bytes | None, str | None]:
    if body is None:
        return None, None
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    return json.dumps(body).encode(), "application/json"


def _with_credential(
    url: str, headers: dict[str, str], kind: str, secret: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """The request with its credential: an Authorization header, a header, or the URL."""
    if kind == "http-bearer":
        headers["authorization"] = f"Bearer {secret['token']}"
    elif kind == "http-basic":
        pair = f"{secret['username']}:{secret['password']}".encode()
        headers["authorization"] = "Basic " + base64.b64encode(pair).decode()
    elif kind == "http-header":
        headers[str(secret["header"]).lower()] = str(secret["value"])
    elif kind == "http-url":
        base = str(secret["url"])
        url = base if not url else base.rstrip("/") + "/" + url.lstrip("/")
    return url, headers


def _safe(url: str) -> str:
    """A URL for an error message: its scheme, host and path only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
