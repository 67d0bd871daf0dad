"""The one PagerDuty HTTP client.

Everything that talks to PagerDuty goes through ``PagerDutyClient``: it owns the
base URLs (US/EU, overridable), the auth and PagerDuty headers, the ``From``
header, the client-side request budget, retries with backoff (honouring
``ratelimit-reset`` on 429), timeouts, and the mapping of failures to
``PagerDutyError``. Pagination lives in ``component.pagination`` on top of it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import certifi
import httpx2

from pagerduty_connector.component.errors import ConfigurationError, PagerDutyError
from pagerduty_connector.component.redact import get_logger, register_secret
from pagerduty_connector.component.transport import AiohttpTransport
from pagerduty_connector.connections import ConnectionConfig

ACCEPT = "application/vnd.pagerduty+json;version=2"
REST_URLS = {"us": "https://api.pagerduty.com", "eu": "https://api.eu.pagerduty.com"}
EVENTS_URLS = {"us": "https://events.pagerduty.com/v2", "eu": "https://events.eu.pagerduty.com/v2"}
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Transport failures that happen before any byte of the request is written.
NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
USER_AGENT = "pagerduty-connector/0.1 (+httpx2)"

Base = Literal["rest", "events"]
log = get_logger("client")


class Clock(Protocol):
    """Time source and sleeper; tests pass a fake one to run retries instantly."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry.

    ``max_retries`` bounds the attempts after the first, ``budget`` bounds the
    total seconds spent waiting, ``retry_all_errors`` also retries 4xx and POST
    failures (rawRequest's opt-in).
    """

    max_retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    budget: float = 120.0
    exponential: bool = True
    jitter: bool = True
    retry_all_errors: bool = False

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt + 1`` (full jitter when enabled)."""
        delay = self.base_delay * (2**attempt) if self.exponential else self.base_delay
        delay = min(delay, self.max_delay)
        return random.uniform(delay / 2, delay) if self.jitter and delay > 0 else delay


class Observer(Protocol):
    """What the client tells whoever watches it (the runtime's metrics): each answer,
    or that none came, and each wait on the request budget."""

    def answered(self, method: str, status: int | None) -> None:
        """PagerDuty answered ``status`` (``None``: it could not be reached)."""

    def waited(self, seconds: float) -> None:
        """A request waited ``seconds`` for the request budget."""


@dataclass
class ClientSettings:
    """Client configuration; ``from_env`` reads the documented overrides."""

    api_url: str | None = None
    events_url: str | None = None
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    requests_per_minute: float | None = 960.0
    burst: int = 16
    page_concurrency: int = 10
    observer: Observer | None = None

    @classmethod
    def from_env(cls) -> ClientSettings:
        """Settings from ``PAGERDUTY_API_URL``, ``PAGERDUTY_EVENTS_URL`` and friends."""
        # Imported here: pydantic-settings costs tens of milliseconds to import, and
        # only the CLI and the runtime's start read the environment.
        from pagerduty_connector.component.environment import read_environment

        env = read_environment()
        return cls(
            api_url=env.api_url,
            events_url=env.events_url,
            timeout=env.timeout,
            requests_per_minute=env.requests_per_minute or None,
        )


class RequestBudget:
    """A token bucket keeping one connection under N requests per minute."""

    def __init__(
        self, per_minute: float | None, burst: int, clock: Clock, observer: Observer | None = None
    ) -> None:
        self.observer = observer
        self.rate = per_minute / 60.0 if per_minute else None
        self.capacity = float(max(burst, 1))
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock.now()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until one request may be sent."""
        if self.rate is None:
            return
        async with self._lock:
            while True:
                now = self.clock.now()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                # The tolerance stops float rounding from producing ever-smaller waits
                # that never advance a large monotonic clock value.
                if self.tokens >= 1 - 1e-6:
                    self.tokens = max(self.tokens - 1, 0.0)
                    return
                wait = (1 - self.tokens) / self.rate
                if self.observer:
                    self.observer.waited(wait)
                await self.clock.sleep(wait)


def _retry_after(response: httpx2.Response) -> float | None:
    for name in ("ratelimit-reset", "retry-after"):
        value = response.headers.get(name)
        if value:
            try:
                return max(float(value), 0.0)
            except ValueError:
                continue
    return None


def _origin(url: httpx2.URL) -> str:
    """Where a request went, without its path or query: ``https://api.pagerduty.com``."""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def _why(exc: httpx2.TransportError) -> str:
    """A transport failure in a few words: its kind and the system's reason."""
    detail = str(exc).strip()
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def error_from_response(response: httpx2.Response, method: str, path: str) -> PagerDutyError:
    """Map an error response (REST or Events API shape) to ``PagerDutyError``."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    message, code, errors = response.reason_phrase or "request failed", None, []
    if isinstance(body, dict):
        err = body.get("error") if isinstance(body.get("error"), dict) else body
        message = str(err.get("message") or body.get("status") or message)
        code = err.get("code") if isinstance(err.get("code"), int) else None
        raw_errors = err.get("errors") or []
        errors = [str(e) for e in raw_errors] if isinstance(raw_errors, list) else [str(raw_errors)]
    elif response.text:
        message = response.text[:300]
    return PagerDutyError(
        message,
        status=response.status_code,
        code=code,
        errors=errors,
        method=method,
        path=path,
        body=body,
    )


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client: loading the CA bundle takes tens of milliseconds,
    which would otherwise block the event loop each time a client is made."""
    return ssl.create_default_context(cafile=certifi.where())


# Every connection of the pool is kept alive between requests for KEEPALIVE seconds
# (httpx's own pool kept 20 of its 100: with more than 20 steps of a connection in
# flight, the others were closed after each request and opened again for the next, a
# TLS handshake each with PagerDuty).
POOL_SIZE = 100
KEEPALIVE = 5.0


class PagerDutyClient:
    """Async client for PagerDuty's REST API v2 and Events API v2 for one connection."""

    def __init__(
        self,
        connection: ConnectionConfig | None,
        settings: ClientSettings | None = None,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.connection = connection
        self.settings = settings or ClientSettings()
        self.clock = clock or SystemClock()
        region = connection.region if connection else "us"
        self.rest_url = (self.settings.api_url or REST_URLS[region]).rstrip("/")
        self.events_url = (self.settings.events_url or EVENTS_URLS[region]).rstrip("/")
        self.budget = RequestBudget(
            self.settings.requests_per_minute,
            self.settings.burst,
            self.clock,
            self.settings.observer,
        )
        if connection:
            register_secret(connection.secret)
        self._http = httpx2.AsyncClient(
            transport=transport
            or AiohttpTransport(
                verify=tls_context(), max_connections=POOL_SIZE, keepalive_expiry=KEEPALIVE
            ),
            timeout=self.settings.timeout,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    async def __aenter__(self) -> PagerDutyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying connection pool."""
        await self._http.aclose()

    def url_for(self, path: str, base: Base = "rest") -> str:
        """Absolute URL of ``path`` under the REST or Events base."""
        root = self.rest_url if base == "rest" else self.events_url
        return f"{root}/{path.lstrip('/')}"

    def _headers(
        self, base: Base, from_email: str | None, requires_from: bool, extra: dict[str, str] | None
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        if base == "rest":
            headers["Accept"] = ACCEPT
            headers["Content-Type"] = "application/json"
            sender = from_email or (self.connection.from_email if self.connection else None)
            if sender:
                headers["From"] = sender
            elif requires_from:
                raise ConfigurationError(
                    "PagerDuty requires a From header (the email of a user on the account) "
                    "for this request: set the connection's default From email "
                    "(PAGERDUTY_FROM for the CLI) or the step's 'from' input"
                )
        else:
            headers["Content-Type"] = "application/json"
        for name, value in (extra or {}).items():
            if name.lower() == "authorization":
                continue  # the connection's auth is the only credential we send
            headers[name] = value
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        base: Base = "rest",
        params: list[tuple[str, Any]] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        data: dict[str, Any] | None = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        headers: dict[str, str] | None = None,
        from_email: str | None = None,
        requires_from: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpx per-request timeout)
        url: str | None = None,
    ) -> httpx2.Response:
        """Send one request with retries; return the successful response.

        Raises ``ConfigurationError`` before sending when the request cannot be
        made, and ``PagerDutyError`` when PagerDuty answers an error or cannot be
        reached within the retry policy.
        """
        method = method.upper()
        policy = retry or self.settings.retry
        target = url or self.url_for(path, base)
        hdrs = self._headers(base, from_email, requires_from, headers)
        if multipart := bool(files or data):
            hdrs.pop("Content-Type", None)  # httpx sets the multipart boundary
        auth = self.connection.auth() if (self.connection and base == "rest") else None
        request = self._http.build_request(
            method,
            target,
            params=_encode_params(params),
            json=json if not multipart and content is None else None,
            content=content,
            data=data,
            files=files,
            headers=hdrs,
            timeout=timeout if timeout is not None else httpx2.USE_CLIENT_DEFAULT,
        )
        return await self._send_with_retries(request, auth, policy, path)

    async def _send_with_retries(
        self, request: httpx2.Request, auth: httpx2.Auth | None, policy: RetryPolicy, path: str
    ) -> httpx2.Response:
        method = request.method
        deadline = self.clock.now() + policy.budget
        attempt = 0
        while True:
            await self.budget.acquire()
            started = self.clock.now()
            try:
                response = await self._http.send(request, auth=auth or httpx2.USE_CLIENT_DEFAULT)
            except httpx2.TransportError as exc:
                # Refused, unresolvable, or no connection in time: nothing was written.
                not_sent = isinstance(exc, NOT_SENT)
                retryable = method in IDEMPOTENT or not_sent or policy.retry_all_errors
                error = PagerDutyError(
                    f"could not reach PagerDuty at {_origin(request.url)} ({_why(exc)})",
                    method=method,
                    path=path,
                    sent=not not_sent,
                )
                delay = policy.backoff(attempt)
                if self.settings.observer:
                    self.settings.observer.answered(method, None)
            else:
                if self.settings.observer:
                    self.settings.observer.answered(method, response.status_code)
                log.debug(
                    "%s %s -> %s in %.0f ms",
                    method,
                    path,
                    response.status_code,
                    (self.clock.now() - started) * 1000,
                )
                if response.status_code < 400:
                    return response
                await response.aread()
                error = error_from_response(response, method, path)
                status = response.status_code
                if status == 429:
                    retryable = True
                    reset = _retry_after(response)
                    delay = reset if reset is not None else policy.backoff(attempt)
                else:
                    retryable = (status >= 500 and method in IDEMPOTENT) or policy.retry_all_errors
                    delay = policy.backoff(attempt)
            if not retryable or attempt >= policy.max_retries:
                raise error
            if self.clock.now() + delay > deadline:
                error.add(f" (retry budget of {policy.budget:g}s exhausted)")
                raise error
            # Said with why, and louder when PagerDuty cannot be reached at all (a wrong
            # URL or an outage: a person waiting on a command should not wait in silence).
            log.log(
                logging.INFO if isinstance(error.status, int) else logging.WARNING,
                "%s %s: %s; trying again in %.1f s (attempt %d of %d)",
                method,
                path,
                error.message,
                delay,
                attempt + 2,
                policy.max_retries + 1,
            )
            await self.clock.sleep(delay)
            attempt += 1

    async def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` and decode the JSON body (``None`` for an empty body)."""
        response = await self.request(method, path, **kwargs)
        return decode_json(response, method, path)


def decode_json(response: httpx2.Response, method: str, path: str) -> Any:
    """The response's JSON body, ``None`` when empty; a clear error when not JSON."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise PagerDutyError(
            "PagerDuty answered with a body that is not JSON",
            status=response.status_code,
            method=method,
            path=path,
        ) from None


def _encode_params(params: list[tuple[str, Any]] | None) -> list[tuple[str, str]] | None:
    """Render query values the way PagerDuty expects (booleans as true/false)."""
    if not params:
        return None
    out: list[tuple[str, str]] = []
    for name, value in params:
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        out.append((name, str(value)))
    return out
