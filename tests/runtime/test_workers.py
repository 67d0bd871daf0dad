"""Flow workers and process roles: settings that cannot work are refused at start-up, a
serving process waits until its workers are ready and fails clearly when one cannot
start, restarts a worker that exits, and runs its workers at a lower priority."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx2
import pytest

from pagerduty_connector.component.errors import ConfigurationError
from pagerduty_connector.runtime.app import create_app
from pagerduty_connector.runtime.settings import RuntimeSettings
from pagerduty_connector.runtime.worker import NICENESS, FlowWorkers
from tests.support.runtime import settings_for


def _sqlite(tmp_path: Path, **overrides: object) -> RuntimeSettings:
    return settings_for(f"sqlite+aiosqlite:///{tmp_path / 'pdc.db'}", tmp_path, **overrides)


def test_a_worker_cannot_start_workers(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PDC_FLOW_WORKERS starts workers from a serving"):
        _sqlite(tmp_path, role="worker", flow_workers=2)


def test_roles_decide_who_serves_and_who_runs_flows(tmp_path: Path) -> None:
    alone = _sqlite(tmp_path, executor_id="a")
    assert (alone.serves, alone.runs_flows, alone.executor) == (True, True, "a")
    with_workers = _sqlite(tmp_path, executor_id="a", flow_workers=2)
    # Named apart from its first worker ("a"), so its start never recovers that worker's runs.
    assert (with_workers.serves, with_workers.runs_flows, with_workers.executor) == (
        True,
        False,
        "a.web",
    )
    web = _sqlite(tmp_path, executor_id="a", role="web")
    assert (web.serves, web.runs_flows, web.executor) == (True, False, "a.web")
    worker = _sqlite(tmp_path, executor_id="a", role="worker")
    assert (worker.serves, worker.runs_flows, worker.executor) == (False, True, "a")


def test_the_app_refuses_settings_it_cannot_honour(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PDC_ROLE=worker serves no HTTP"):
        create_app(_sqlite(tmp_path, role="worker"))
    transport = httpx2.MockTransport(lambda request: httpx2.Response(500))
    with pytest.raises(ConfigurationError, match="workers cannot share an injected"):
        create_app(_sqlite(tmp_path, flow_workers=1), transport=transport)


def test_workers_get_their_own_lasting_executor_ids(tmp_path: Path) -> None:
    workers = FlowWorkers(_sqlite(tmp_path, executor_id="node-1", flow_workers=3))
    ids = [workers.environment(i)["PDC_EXECUTOR_ID"] for i in range(3)]
    assert ids == ["node-1", "node-1.1", "node-1.2"]
    first = workers.environment(0)
    assert (first["PDC_ROLE"], first["PDC_FLOW_WORKERS"]) == ("worker", "0")
    assert first["PDC_WORKER_PARENT"] == str(os.getpid())


async def test_a_worker_that_cannot_start_fails_the_start_with_why(tmp_path: Path) -> None:
    # A directory where the database file should be: the worker's migration fails.
    (tmp_path / "pdc.db").mkdir()
    workers = FlowWorkers(_sqlite(tmp_path, flow_workers=1))
    with pytest.raises(ConfigurationError, match="flow worker 0 exited with 1 before it was ready"):
        await workers.start()
    assert workers.pids() == []


async def test_workers_are_ready_niced_and_restarted_when_one_exits(tmp_path: Path) -> None:
    workers = FlowWorkers(_sqlite(tmp_path, flow_workers=1))
    await workers.start()
    try:
        [first] = workers.pids()  # ready: start() waited for it
        assert os.getpriority(os.PRIO_PROCESS, first) == os.getpriority(os.PRIO_PROCESS, 0) + (
            NICENESS
        )
        os.kill(first, 9)
        for _ in range(200):  # restarted after RESTART_DELAY[0] (1 s) plus its start-up
            await asyncio.sleep(0.1)
            if workers.pids() and workers.pids() != [first]:
                break
        [second] = workers.pids()
        assert second != first
    finally:
        await workers.stop()
    assert workers.pids() == []
