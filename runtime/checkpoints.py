"""A run's step checkpoints, committed together with every other run's.

A DBOS step costs two transactions of its own, each on a thread of its own: one to
look for the step's earlier result (and for a cancellation), one to check that this
execution still owns the workflow and record the result. With thirty runs going on at
once those are most of what a run costs (a third of the process in a profile of
``bench/flow_throughput.py``), and on SQLite every record takes the one write lock in
turn. Here a flow step is still a checkpoint in DBOS's own table, numbered by DBOS
(``DBOS.reserve_step``), recorded as DBOS records it, and replayed, forked, listed and
resumed by DBOS as any step; only the reading and writing is shared:

- a run reads its recorded steps once, when its first step starts (a new run has none;
  a resumed or forked one has those before its resume point), in one query with the
  other runs starting then;
- a finished step's output is recorded with the steps the other runs finished
  meanwhile, in one transaction, before the run goes on (so a step that reached
  PagerDuty is never run again once it returned); each only while the execution still
  owns its workflow, as DBOS checks it: a run cancelled or taken over meanwhile stops
  there, as it would at DBOS's own next check.

A step whose body raises records nothing (it runs again when the run resumes), and the
steps of a traced process go through DBOS's own step, which makes their spans.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from dbos import DBOS

from pagerduty_connector.runtime import dbos_internals

T = TypeVar("T")
R = TypeVar("R")
# The most steps recorded (or runs read) in one transaction.
BATCH = 200
# The DBOS step id of the checkpoint whose body is running (``step_id``).
_STEP: contextvars.ContextVar[int | None] = contextvars.ContextVar("pdc_step", default=None)


def step_id() -> int | None:
    """The DBOS step id of the step running now, batched or DBOS's own."""
    return _STEP.get() if _STEP.get() is not None else DBOS.step_id


class Batches(Generic[T, R]):
    """Blocking database work for many callers in one call per batch, on a thread: an
    item waits while the batch before it is in the database, then goes with every item
    that arrived meanwhile (no timer: alone, an item goes at once)."""

    def __init__(self, work: Callable[[list[T]], list[R]]) -> None:
        self._work = work
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._busy = False

    async def submit(self, item: T) -> R:
        """``item``'s result, from the batch it went with."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
                try:
                    results = await loop.run_in_executor(
                        None, self._work, [item for item, _ in batch]
                    )
                except BaseException as exc:  # every caller of the batch gets it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._busy = False


class Checkpoints:
    """The batched steps of this process's runs (one per process, made at start)."""

    def __init__(self, serializer: Any, *, traced: bool) -> None:
        self._serializer = serializer
        self._traced = traced
        self._reads: Batches[str, dict[int, tuple[Any, ...]]] = Batches(self._read)
        self._writes: Batches[dict[str, Any], str | None] = Batches(self._write)
        # Per running workflow, its recorded steps (read at its first step).
        self._recorded: dict[str, dict[int, tuple[Any, ...]]] = {}

    def forget(self, workflow_id: str) -> None:
        """Drop what was read for a workflow whose run here has ended or stopped."""
        self._recorded.pop(workflow_id, None)

    async def step(self, name: str, body: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``body(*args)`` as the workflow's next DBOS step ``name``: its recorded
        output if it has one, else the body's, recorded before this returns."""
        reservation = DBOS.reserve_step()
        if self._traced:
            return await self._dbos_step(reservation, name, body, *args)
        workflow_id, number = DBOS.workflow_id or "", reservation.step_id
        recorded = self._recorded.get(workflow_id)
        if recorded is None:
            recorded = self._recorded[workflow_id] = await self._reads.submit(workflow_id)
        found = recorded.get(number)
        if found is not None:
            recorded_name, output, error, serialization = found
            if recorded_name != name or error is not None or output is None:
                # DBOS's own replay: it raises a recorded error, or names the mismatch.
                return await self._dbos_step(reservation, name, body, *args)
            if serialization == self._serializer.name():
                return self._serializer.deserialize(output)  # type: ignore[no-any-return]
            return await self._dbos_step(reservation, name, body, *args)
        owner = dbos_internals.owner_token()
        started = int(time.time() * 1000)
        token = _STEP.set(number)
        try:
            result = await body(*args)
        finally:
            _STEP.reset(token)
        refused = await self._writes.submit(
            {
                "workflow": workflow_id,
                "step": number,
                "name": name,
                "output": self._serializer.serialize(result),
                "serialization": self._serializer.name(),
                "started": started,
                "owner": owner,
            }
        )
        if refused is not None:
            dbos_internals.stop_run(workflow_id, refused)
        return result

    @staticmethod
    async def _dbos_step(reservation: Any, name: str, body: Callable[..., Any], *args: Any) -> Any:
        return await reservation.run_async({"name": name, "retries_allowed": False}, body, *args)

    @staticmethod
    def _read(workflow_ids: list[str]) -> list[dict[int, tuple[Any, ...]]]:
        found: dict[str, dict[int, tuple[Any, ...]]] = {wf: {} for wf in workflow_ids}
        for workflow, number, *rest in dbos_internals.read_steps(sorted(set(workflow_ids))):
            found[workflow][number] = tuple(rest)
        return [found[wf] for wf in workflow_ids]

    @staticmethod
    def _write(rows: list[dict[str, Any]]) -> list[str | None]:
        refused = dbos_internals.write_steps(rows)
        return [refused.get(row["workflow"]) for row in rows]
