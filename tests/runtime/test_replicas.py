"""``pdc serve`` replicas on one PostgreSQL database: a replica that dies has its runs
finished (by the others when it stays down, by itself when it restarts); deliveries
spread over the replicas are each recorded and run once; steps that had finished are
not sent to PagerDuty again."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.fernet import Fernet

from pagerduty_connector.component.standin.server import LocalPagerDuty, free_port, running
from pagerduty_connector.triggers.signature import sign
from tests.support.postgres import create_database
from tests.support.processes import (
    assert_finished_steps_sent_once,
    finished,
    start_a_three_step_run,
    wait_until,
)
from tests.support.runtime import EVENT, FLOW, make_connection

ADMIN = "replicas-admin-token-3141"


@pytest.fixture
def database(postgres_root: str | None) -> Iterator[str]:
    if postgres_root is None:
        pytest.skip("PostgreSQL binaries not installed")
    yield asyncio.run(create_database(postgres_root, "r"))


class Replicas:
    """``pdc serve`` processes sharing one database and one public address."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.clients: dict[str, httpx2.Client] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str) -> httpx2.Client:
        """Start (or restart, on its old port) replica ``name``; its admin client."""
        port = self.ports.setdefault(name, free_port())
        with (self.logs / f"{name}.log").open("ab") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "pagerduty_connector.runtime.cli", "serve"],
                env={**self.env, "PDC_EXECUTOR_ID": name, "PDC_PORT": str(port)},
                stdout=out,
                stderr=out,
            )
        client = self.clients.get(name)
        if client is None:
            client = self.clients[name] = httpx2.Client(
                base_url=self.url(name),
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=10,
                # Under the server's 5 s keep-alive: a connection it is closing is never
                # reused for a POST (measured: "Server disconnected" on a loaded machine).
                limits=httpx2.Limits(keepalive_expiry=1.0),
            )
        wait_until(lambda: client.get("/health").is_success, 60, f"replica {name}")
        return client

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            # A planned stop may take its grace period (25 s) and more on a loaded machine.
            process.wait(timeout=90)
        for client in self.clients.values():
            client.close()


def _env(database: str, pagerduty: LocalPagerDuty, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PDC_DATABASE_URL": database,
        "PDC_ADMIN_TOKEN": ADMIN,
        "PDC_SECRET_KEY": Fernet.generate_key().decode(),
        "PDC_PUBLIC_URL": "http://pdc.internal",  # every replica sits behind one address
        "PAGERDUTY_API_URL": pagerduty.url,
        **extra,
    }


def test_a_replica_that_stays_down_has_its_runs_finished_by_another(
    tmp_path: Path, database: str
) -> None:
    # The flow's third step (GET /incidents) hangs the first time: replica a dies there.
    with running(count=3, hold=("GET", "/incidents", 20)) as pagerduty:
        env = _env(database, pagerduty, PDC_HEARTBEAT_INTERVAL="0.3", PDC_EXECUTOR_TIMEOUT="2")
        replicas = Replicas(tmp_path, env)
        try:
            a = replicas.start("a")
            execution = start_a_three_step_run(a, pagerduty, "takeover-1")
            b = replicas.start("b")  # started now, so the run is surely replica a's
            replicas.kill("a")

            record = finished(b, execution, "replica b to finish replica a's run")
            assert_finished_steps_sent_once(pagerduty, record)
            assert "took over 1 runs of silent executor a" in replicas.log("b")
        finally:
            replicas.stop()


DELIVERIES = 1000


async def _deliver_all(urls: list[str], secret: str, killed_midway: Any) -> dict[str, int]:
    """Send ``DELIVERIES`` signed events round-robin over ``urls``, 16 at a time, as a load
    balancer in front of the replicas would: a delivery whose replica does not answer is
    sent to the next one (same ``X-Webhook-Id``). ``killed_midway`` runs after half of
    them. Returns each webhook id's final status code."""
    answers: dict[str, int] = {}
    turn = itertools.count()
    gate = asyncio.Semaphore(16)

    async def one(client: httpx2.AsyncClient, n: int) -> None:
        event = json.loads(json.dumps(EVENT))
        event["event"]["data"]["id"] = f"Q{n}"
        event["event"]["id"] = f"ev-{n}"  # each delivery a PagerDuty event of its own
        body = json.dumps(event).encode()
        headers = {"X-Webhook-Id": f"wh-{n}", "X-PagerDuty-Signature": sign(body, secret)}
        async with gate:
            for _ in range(30):
                url = urls[next(turn) % len(urls)]
                try:
                    answer = await client.post(
                        f"{url}/webhooks/acme/on-incident", content=body, headers=headers
                    )
                except httpx2.TransportError:
                    await asyncio.sleep(0.05)
                    continue
                answers[f"wh-{n}"] = answer.status_code
                return
        raise AssertionError(f"delivery {n} was answered by no replica")

    async with httpx2.AsyncClient(timeout=30) as client:
        half = DELIVERIES // 2
        await asyncio.gather(*(one(client, n) for n in range(half)))
        killed = asyncio.ensure_future(asyncio.to_thread(killed_midway))
        await asyncio.gather(*(one(client, n) for n in range(half, DELIVERIES)))
        await killed
    return answers


async def _executions(database: str) -> list[dict[str, Any]]:
    import asyncpg

    connection = await asyncpg.connect(database.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await connection.fetch("SELECT webhook_id, status, steps FROM executions")
    finally:
        await connection.close()
    return [{**dict(row), "steps": json.loads(row["steps"])} for row in rows]


async def _steps_run_by(database: str, executor: str) -> int:
    """How many flow steps DBOS has recorded for runs that ``executor`` owns."""
    import asyncpg

    connection = await asyncpg.connect(database.replace("postgresql+asyncpg", "postgresql"))
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM dbos.operation_outputs o JOIN dbos.workflow_status w"
            " ON o.workflow_uuid = w.workflow_uuid"
            " WHERE w.executor_id = $1 AND o.function_name = 'pdc.action'",
            executor,
        )
    finally:
        await connection.close()


def test_three_replicas_take_a_thousand_deliveries_while_one_is_killed_and_restarted(
    tmp_path: Path, database: str
) -> None:
    with running() as pagerduty:
        replicas = Replicas(tmp_path, _env(database, pagerduty, PDC_FLOW_CONCURRENCY="32"))
        try:
            first = replicas.start("r1")
            make_connection(first)
            deployed = first.post(
                "/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]}
            )
            assert deployed.status_code == 201, deployed.text
            (secret,) = pagerduty.subscriptions.secrets.values()
            replicas.start("r2")
            replicas.start("r3")
            sent_before_kill = 0

            def kill_and_restart() -> None:
                nonlocal sent_before_kill
                # Killed while it runs steps: DBOS has recorded steps of runs it owns.
                wait_until(
                    lambda: asyncio.run(_steps_run_by(database, "r2")), 30, "r2 to run steps"
                )
                replicas.kill("r2")
                sent_before_kill = len(pagerduty.requests)
                time.sleep(1)
                replicas.start("r2")

            urls = [replicas.url(name) for name in ("r1", "r2", "r3")]
            answers = asyncio.run(_deliver_all(urls, secret, kill_and_restart))

            assert len(answers) == DELIVERIES
            assert set(answers.values()) <= {200, 202}  # 200: a redelivery already recorded

            def all_finished() -> list[dict[str, Any]] | None:
                rows = asyncio.run(_executions(database))
                done = all(row["status"] in ("succeeded", "failed") for row in rows)
                return rows if done else None

            rows = wait_until(all_finished, 180, "every execution to finish")
            # Every delivery answered 2xx has exactly one execution, and each succeeded
            # with each step recorded once.
            per_delivery = Counter(row["webhook_id"] for row in rows)
            assert set(per_delivery) == set(answers)
            assert set(per_delivery.values()) == {1}
            assert {row["status"] for row in rows} == {"succeeded"}
            assert all([s["name"] for s in row["steps"]] == ["incident", "note"] for row in rows)

            # Every step's request reached PagerDuty once. The one exception no runtime
            # can avoid: a step of r2 that PagerDuty had answered when r2 was killed, but
            # whose checkpoint was not yet written, is sent again when its run resumes.
            positions: dict[tuple[str, str], list[int]] = {}
            for index, request in enumerate(pagerduty.requests):
                positions.setdefault(request, []).append(index)
            resent = 0
            for n in range(DELIVERIES):
                for request in (("GET", f"/incidents/Q{n}"), ("POST", f"/incidents/Q{n}/notes")):
                    copies = positions.get(request, [])
                    if len(copies) == 1:
                        continue
                    # Sent again only after the kill, and first before it: never two
                    # replicas running the same step.
                    assert len(copies) == 2, (request, copies)
                    assert copies[0] < sent_before_kill <= copies[1], (request, copies)
                    resent += 1
            assert resent <= 32, resent  # at most r2's runs in flight, one step each
            for name in ("r1", "r2", "r3"):
                assert "Traceback" not in replicas.log(name), name
        finally:
            replicas.stop()
