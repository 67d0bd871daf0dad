"""Shared fixtures: the manifest, a fake clock, PagerDuty mocked by respx.

Every request captured by the ``pd`` mock is validated against PagerDuty's
official OpenAPI document when the test ends (unless the test is marked
``no_spec`` because it deliberately calls a path outside the spec).
"""

from __future__ import annotations

# respx imports ``httpx``; aliasing it to ``httpx2`` first (before anything imports
# httpx) gives the test process one HTTP library: respx's default mocker then patches
# httpcore2's pools, which our client uses, and the Requests/Responses that tests
# build with respx are httpx2 objects. The alternative, respx's ``using="httpcore2"``
# mocker, hands side effects old-httpx objects, so tests would mix two libraries.
import httpx2

httpx2.alias_httpx()

import asyncio
import json
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import respx
from starlette.testclient import TestClient

from pagerduty_connector.component.client import ClientSettings, PagerDutyClient, RetryPolicy
from pagerduty_connector.component.context import StepContext
from pagerduty_connector.component.manifest import Manifest, load_manifest
from pagerduty_connector.component.registry import check_implementations
from pagerduty_connector.component.requester import run_step
from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.connections import ConnectionConfig
from pagerduty_connector.runtime.app import create_app
from pagerduty_connector.runtime.settings import RuntimeSettings
from pagerduty_connector.runtime.store import Store
from tests.support import respx_transport
from tests.support.openapi import validate_request
from tests.support.receiver import Slack
from tests.support.runtime import AUTH, REST, settings_for

API_KEY = "u+TEST-api-key-9f8e7d6c5b4a"
FROM = "oncall@example.com"
EVENTS = "https://events.pagerduty.com/v2"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "no_spec: requests here are not checked against the spec")
    # respx answers the PagerDuty client's own transport too (not httpcore's).
    respx_transport.install()


class FakeClock:
    """A clock whose sleeps return at once and are recorded."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


@pytest.fixture(autouse=True, scope="session")
def _manifest_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The CLI's manifest cache goes to a temporary folder, not the user's cache."""
    folder = tmp_path_factory.mktemp("manifest-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PDC_CACHE_DIR", str(folder))
        yield


@pytest.fixture(scope="session")
def manifest() -> Manifest:
    loaded = load_manifest()
    check_implementations(loaded)
    return loaded


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pd(request: pytest.FixtureRequest) -> Iterator[respx.MockRouter]:
    """respx for PagerDuty; unmatched requests fail; captured requests checked vs spec."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        router.get(f"{REST}/abilities").respond(json={"abilities": ["teams"]})
        yield router
        captured = [call.request for call in router.calls]  # respx clears calls on exit
    if request.node.get_closest_marker("no_spec") is None:
        for sent in captured:
            validate_request(sent)


def mount_subscriptions(router: respx.MockRouter, page_size: int = 100) -> FakeSubscriptions:
    """Serve PagerDuty's ``/webhook_subscriptions`` API statefully on a respx router."""
    fake = FakeSubscriptions(page_size=page_size)

    def answer(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content) if request.content else None
        query = dict(request.url.params)
        status, data = fake.handle(request.method, request.url.path, query, body)
        return httpx2.Response(status, json=data) if data is not None else httpx2.Response(status)

    router.route(
        url__regex=rf"^{re.escape(REST)}/webhook_subscriptions", name="subscriptions"
    ).mock(side_effect=answer)
    return fake


MakeCtx = Callable[..., StepContext]


@pytest.fixture
async def make_ctx(manifest: Manifest, clock: FakeClock) -> AsyncIterator[MakeCtx]:
    clients: list[PagerDutyClient] = []

    def make(
        *,
        from_email: str | None = FROM,
        kind: str = "apiKey",
        secret: str = API_KEY,
        region: str = "us",
        settings: ClientSettings | None = None,
        webhook_urls: dict[str, str] | None = None,
    ) -> StepContext:
        settings = settings or ClientSettings(retry=RetryPolicy(jitter=False))
        connection = ConnectionConfig(kind, secret, from_email, region)  # type: ignore[arg-type]
        client = PagerDutyClient(connection, settings, clock=clock)
        clients.append(client)
        return StepContext(manifest=manifest, client=client, webhook_urls=webhook_urls or {})

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def run(make_ctx: MakeCtx) -> Callable[..., Any]:
    """``await run(key, inputs, **ctx_options)`` runs one step."""

    async def go(key: str, inputs: dict[str, Any], **options: Any) -> dict[str, Any]:
        return await run_step(make_ctx(**options), key, inputs)

    return go


@pytest.fixture(scope="session")
def postgres_root() -> Iterator[str | None]:
    """One PostgreSQL server for the session (None when not installed, outside CI)."""
    from tests.support.postgres import available, postgres_server

    if not available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries are missing in CI: .ci/run should install them")
        yield None
        return
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_root: str | None
) -> AsyncIterator[str]:
    """A fresh, empty database on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'pdc.db'}"
        return
    if postgres_root is None:
        pytest.skip("PostgreSQL binaries not installed")
    from tests.support.postgres import create_database

    yield await create_database(postgres_root)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = Store(database_url)
    await opened.migrate()
    yield opened
    await opened.close()


@pytest.fixture
def runtime_settings(database_url: str, tmp_path: Path) -> RuntimeSettings:
    """Runtime settings on the test's database, with known admin token and a fresh key."""
    return settings_for(database_url, tmp_path)


@pytest.fixture
def subs(pd: respx.MockRouter) -> FakeSubscriptions:
    """PagerDuty's webhook subscriptions, stateful, on the ``pd`` router."""
    return mount_subscriptions(pd)


@pytest.fixture
def api(
    runtime_settings: RuntimeSettings, pd: respx.MockRouter, subs: FakeSubscriptions
) -> Iterator[TestClient]:
    """The runtime app on the test's database, authenticated as the admin."""
    with TestClient(create_app(runtime_settings), headers=AUTH) as client:
        yield client


@pytest.fixture
def slack() -> Iterator[Slack]:
    """A stand-in Slack (any service other than PagerDuty) on 127.0.0.1."""
    server = Slack()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()
