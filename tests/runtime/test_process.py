"""``pdc serve`` as a real process: a server SIGKILLed, or stopped with SIGTERM, in the
middle of a run resumes it at its next start, and the steps that had finished are not
sent to PagerDuty again; also when its flows run in flow workers (its children), which
die with it."""

from __future__ import annotations

import copy
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from pagerduty_connector.component.standin.server import LocalPagerDuty, free_port, running
from tests.support.processes import (
    admin_client,
    alive,
    assert_finished_steps_sent_once,
    child_pids,
    deliver_signed,
    deploy_acme_at,
    finished,
    pdc_serve,
    scraped,
    serve_env,
    start_a_three_step_run,
    wait_until,
)
from tests.support.runtime import EVENT

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
    env = {
        **serve_env(tmp_path, port, pagerduty.url, ADMIN),
        "PDC_FLOW_WORKERS": str(workers),
        # The step is held for a minute: a stop gives it one second, then cuts it.
        "PDC_STOP_GRACE": "1",
    }
    del env["PDC_PORT"]  # the port given on the command line, and the public URL with it
    logs = tmp_path / "server.log"

    def start() -> subprocess.Popen[bytes]:
        return pdc_serve(env, logs, "--port", str(port))

    api = httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    server = start()
    try:
        wait_until(lambda: api.get("/health").status_code == 200, 30, "the server to start")
        assert f"runtime ready at {base}" in logs.read_text()
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
            assert "1 runs were still in a step after 1 s (PDC_STOP_GRACE)" in stopped
            assert "1 runs stopped; they resume from their checkpoints" in stopped
            assert "Traceback" not in stopped and "ERROR" not in stopped

        server = start()
        wait_until(lambda: api.get("/health").status_code == 200, 30, "the server to restart")
        record = finished(api, execution, "the resumed execution to finish")
        assert_finished_steps_sent_once(pagerduty, record)
        # The metrics of the process that ran it (a flow worker's too, through the
        # shared folder): the run ended once here, its one live step attempt counted,
        # the two replayed from their checkpoints not.
        seen = scraped(api)
        assert seen[("pdc_executions_finished_total", (("status", "succeeded"),))] == 1
        assert seen[("pdc_step_attempts_total", (("action", "listIncidents"), ("outcome", "ok")))]
        assert ("pdc_step_attempts_total", (("action", "getIncident"), ("outcome", "ok"))) not in (
            seen
        )
        assert seen[("pdc_pagerduty_responses_total", (("method", "GET"), ("status", "200")))]
        assert len(record["steps"][2]["result"]["data"]["incidents"]) == 3
        assert API_KEY not in logs.read_text() and ADMIN not in logs.read_text()
    finally:
        server.terminate()
        server.wait(timeout=30)
        api.close()


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker"])
def test_sigterm_with_50_runs_in_flight_sends_nothing_twice(tmp_path: Path, workers: int) -> None:
    """A planned stop (a deploy, a scale-down) lets the steps in flight finish and stops
    each run at its next step; after the restart every run ends, and PagerDuty got each
    incident's note once. Measured before: 43-50 notes sent twice."""
    runs = 50
    with running(slow=("POST", "/notes", 0.5)) as pagerduty:
        port = free_port()
        env = {
            **serve_env(tmp_path, port, pagerduty.url, ADMIN),
            "PDC_FLOW_WORKERS": str(workers),
            "PDC_FLOW_CONCURRENCY": "64",  # every run at once: 50 in flight at the signal
        }
        logs = tmp_path / "server.log"
        api = admin_client(port, ADMIN)
        server = pdc_serve(env, logs)
        try:
            wait_until(lambda: api.get("/health").status_code == 200, 30, "the server to start")
            secret = deploy_acme_at(api, pagerduty)
            executions = []
            for n in range(runs):
                event = copy.deepcopy(EVENT)
                event["event"]["data"]["id"] = f"INC{n:03d}"
                event["event"]["id"] = f"ev-{n}"
                answer = deliver_signed(api, secret, f"d{n}", event)
                assert answer.status_code == 202, answer.text
                executions.append(answer.json()["execution"])

            def notes() -> list[str]:
                return [path for method, path in pagerduty.requests if path.endswith("/notes")]

            wait_until(lambda: len(notes()) >= 5, 30, "the first notes")
            server.send_signal(signal.SIGTERM)
            # uvicorn stops gracefully, then ends with the signal it caught, as is the custom.
            assert server.wait(timeout=60) in (0, -signal.SIGTERM)
            stopped = logs.read_text()
            assert "Traceback" not in stopped and "ERROR" not in stopped
            assert "still in a step" not in stopped  # nothing was cut
            sent_before = len(notes())

            server = pdc_serve(env, logs)
            wait_until(lambda: api.get("/health").status_code == 200, 30, "the server to restart")
            records = [finished(api, e, "every run to finish") for e in executions]
            assert [r["status"] for r in records] == ["succeeded"] * runs
            sent = pagerduty.requests
            for n in range(runs):
                incident = f"/incidents/INC{n:03d}"
                assert sent.count(("GET", incident)) == 1, incident
                assert sent.count(("POST", f"{incident}/notes")) == 1, incident
            assert sent_before < runs  # some runs were stopped before their note, and resumed
        finally:
            server.terminate()
            server.wait(timeout=60)
            api.close()
