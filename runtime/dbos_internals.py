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
"""

from __future__ import annotations

import asyncio
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
