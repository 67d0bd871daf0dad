"""Every reach into DBOS Transact's private internals, in one place.

DBOS's public API covers what the runtime does with it but for the reaches below, each
kept because it pays (what it buys, measured, is in the README's design notes, "The
DBOS seam"). ``check()`` runs at every start, and ``tests/runtime/test_dbos_internals.py``
in CI: a DBOS release whose internals moved fails loudly, naming the reach and the
version this was written against, instead of misbehaving.

- ``stop_background_threads``: a planned stop first stops DBOS's queue pollers (and
  its other background threads), so no run starts while the runs here finish their
  step; ``DBOS.destroy`` does that only together with cancelling every workflow task.
- ``workflow_tasks``: the tasks running workflows on this loop, to cancel those still
  running when the stop's grace ends (DBOS records nothing for a cancelled task, so
  each resumes from its last checkpoint).
- ``caught_writes``, ``system_schema``, ``new_token``: the writer process queues a
  whole batch of runs in the transaction of their execution rows, with one statement
  per DBOS table for the batch, from the rows DBOS's own ``enqueue_in_transaction``
  builds (caught at its ``_execute_prepared``, never executed one by one).
- ``owner_token``, ``read_steps``, ``write_steps``, ``stop_run`` (DBOS's step table and
  workflow rows, the execution's ownership token, its ``db_retry``): the batched
  checkpoints of ``runtime/checkpoints.py`` read a run's recorded steps in one query
  with other runs', and record finished steps together in one transaction, each as
  DBOS's own step records it (owner checked, the row locked), instead of two
  transactions per step.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# The DBOS versions these reaches were written and tested against (pyproject pins them).
WRITTEN_FOR = "dbos>=3.4,<4"
# The coroutine DBOS runs each workflow of this process in.
WORKFLOW_COROUTINE = "_execute_workflow_async"


class DBOSInternalsMoved(RuntimeError):
    """A private part of DBOS the runtime relies on is not where it was."""


def _moved(what: str) -> DBOSInternalsMoved:
    import dbos

    version = getattr(dbos, "__version__", None) or _installed_version()
    return DBOSInternalsMoved(
        f"DBOS {version} no longer has {what}: the runtime was written for {WRITTEN_FOR}; "
        "install a version in that range (pip install 'dbos>=3.4,<4') or update "
        "runtime/dbos_internals.py"
    )


def _installed_version() -> str:
    from importlib.metadata import version

    return version("dbos")


def check() -> None:
    """Raise ``DBOSInternalsMoved`` naming the first reach that no longer holds."""
    from dbos import _core, _dbos, _utils
    from dbos._sys_db import SystemDatabase

    if not hasattr(_dbos, "_dbos_global_instance"):
        raise _moved("dbos._dbos._dbos_global_instance")
    if not hasattr(_core, WORKFLOW_COROUTINE):
        raise _moved(f"dbos._core.{WORKFLOW_COROUTINE}")
    if not callable(getattr(SystemDatabase, "_execute_prepared", None)):
        raise _moved("SystemDatabase._execute_prepared")
    if not callable(getattr(_utils, "generate_uuid", None)):
        raise _moved("dbos._utils.generate_uuid")
    from dbos import DBOS, DBOSClient

    if not hasattr(DBOSClient, "enqueue_in_transaction"):
        raise _moved("DBOSClient.enqueue_in_transaction")
    if "background_thread_stop_events" not in DBOS.__init__.__code__.co_names:
        raise _moved("DBOS.background_thread_stop_events")
    _check_checkpoints()


# The columns of DBOS's table of steps that batched checkpoints read and write.
STEP_COLUMNS = (
    "workflow_uuid",
    "function_id",
    "function_name",
    "output",
    "error",
    "child_workflow_id",
    "started_at_epoch_ms",
    "completed_at_epoch_ms",
    "serialization",
    "application_name",
    "retention_timestamp",
)


def _check_checkpoints() -> None:
    """The reaches of batched checkpoints: DBOS's tables, its retry, the owner token."""
    from dbos import _context, _sys_db, error
    from dbos._schemas.system_database import SystemSchema

    steps = getattr(SystemSchema, "operation_outputs", None)
    missing = [c for c in STEP_COLUMNS if steps is None or c not in steps.c]
    if missing:
        raise _moved(f"operation_outputs.{missing[0]} (SystemSchema)")
    status = getattr(SystemSchema, "workflow_status", None)
    if status is None or not {"owner_xid", "status", "workflow_uuid"} <= set(status.c.keys()):
        raise _moved("workflow_status.owner_xid (SystemSchema)")
    if not callable(getattr(_sys_db, "db_retry", None)):
        raise _moved("dbos._sys_db.db_retry")
    if "owner_xid" not in _context.DBOSContext.__init__.__code__.co_names:
        raise _moved("DBOSContext.owner_xid")
    for name in ("DBOSWorkflowCancelledError", "DBOSWorkflowConflictIDError"):
        if not hasattr(error, name):
            raise _moved(f"dbos.error.{name}")


def stop_background_threads() -> None:
    """Tell DBOS's background threads (queue pollers, scheduler, listeners) to stop;
    the workflows running here go on."""
    from dbos import _dbos

    instance = getattr(_dbos, "_dbos_global_instance", None)
    if instance is None:
        return
    events = getattr(instance, "background_thread_stop_events", None)
    if events is None:
        raise _moved("DBOS.background_thread_stop_events")
    for stop in events:
        stop.set()


def workflow_tasks() -> list[asyncio.Task[Any]]:
    """The unfinished tasks of this loop that run a DBOS workflow."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__name__", "") == WORKFLOW_COROUTINE and not task.done()
    ]


@contextmanager
def caught_writes(client: Any, catch: Callable[..., Any]) -> Iterator[None]:
    """While inside, every statement ``client``'s system database would execute is
    handed to ``catch(connection, name, values, build, **options)`` instead."""
    system = client._sys_db
    if not callable(getattr(system, "_execute_prepared", None)):
        raise _moved("SystemDatabase._execute_prepared")
    system._execute_prepared = catch
    try:
        yield
    finally:
        del system._execute_prepared


def system_schema(client: Any) -> str | None:
    """The schema of ``client``'s system tables (PostgreSQL; ``None`` on SQLite)."""
    return client._sys_db.schema  # type: ignore[no-any-return]


def new_token() -> str:
    """A new random token as DBOS draws one per enqueue (``creator_xid``)."""
    from dbos._utils import generate_uuid

    return generate_uuid()


# -- step checkpoints written in batches (``runtime/checkpoints.py``) --------------------


def owner_token() -> str | None:
    """The ownership token of the running workflow's execution (DBOS writes a step's
    checkpoint only while the workflow's row still carries it: a cancel, a resume or a
    take-over elsewhere changes it)."""
    from dbos._context import get_local_dbos_context

    context = get_local_dbos_context()
    if context is None or not hasattr(context, "owner_xid"):
        raise _moved("DBOSContext.owner_xid")
    return context.owner_xid  # type: ignore[no-any-return]


def _system_database() -> Any:
    from dbos import _dbos

    instance = getattr(_dbos, "_dbos_global_instance", None)
    system = getattr(instance, "_sys_db", None)
    if system is None or not hasattr(getattr(system, "tables", None), "operation_outputs"):
        raise _moved("DBOS._sys_db.tables.operation_outputs")
    return system


def read_steps(workflow_ids: list[str]) -> list[tuple[str, int, str, Any, Any, Any]]:
    """The recorded steps of ``workflow_ids``, in one query: (workflow, step id, step name,
    output, error, serialization) as DBOS's ``operation_outputs`` keeps them."""
    from sqlalchemy import select

    system = _system_database()
    steps = system.tables.operation_outputs
    query = select(
        steps.c.workflow_uuid,
        steps.c.function_id,
        steps.c.function_name,
        steps.c.output,
        steps.c.error,
        steps.c.serialization,
    ).where(steps.c.workflow_uuid.in_(workflow_ids))

    def read() -> list[tuple[str, int, str, Any, Any, Any]]:
        with system.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(query)]  # type: ignore[misc]

    return _patiently(system, read)()


def write_steps(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Record the finished steps ``rows`` (``workflow``, ``step``, ``name``, ``output``,
    ``serialization``, ``started``, ``owner``) in one transaction, as DBOS records one
    step: each only while its workflow's row still carries the execution's ownership
    token (the rows locked until the commit, as DBOS's ``_check_owner_txn`` locks one).
    Per workflow that could not record, why: ``cancelled`` or ``conflict``."""
    system = _system_database()

    def write() -> dict[str, str]:
        with system.engine.begin() as connection:
            return _record_steps(system, connection, rows)

    return _patiently(system, write)()  # type: ignore[no-any-return]


def _record_steps(system: Any, connection: Any, rows: list[dict[str, Any]]) -> dict[str, str]:
    import time

    lock, insert = _step_statements(system)
    ids = sorted({row["workflow"] for row in rows})
    current = {
        workflow: (owner, state)
        for workflow, owner, state in connection.execute(lock, {"ids": ids})
    }
    refused: dict[str, str] = {}
    accepted = []
    for row in rows:
        owner, state = current.get(row["workflow"], (None, None))
        if row["owner"] is not None and owner != row["owner"]:
            refused[row["workflow"]] = "cancelled" if state == "CANCELLED" else "conflict"
        else:
            accepted.append(row)
    if accepted:
        completed = int(time.time() * 1000)
        values = [
            {
                "workflow_uuid": row["workflow"],
                "function_id": row["step"],
                "function_name": row["name"],
                "started_at_epoch_ms": row["started"],
                "completed_at_epoch_ms": completed,
                "output": row["output"],
                "error": None,
                "child_workflow_id": None,
                "serialization": row["serialization"],
                "application_name": system.app_name,
                "retention_timestamp": completed,
            }
            for row in accepted
        ]
        # One statement with many parameter sets (the driver's executemany), not one
        # of many VALUES: that one was compiled anew for each batch's size, a tenth of
        # the thread's time.
        connection.execute(insert, values)
    return refused


_STEP_STATEMENTS: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _step_statements(system: Any) -> tuple[Any, Any]:
    """The lock of a batch's workflow rows (``ids``, expanding) and the insert of its
    steps, built once per system database so that SQLAlchemy compiles each once."""
    built = _STEP_STATEMENTS.get(system)
    if built is not None:
        return built
    from sqlalchemy import bindparam, select, update

    status, steps = system.tables.workflow_status, system.tables.operation_outputs
    ids = bindparam("ids", expanding=True)
    lock: Any
    if system.engine.dialect.name == "sqlite":
        # A write, so that pysqlite opens the transaction (BEGIN IMMEDIATE) here.
        lock = (
            update(status)
            .where(status.c.workflow_uuid.in_(ids))
            .values(owner_xid=status.c.owner_xid)
            .returning(status.c.workflow_uuid, status.c.owner_xid, status.c.status)
        )
    else:  # in one order, so two batches never wait for each other's rows
        lock = (
            select(status.c.workflow_uuid, status.c.owner_xid, status.c.status)
            .where(status.c.workflow_uuid.in_(ids))
            .order_by(status.c.workflow_uuid)
            .with_for_update(key_share=True)
        )
    insert = system.dialect.insert(steps).on_conflict_do_nothing(
        index_elements=["workflow_uuid", "function_id"]
    )
    _STEP_STATEMENTS[system] = lock, insert
    return lock, insert


def _patiently(system: Any, work: Callable[..., Any]) -> Callable[..., Any]:
    """DBOS's own retry of a system-database call (``db_retry``): what DBOS waits out
    (a lost PostgreSQL connection, a locked SQLite file) is waited out here too, and
    what DBOS raises (a full disk) is raised, so batched checkpoints fail as DBOS's
    own would."""
    from dbos import _sys_db

    retry = getattr(_sys_db, "db_retry", None)
    if not callable(retry):
        raise _moved("dbos._sys_db.db_retry")
    return retry(sys_db=system)(work)  # type: ignore[no-any-return]


def stop_run(workflow_id: str, why: str) -> None:
    """Stop the running workflow as DBOS's own step would on finding it ``cancelled`` or
    owned by another execution (``conflict``): DBOS then waits for its recorded end."""
    from dbos import error

    if why == "cancelled":
        raise error.DBOSWorkflowCancelledError(f"Workflow {workflow_id} is cancelled")
    raise error.DBOSWorkflowConflictIDError(workflow_id)
