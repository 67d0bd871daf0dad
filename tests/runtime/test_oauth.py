"""The OAuth 2.0 connection against a real authorization server and a real browser.

The authorization server is panva's ``oidc-provider`` from npm (``tests/oauth_server``),
started on 127.0.0.1 with its own login and consent pages, PKCE required and refresh
tokens rotated. The runtime runs under uvicorn on 127.0.0.1 so the browser and the
server can reach its callback. PagerDuty's REST API is mocked by respx; calls to
127.0.0.1 pass through.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
import respx
import uvicorn
from cryptography.fernet import Fernet
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from pagerduty_connector.component.standin.server import free_port
from pagerduty_connector.runtime.app import create_app
from pagerduty_connector.runtime.consent import LINK_SALT
from pagerduty_connector.runtime.crypto import SecretBox
from pagerduty_connector.runtime.settings import RuntimeSettings, load_settings
from pagerduty_connector.runtime.store import ConnectionRow, OAuthStateRow, Store, now, select
from tests.conftest import REST, mount_subscriptions
from tests.support import REPO
from tests.support.openapi import validate_request
from tests.support.runtime import ADMIN, AUTH, EVENT, FLOW, INCIDENT

SERVER_DIR = REPO / "tests" / "oauth_server"
CLIENT_ID = "pdc-test-app"
CLIENT_SECRET = "client-secret-for-tests-4242"


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """The authorization server's packages, installed from its lock file when missing."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (SERVER_DIR / "node_modules" / "oidc-provider").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=SERVER_DIR, check=True, timeout=300
        )
    return SERVER_DIR / "node_modules"


@dataclass
class World:
    """The runtime, the authorization server, and PagerDuty's mock."""

    base: str
    issuer: str
    pd: respx.MockRouter
    settings: RuntimeSettings
    app: Any
    api: httpx2.Client

    def connection(self, scopes: str = "write", name: str = "ops") -> dict[str, Any]:
        answer = self.api.post(
            "/api/connections",
            json={
                "name": name,
                "type": "pagerduty-oauth",
                "config": {
                    "authorizeUrl": f"{self.issuer}/auth",
                    "tokenUrl": f"{self.issuer}/token",
                    "clientId": CLIENT_ID,
                    "clientSecret": CLIENT_SECRET,
                    "scopes": scopes,
                    "from": "oncall@example.com",
                },
            },
        )
        assert answer.status_code == 201, answer.text
        return answer.json()

    def sealed(self, connection_id: str) -> dict[str, Any]:
        """The connection's secrets as stored (decrypted with the runtime's key)."""

        async def read() -> dict[str, Any]:
            store = Store(self.settings.resolved_database_url())
            async with store.session() as db:
                row = await db.get(ConnectionRow, connection_id)
            await store.close()
            assert row is not None
            return SecretBox(self.settings.secret_key or "").open(row.secrets)

        return asyncio.run(read())

    def verifiers(self) -> list[str]:
        """Every PKCE code verifier stored for consents (decrypted)."""

        async def read() -> list[str]:
            store = Store(self.settings.resolved_database_url())
            async with store.session() as db:
                rows = (await db.execute(select(OAuthStateRow))).scalars().all()
            await store.close()
            box = SecretBox(self.settings.secret_key or "")
            return [box.open(r.verifier)["v"] for r in rows]

        return asyncio.run(read())

    def advance(self, seconds: float) -> None:
        """Move the runtime's token clock forward (instead of sleeping)."""
        manager = self.app.state.engine.oauth
        offset = manager.clock() - time.time() + seconds
        manager.clock = lambda: time.time() + offset

    def trial(self) -> httpx2.Response:
        return self.api.post(
            "/api/test-runs",
            json={"connection": "ops", "action": "getIncident", "inputs": {"id": "Q1P5"}},
        )


def consent(start_url: str) -> httpx2.Response:
    """Grant consent the way a person would, with an HTTP client: log in, then agree."""
    client = httpx2.Client(timeout=10)
    answer = client.get(start_url)
    for _ in range(10):
        if answer.status_code in (302, 303):
            answer = client.get(urljoin(str(answer.url), answer.headers["location"]))
            continue
        form = re.search(r'<form[^>]*action="([^"]+)"', answer.text)
        if answer.status_code != 200 or form is None:
            return answer
        fields = {}
        for tag in re.findall(r"<input[^>]*>", answer.text):
            name, value = re.search(r'name="([^"]*)"', tag), re.search(r'value="([^"]*)"', tag)
            if name:
                fields[name.group(1)] = value.group(1) if value else ""
        if "login" in fields:
            fields.update(login="jane.doe", password="any")
        answer = client.post(urljoin(str(answer.url), form.group(1)), data=fields)
    raise AssertionError("consent did not finish")


@pytest.fixture
def world_factory(node_modules: Path, tmp_path: Path) -> Iterator[Callable[..., World]]:
    processes: list[subprocess.Popen[bytes]] = []
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []
    routers: list[respx.MockRouter] = []

    def make(access_ttl: int = 3600) -> World:
        runtime_port, issuer_port = free_port(), free_port()
        base, issuer = f"http://127.0.0.1:{runtime_port}", f"http://127.0.0.1:{issuer_port}"
        processes.append(
            subprocess.Popen(
                [
                    "node",
                    str(SERVER_DIR / "server.mjs"),
                    str(issuer_port),
                    f"{base}/oauth/callback",
                    CLIENT_ID,
                    CLIENT_SECRET,
                    str(access_ttl),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_for(f"{issuer}/.well-known/openid-configuration")
        settings = load_settings(
            data_dir=tmp_path,
            admin_token=ADMIN,
            secret_key=Fernet.generate_key().decode(),
            public_url=base,
        )
        router = respx.mock(assert_all_called=False, assert_all_mocked=True)
        router.route(host="127.0.0.1").pass_through()
        router.start()
        routers.append(router)
        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=runtime_port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        _wait_for(f"{base}/health")
        api = httpx2.Client(base_url=base, headers=AUTH, timeout=30)
        return World(base, issuer, router, settings, app, api)

    yield make
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=30)
    for router in routers:
        captured = [c.request for c in router.calls if c.request.url.host != "127.0.0.1"]
        router.stop()
        for sent in captured:
            validate_request(sent)
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def world(world_factory: Callable[..., World]) -> World:
    return world_factory()


def bearer_tokens(world: World) -> list[str]:
    return [
        c.request.headers["Authorization"].removeprefix("Bearer ")
        for c in world.pd.calls
        if c.request.url.host == "api.pagerduty.com"
    ]


def test_consent_with_pkce_then_steps_and_refresh_with_rotation(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = world.connection()
    assert created["oauth"]["status"] == "needs_consent"
    start_url = created["oauth"]["consentUrl"]
    start_path = f"{world.base}/connections/{created['id']}/oauth/start"
    assert start_url.startswith(f"{start_path}?link=")
    # The link is signed: without it, with another signature, signed with another key,
    # or signed for another connection, nothing starts.
    token = start_url.split("?link=", 1)[1]
    key = world.settings.secret_key or ""

    def signed(value: str, secret: str = key, age: float = 0) -> str:
        class Aged(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(time.time() - age)

        serializer = URLSafeTimedSerializer(secret, salt=LINK_SALT, signer=Aged)
        return f"{start_path}?link={serializer.dumps(value)}"

    refused = {
        "unsigned": httpx2.get(start_path),
        "forged": httpx2.get(f"{start_path}?link={token[:-4]}AAAA"),
        "other key": httpx2.get(signed(created["id"], Fernet.generate_key().decode())),
        "other connection": httpx2.get(signed("another-connection-id")),
    }
    assert {k: r.status_code for k, r in refused.items()} == dict.fromkeys(refused, 403)
    expired = httpx2.get(signed(created["id"], age=7 * 86400 + 60)).json()
    assert "expired" in expired["error"]["message"]
    assert httpx2.get(signed(created["id"], age=6 * 86400)).status_code == 302

    redirect = httpx2.get(start_url)
    assert redirect.status_code == 302
    sent = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert sent["response_type"] == ["code"] and sent["client_id"] == [CLIENT_ID]
    assert sent["redirect_uri"] == [f"{world.base}/oauth/callback"]
    assert sent["scope"] == ["write"] and sent["code_challenge_method"] == ["S256"]
    assert len(sent["state"][0]) >= 32 and len(sent["code_challenge"][0]) == 43

    page = consent(start_url)
    assert page.status_code == 200 and "Connection ready" in page.text, page.text
    shown = world.api.get("/api/connections/ops").json()
    assert shown["oauth"]["status"] == "connected" and shown["oauth"]["scope"] == "write"
    assert set(shown["secrets"]) == {"accessToken", "clientSecret", "expiresAt", "refreshToken"}
    assert set(shown["secrets"].values()) == {"***"}
    first = world.sealed(created["id"])

    incident = world.pd.get(f"{REST}/incidents/Q1P5")
    incident.respond(json=INCIDENT)
    assert world.trial().status_code == 200
    assert bearer_tokens(world) == [first["accessToken"]]

    # PagerDuty stops accepting the token: the client refreshes once and retries.
    def refuse_first(request: httpx2.Request) -> httpx2.Response:
        if request.headers["Authorization"] == f"Bearer {first['accessToken']}":
            return httpx2.Response(401, json={"error": {"message": "Unauthorized", "code": 2006}})
        return httpx2.Response(200, json=INCIDENT)

    incident.mock(side_effect=refuse_first)
    assert world.trial().json() == {"result": {"data": INCIDENT}}
    second = world.sealed(created["id"])
    assert second["accessToken"] != first["accessToken"]
    assert second["refreshToken"] != first["refreshToken"]  # rotated, and stored
    assert bearer_tokens(world)[-2:] == [first["accessToken"], second["accessToken"]]
    # The authorization server rotated it too: the first refresh token is spent.
    spent = httpx2.post(
        f"{world.issuer}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refreshToken"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert spent.status_code == 400 and spent.json()["error"] == "invalid_grant"

    # A deployed flow runs on the OAuth connection too, and leaves an execution record.
    mount_subscriptions(world.pd)
    world.pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    deployed = world.api.post(
        "/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]}
    )
    assert deployed.status_code == 201, deployed.text
    ran = world.api.post("/api/instances/acme/flows/on-incident/test", content=json.dumps(EVENT))
    record = _finished(world, ran.json()["execution"])
    assert record["status"] == "succeeded", record

    leaked = [
        first["accessToken"],
        first["refreshToken"],
        second["accessToken"],
        second["refreshToken"],
        CLIENT_SECRET,
        *world.verifiers(),
    ]
    seen = "\n".join(
        [
            world.api.get("/api/connections").text,
            world.api.get("/api/connections/ops").text,
            world.api.get("/api/instances/acme").text,
            world.api.get("/api/executions").text,
            json.dumps(record),
            "\n".join(r.getMessage() for r in caplog.records),
        ]
    )
    assert len(leaked) >= 6 and not [secret for secret in leaked if secret in seen]


def _finished(world: World, execution_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        record = world.api.get(f"/api/executions/{execution_id}").json()
        if record["status"] not in ("received", "running"):
            return record
        time.sleep(0.05)
    raise AssertionError("the execution did not finish")


def test_an_expired_access_token_is_refreshed_before_the_step(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(access_ttl=62)  # expires within the 60 s refresh margin after 2 s
    created = world.connection()
    assert "Connection ready" in consent(created["oauth"]["consentUrl"]).text
    first = world.sealed(created["id"])
    world.pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    assert world.trial().status_code == 200  # still fresh: no refresh yet
    assert world.sealed(created["id"])["accessToken"] == first["accessToken"]
    world.advance(2.5)
    assert world.trial().status_code == 200
    second = world.sealed(created["id"])
    assert second["accessToken"] != first["accessToken"]
    # The first step used the first token, the second never sent the expiring one.
    assert bearer_tokens(world) == [first["accessToken"], second["accessToken"]]


def test_concurrent_steps_share_one_refresh(world_factory: Callable[..., World]) -> None:
    world = world_factory(access_ttl=62)
    created = world.connection()
    consent(created["oauth"]["consentUrl"])
    world.pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    world.advance(2.5)
    with httpx2.Client(base_url=world.base, headers=AUTH, timeout=30) as other:
        results: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    other.post(
                        "/api/test-runs",
                        json={
                            "connection": "ops",
                            "action": "getIncident",
                            "inputs": {"id": "Q1P5"},
                        },
                    ).status_code
                )
            )
            for _ in range(5)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [200] * 5
    assert len(set(bearer_tokens(world))) == 1  # one refresh served all five


def test_a_revoked_refresh_token_asks_for_consent_again(world: World) -> None:
    created = world.connection()
    consent(created["oauth"]["consentUrl"])
    tokens = world.sealed(created["id"])
    revoked = httpx2.post(
        f"{world.issuer}/token/revocation",
        data={
            "token": tokens["refreshToken"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert revoked.status_code == 200
    world.pd.get(f"{REST}/incidents/Q1P5").respond(
        401, json={"error": {"message": "Unauthorized", "code": 2006}}
    )
    failed = world.trial()
    assert failed.status_code == 400
    message = failed.json()["error"]["message"]
    assert "connection 'ops' needs consent again" in message
    assert f"{world.base}/connections/{created['id']}/oauth/start?link=" in message
    shown = world.api.get("/api/connections/ops").json()
    assert shown["oauth"]["status"] == "needs_consent"
    assert "refreshToken" not in shown["secrets"]
    # Consent again and the connection works.
    assert "Connection ready" in consent(created["oauth"]["consentUrl"]).text
    world.pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    assert world.trial().status_code == 200


def test_tampered_reused_expired_and_denied_states_are_refused(world: World) -> None:
    created = world.connection()
    callback = f"{world.base}/oauth/callback"
    tampered = httpx2.get(callback, params={"code": "x", "state": "forged-state"})
    assert tampered.status_code == 400 and "unknown or was already used" in tampered.text

    # A genuine consent, then the same callback replayed.
    client = httpx2.Client(timeout=10)
    first = client.get(created["oauth"]["consentUrl"])
    state = parse_qs(urlsplit(first.headers["location"]).query)["state"][0]
    assert "Connection ready" in consent(created["oauth"]["consentUrl"]).text
    denied = httpx2.get(callback, params={"error": "access_denied", "state": state})
    assert denied.status_code == 400 and "you declined access" in denied.text
    again = httpx2.get(callback, params={"error": "access_denied", "state": state})
    assert again.status_code == 400 and "already used" in again.text

    stale = client.get(created["oauth"]["consentUrl"])
    old_state = parse_qs(urlsplit(stale.headers["location"]).query)["state"][0]

    async def age() -> None:
        store = Store(world.settings.resolved_database_url())
        async with store.session() as db:
            row = await db.get(OAuthStateRow, old_state)
            assert row is not None
            row.created_at = now() - timedelta(minutes=11)
            await db.commit()
        await store.close()

    asyncio.run(age())
    expired = httpx2.get(callback, params={"code": "x", "state": old_state})
    assert expired.status_code == 400 and "expired" in expired.text


def test_deploy_names_the_scopes_a_connection_lacks(world: World) -> None:
    created = world.connection(scopes="incidents.read")
    before = world.api.post(
        "/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]}
    )
    assert before.status_code == 400 and "grant consent first" in before.text
    consent(created["oauth"]["consentUrl"])
    refused = world.api.post(
        "/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]}
    )
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    assert "was granted 'incidents.read' but the flows need:" in message
    assert "webhook_subscriptions.write (flow 'on-incident' trigger)" in message
    assert "incidents.write (flow 'on-incident' step 'note')" in message
    assert "step 'incident'" not in message  # incidents.read was granted
    assert world.api.get("/api/instances").json() == []
    assert bearer_tokens(world) == []


def test_a_token_granted_only_openid_is_reported(world: World) -> None:
    created = world.connection(scopes="openid")
    page = consent(created["oauth"]["consentUrl"])
    assert page.status_code == 400, (page.url, page.text[:500])
    # PagerDuty answers 'openid'; this server answers '' (openid goes to the ID token).
    assert "the token grants no API scope (granted: &#x27;&#x27;)" in page.text
    shown = world.api.get("/api/connections/ops").json()
    assert shown["oauth"]["status"] == "scope_rejected"
    refused = world.api.post(
        "/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]}
    )
    assert refused.status_code == 400 and "grants only 'openid' when asked" in refused.text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed"
)
def test_consent_in_a_real_browser(world: World) -> None:
    from playwright.sync_api import sync_playwright

    created = world.connection()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.goto(created["oauth"]["consentUrl"])
        page.fill("input[name=login]", "jane.doe")
        page.fill("input[name=password]", "any")
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/interaction/"))
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/oauth/callback"))
        heading = page.text_content("h1")
        message = page.text_content("#message")
        browser.close()
    assert heading == "Connection ready", message
    assert message == "The connection 'ops' is ready. You can close this page."
    world.pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    assert world.trial().json() == {"result": {"data": INCIDENT}}
    assert json.loads(world.api.get("/api/connections/ops").text)["oauth"]["status"] == (
        "connected"
    )
