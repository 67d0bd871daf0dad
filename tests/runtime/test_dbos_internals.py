"""The reaches into DBOS's private internals (``runtime/dbos_internals.py``): each holds on
the installed DBOS, and a release where one moved fails at start naming it."""

from __future__ import annotations

import asyncio

import pytest
from dbos import DBOSClient, _core, _dbos, _sys_db, _utils, error
from dbos._schemas.system_database import SystemSchema
from dbos._sys_db import SystemDatabase

from pagerduty_connector.runtime import dbos_internals
from pagerduty_connector.runtime.dbos_internals import DBOSInternalsMoved


def test_every_reach_holds_on_the_installed_dbos() -> None:
    dbos_internals.check()


@pytest.mark.parametrize(
    ("owner", "name", "named"),
    [
        (_dbos, "_dbos_global_instance", "dbos._dbos._dbos_global_instance"),
        (_core, "_execute_workflow_async", "dbos._core._execute_workflow_async"),
        (SystemDatabase, "_execute_prepared", "SystemDatabase._execute_prepared"),
        (_utils, "generate_uuid", "dbos._utils.generate_uuid"),
        (DBOSClient, "enqueue_in_transaction", "DBOSClient.enqueue_in_transaction"),
        (_sys_db, "db_retry", "dbos._sys_db.db_retry"),
        (SystemSchema, "operation_outputs", "operation_outputs.workflow_uuid"),
        (error, "DBOSWorkflowConflictIDError", "dbos.error.DBOSWorkflowConflictIDError"),
    ],
)
def test_a_moved_reach_fails_loudly_naming_it_and_the_versions(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, named: str
) -> None:
    monkeypatch.delattr(owner, name)
    with pytest.raises(DBOSInternalsMoved) as raised:
        dbos_internals.check()
    message = str(raised.value)
    assert named in message and "dbos>=3.4,<4" in message and "\n" not in message


def test_stopping_background_threads_needs_their_events(monkeypatch: pytest.MonkeyPatch) -> None:
    class Launched:
        pass  # a DBOS instance of a release that keeps no stop events

    monkeypatch.setattr(_dbos, "_dbos_global_instance", Launched())
    with pytest.raises(DBOSInternalsMoved, match="background_thread_stop_events"):
        dbos_internals.stop_background_threads()


def test_workflow_tasks_are_found_by_dbos_coroutine_name() -> None:
    async def _execute_workflow_async() -> None:  # named as DBOS names its coroutine
        await asyncio.sleep(10)

    async def other() -> None:
        await asyncio.sleep(10)

    async def scenario() -> tuple[list[asyncio.Task[None]], list[asyncio.Task[None]]]:
        workflow = asyncio.create_task(_execute_workflow_async())
        unrelated = asyncio.create_task(other())
        await asyncio.sleep(0)
        found = dbos_internals.workflow_tasks()
        for task in (workflow, unrelated):
            task.cancel()
        await asyncio.gather(workflow, unrelated, return_exceptions=True)
        return found, [workflow]

    found, expected = asyncio.run(scenario())
    assert found == expected
