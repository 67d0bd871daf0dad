"""Helpers for tests that run our commands as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
from cryptography.fernet import Fernet

from pagerduty_connector.component.standin.server import LocalPagerDuty
from pagerduty_connector.triggers.signature import sign
from tests.support.runtime import API_KEY, EVENT, FLOW, make_connection


def wait_until(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy (HTTP errors count as not yet)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except httpx2.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished(api: httpx2.Client, execution_id: str, what: str = "the execution to finish") -> Any:
    """The execution's record once it has succeeded or failed."""
    return wait_until(
        lambda: (
            (record := api.get(f"/api/executions/{execution_id}").json())["status"]
            in ("succeeded", "failed")
            and record
        ),
        30,
        what,
    )


THIRD_STEP = ("GET", "/incidents")  # the stand-in holds it, so a process can be killed there


def admin_client(port: int, admin: str) -> httpx2.Client:
    """The management API of a ``pdc serve`` on ``port``, as the admin. It never reuses a
    kept-alive connection past 1 s, under the server's 5 s: a POST on one the server is
    closing would end "Server disconnected" on a loaded machine."""
    return httpx2.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
        limits=httpx2.Limits(keepalive_expiry=1.0),
    )


def deploy_acme_at(
    api: httpx2.Client, pagerduty: LocalPagerDuty, flow: dict[str, Any] = FLOW, key: str = API_KEY
) -> str:
    """Create the connection ``ops`` (API key ``key``) and deploy ``acme`` with ``flow``
    on a running server; the signing secret of the subscription the stand-in made."""
    make_connection(api, key)
    deployed = api.post(
        "/api/instances", json={"name": "acme", "connection": "ops", "flows": [flow]}
    )
    assert deployed.status_code == 201, deployed.text
    (secret,) = pagerduty.subscriptions.secrets.values()
    return str(secret)


def deliver_signed(
    api: httpx2.Client,
    secret: str,
    webhook_id: str,
    event: dict[str, Any] = EVENT,
    path: str = "/webhooks/acme/on-incident",
) -> httpx2.Response:
    """Post ``event`` to ``path`` signed with ``secret``, as PagerDuty would."""
    body = json.dumps(event).encode()
    headers = {"X-Webhook-Id": webhook_id, "X-PagerDuty-Signature": sign(body, secret)}
    return api.post(path, content=body, headers=headers)


def start_a_three_step_run(
    api: httpx2.Client, pagerduty: LocalPagerDuty, webhook_id: str, key: str = API_KEY
) -> str:
    """Create the connection (API key ``key``), deploy ``acme`` with the example flow plus
    a third step (``listIncidents``), deliver one signed event and wait until the run
    reaches the third step; return the execution id."""
    steps = [*FLOW["steps"], {"name": "others", "action": "listIncidents"}]
    secret = deploy_acme_at(api, pagerduty, {**FLOW, "steps": steps}, key)
    answer = deliver_signed(api, secret, webhook_id)
    assert answer.status_code == 202, answer.text
    wait_until(lambda: THIRD_STEP in pagerduty.requests, 30, "the third step")
    return str(answer.json()["execution"])


def assert_finished_steps_sent_once(pagerduty: LocalPagerDuty, record: dict[str, Any]) -> None:
    """The run succeeded; the two steps that finished before the kill reached PagerDuty
    once, and the third, cut off, twice."""
    assert record["status"] == "succeeded", record
    assert [s["name"] for s in record["steps"]] == ["incident", "note", "others"]
    sent = pagerduty.requests
    assert sent.count(("GET", "/incidents/Q1P5")) == 1
    assert sent.count(("POST", "/incidents/Q1P5/notes")) == 1
    assert sent.count(THIRD_STEP) == 2


def serve_env(data_dir: Path, port: int, pagerduty_url: str, admin: str) -> dict[str, str]:
    """The environment of one ``pdc serve`` on ``port`` (its public URL the default one,
    ``http://127.0.0.1:<port>``), its data in ``data_dir`` (SQLite) and a fresh secret
    key."""
    return {
        **{k: v for k, v in os.environ.items() if k != "PDC_PUBLIC_URL"},
        "PDC_DATA_DIR": str(data_dir),
        "PDC_ADMIN_TOKEN": admin,
        "PDC_SECRET_KEY": Fernet.generate_key().decode(),
        "PDC_PORT": str(port),
        "PAGERDUTY_API_URL": pagerduty_url,
    }


def pdc_serve(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``pdc serve`` (with ``args``) with ``env``, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pagerduty_connector.runtime.cli", "serve", *args],
            env=env,
            stdout=out,
            stderr=out,
        )


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux's /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie, dead but not reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def scraped(api: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` parsed: each sample's value by its name and sorted labels."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = api.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
