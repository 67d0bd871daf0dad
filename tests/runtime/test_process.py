"""``pdc serve`` as a real process: a server SIGKILLed, or stopped with SIGTERM, in the
middle of a run resumes it at its next start, and the steps that had finished are not
sent to PagerDuty again; also when its flows run in flow workers (its children), which
die with it."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pagerduty_connector.component.standin.server import LocalPagerDuty, free_port, running
from tests.support.processes import (
    alive,
    assert_finished_steps_sent_once,
    child_pids,
    finished,
    pdc_serve,
    serve_env,
    start_a_three_step_run,
    wait_until,
)

ADMIN = "process-admin-token-7788"
API_KEY = "u+PROCESS-key-1234"


@pytest.fixture
def pagerduty() -> Iterator[LocalPagerDuty]:
    # The third step (GET /incidents) hangs the first time, so the server is killed there.
    with running(count=3, hold=("GET", "/incidents", 60)) as server:
        yield server


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker"])
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_a_stopped_server_resumes_a_recorded_execution(
    tmp_path: Path, pagerduty: LocalPagerDuty, stop: signal.Signals, workers: int
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**serve_env(tmp_path, port, pagerduty.url, ADMIN), "PDC_FLOW_WORKERS": str(workers)}
    logs = tmp_path / "server.log"

    def start() -> subprocess.Popen[bytes]:
        return pdc_serve(env, logs)

    api = httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    server = start()
    try:
        wait_until(lambda: api.get("/health").status_code == 200, 30, "the server to start")
        execution = start_a_three_step_run(api, pagerduty, "kill-1", API_KEY)
        children = child_pids(server.pid)
        assert len(children) == workers + 1  # the writer, and the workers
        server.send_signal(stop)
        server.wait(timeout=30)
        wait_until(lambda: not any(map(alive, children)), 10, "the children to end")
        # With a worker, it is the worker that ran the flow (and stopped it).
        assert ("flow worker local ready" in logs.read_text()) == bool(workers)
        if stop == signal.SIGTERM:  # the run is stopped, not failed, and quietly
            stopped = logs.read_text()
            assert "1 runs stopped; they resume from their checkpoints" in stopped
            assert "Traceback" not in stopped and "ERROR" not in stopped

        server = start()
        wait_until(lambda: api.get("/health").status_code == 200, 30, "the server to restart")
        record = finished(api, execution, "the resumed execution to finish")
        assert_finished_steps_sent_once(pagerduty, record)
        assert len(record["steps"][2]["result"]["data"]["incidents"]) == 3
        assert API_KEY not in logs.read_text() and ADMIN not in logs.read_text()
    finally:
        server.terminate()
        server.wait(timeout=30)
        api.close()
