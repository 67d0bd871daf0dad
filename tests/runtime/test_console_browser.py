"""The console in a real browser (Playwright with Debian's Chromium) against a real
``pdc serve`` and the stand-in PagerDuty: sign in with the keyboard, create the
connection, deploy from the editor (an error shown at its line, then fixed), watch a
delivered execution appear and finish without reloading, open it, retry a failed one,
try an action; no page holds a secret, no console error, and the pages fit a phone."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from pagerduty_connector.component.standin.server import LocalPagerDuty, free_port, running
from pagerduty_connector.runtime.console.views import EXAMPLE_INSTANCE
from pagerduty_connector.triggers.signature import sign
from tests.support.processes import pdc_serve, serve_env, wait_until
from tests.support.runtime import EVENT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ADMIN = "console-admin-token-2718"
API_KEY = "u+CONSOLE-key-31415"
# Where to save screenshots of the main pages (the README's come from here).
SHOTS = os.environ.get("PDC_SCREENSHOTS")
FAILING_FLOW = """\
  - name: on-resolve
    trigger:
      type: incidentsTrigger
      inputs:
        events: [incident.resolved]
        webhookDescription: acme resolved
        filterType: account_reference
    steps:
      - name: service
        action: getService
        inputs:
          id: PNOSUCH
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, LocalPagerDuty]]:
    with running() as pagerduty:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = pdc_serve(serve_env(tmp_path, port, pagerduty.url, ADMIN), tmp_path / "server.log")
        try:
            wait_until(lambda: httpx2.get(f"{base}/health").is_success, 60, "the runtime")
            yield base, pagerduty
        finally:
            server.terminate()
            server.wait(timeout=30)


def _deliver(base: str, pagerduty: LocalPagerDuty, flow: str, event_type: str, n: int) -> str:
    url = f"{base}/webhooks/acme-oncall/{flow}"
    (sub_id,) = [
        i
        for i, s in pagerduty.subscriptions.subscriptions.items()
        if s["delivery_method"]["url"] == url
    ]
    event = json.loads(json.dumps(EVENT))
    event["event"]["event_type"] = event_type
    body = json.dumps(event).encode()
    signature = sign(body, pagerduty.subscriptions.secrets[sub_id])
    headers = {"X-PagerDuty-Signature": signature, "X-Webhook-Id": f"browser-{n}"}
    answer = httpx2.post(url, content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["execution"])


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed"
)
def test_the_console_from_sign_in_to_a_retried_execution(
    served: tuple[str, LocalPagerDuty],
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, pagerduty = served
    seen: list[str] = []
    problems: list[str] = []

    def visit(page: Any, shot: str | None = None) -> None:
        seen.append(page.content())
        if SHOTS and shot:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(SHOTS) / f"{shot}.png"), full_page=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on(
            "response",
            lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )

        # Sign in with the keyboard only: the token field has the focus.
        page.goto(f"{base}/console")
        expect(page).to_have_url(re.compile(r"/console/login$"))
        page.keyboard.type(ADMIN)
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/console/executions$"))
        visit(page)

        # Create the API-key connection from the console, not with curl.
        page.get_by_role("link", name="Connections").click()
        page.locator("summary", has_text="API Key").click()
        page.fill("#pagerduty-api-key-apiKey", API_KEY)
        page.fill("#pagerduty-api-key-from", "oncall@example.com")
        page.click("#create-pagerduty-api-key")
        expect(page.get_by_role("status")).to_have_text("ops: created")
        visit(page)

        # Deploy from the editor: a misspelt action is shown at its line, then fixed.
        page.get_by_role("link", name="Instances").click()
        page.get_by_role("link", name="Deploy an instance").click()
        broken = EXAMPLE_INSTANCE.replace("createIncidentNote", "createIncidentNot") + FAILING_FLOW
        page.fill("#yaml", broken)
        page.click("#deploy")
        expect(page.locator("#editor-error")).to_contain_text("step 'note', input 'action'")
        line = broken.splitlines().index("        action: createIncidentNot") + 1
        expect(page.locator("#flagged-line")).to_have_text(str(line))
        visit(page, "editor-error")
        page.fill(
            "#yaml", page.input_value("#yaml").replace("createIncidentNot", "createIncidentNote")
        )
        page.click("#deploy")
        expect(page.locator("#deployed")).to_have_text("Deployed acme-oncall")
        visit(page)

        # A delivery appears in the log and finishes there, without a reload.
        page.get_by_role("link", name="Watch its executions").click()
        marker = page.evaluate("() => { window.notReloaded = true; return true }")
        execution = _deliver(base, pagerduty, "on-incident", "incident.triggered", 1)
        row = page.locator(f'tr[data-id="{execution}"]')
        expect(row).to_have_attribute("data-status", "succeeded", timeout=20_000)
        assert marker and page.evaluate("() => window.notReloaded === true")
        failed = _deliver(base, pagerduty, "on-resolve", "incident.resolved", 2)
        expect(page.locator(f'tr[data-id="{failed}"]')).to_have_attribute(
            "data-status", "failed", timeout=20_000
        )
        visit(page, "executions")

        # Open the succeeded one: every step, its templated inputs and output.
        row.get_by_role("link").click()
        expect(page.locator("#execution-status")).to_have_text("succeeded")
        expect(page.locator(".timeline .step")).to_have_count(2)
        expect(page.locator("#execution")).to_contain_text("Investigating: Server is on fire")
        visit(page, "execution")

        # Retry the failed one: a new execution that points at it.
        page.goto(f"{base}/console/executions/{failed}")
        expect(page.locator("#execution-error")).to_contain_text("GET /services/PNOSUCH: HTTP 404")
        page.click("#retry")
        original = page.locator(f'#execution a[href="/console/executions/{failed}"]')
        expect(original).to_be_visible(timeout=20_000)  # "Retry of" the failed one
        expect(page.locator("#execution-status")).to_have_text("failed", timeout=20_000)
        visit(page)

        # Try an action from the component browser.
        page.get_by_role("link", name="Component").click()
        page.get_by_role("link", name="Get Incident", exact=True).click()
        page.fill("#in-id", "Q1P5")
        page.click("#try")
        expect(page.locator("#try-result")).to_contain_text("Server is on fire")
        visit(page, "try-it")

        for path in ("/console/instances/acme-oncall", "/console/connections"):
            page.goto(f"{base}{path}")
            visit(page, path.rsplit("/", 1)[-1])

        # A phone's width: the log and an execution fit without sideways scrolling.
        page.set_viewport_size({"width": 390, "height": 844})
        for path in ("/console/executions", f"/console/executions/{execution}"):
            page.goto(f"{base}{path}")
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 1, (path, overflow)
        # Nor does the log hide columns in a sideways scroll: every row fits its box.
        page.goto(f"{base}/console/executions")
        hidden = page.evaluate(
            "() => { const t = document.querySelector('table.executions');"
            " return t.scrollWidth - t.parentElement.clientWidth; }"
        )
        assert hidden <= 1, hidden
        expect(page.locator(f'tr[data-id="{failed}"] .status')).to_be_visible()
        expect(page.locator(f'tr[data-id="{failed}"] td.clip')).to_be_in_viewport()
        visit(page, "phone")
        browser.close()

    secrets = [ADMIN, API_KEY, *pagerduty.subscriptions.secrets.values()]
    for html in seen:
        for secret in secrets:
            assert secret not in html
    assert problems == []
