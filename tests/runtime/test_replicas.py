"""Two ``pdc serve`` replicas on one PostgreSQL database: when one dies and stays down,
the other takes over its runs; steps that had finished are not sent again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from cryptography.fernet import Fernet

from pagerduty_connector.component.standin.server import free_port, running
from tests.support.postgres import create_database
from tests.support.processes import (
    assert_finished_steps_sent_once,
    finished,
    start_a_three_step_run,
    wait_until,
)

ADMIN = "replicas-admin-token-3141"


@pytest.fixture
def database(postgres_root: str | None) -> Iterator[str]:
    if postgres_root is None:
        pytest.skip("PostgreSQL binaries not installed")
    yield asyncio.run(create_database(postgres_root, "r"))


def test_a_replica_that_stays_down_has_its_runs_finished_by_another(
    tmp_path: Path, database: str
) -> None:
    public = "http://pdc.internal"  # both replicas sit behind one address
    env = {
        **os.environ,
        "PDC_DATABASE_URL": database,
        "PDC_ADMIN_TOKEN": ADMIN,
        "PDC_SECRET_KEY": Fernet.generate_key().decode(),
        "PDC_PUBLIC_URL": public,
        "PDC_HEARTBEAT_INTERVAL": "0.3",
        "PDC_EXECUTOR_TIMEOUT": "2",
    }
    replicas: dict[str, subprocess.Popen[bytes]] = {}
    clients: dict[str, httpx2.Client] = {}

    def start(name: str) -> httpx2.Client:
        port = free_port()
        with (tmp_path / f"{name}.log").open("ab") as out:
            replicas[name] = subprocess.Popen(
                [sys.executable, "-m", "pagerduty_connector.runtime.cli", "serve"],
                env={**env, "PDC_EXECUTOR_ID": name, "PDC_PORT": str(port)},
                stdout=out,
                stderr=out,
            )
        client = clients[name] = httpx2.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=10,
        )
        wait_until(lambda: client.get("/health").is_success, 60, f"replica {name}")
        return client

    # The flow's third step (GET /incidents) hangs the first time: replica a dies there.
    with running(count=3, hold=("GET", "/incidents", 20)) as pagerduty:
        env["PAGERDUTY_API_URL"] = pagerduty.url
        try:
            a = start("a")
            execution = start_a_three_step_run(a, pagerduty, "takeover-1")
            b = start("b")  # started now, so the run is surely replica a's
            replicas["a"].send_signal(signal.SIGKILL)
            replicas["a"].wait(timeout=30)

            record = finished(b, execution, "replica b to finish replica a's run")
            assert_finished_steps_sent_once(pagerduty, record)
            assert "took over 1 runs of silent executor a" in (tmp_path / "b.log").read_text()
        finally:
            for process in replicas.values():
                if process.poll() is None:
                    process.terminate()
                    process.wait(timeout=30)
            for client in clients.values():
                client.close()
