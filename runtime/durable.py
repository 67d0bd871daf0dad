"""Durable flow runs on DBOS Transact: an execution is a workflow, a flow step a checkpoint.

Each recorded execution runs as the DBOS workflow whose id is the execution's id. Its
first step reads the plan (the trigger's output, the flow, the connection) and every
attempt of every flow step is a DBOS step: a finished step's output is stored and
never run again, so after a crash the workflow resumes where it stopped and each step
that reached PagerDuty is not sent twice (as far as a process that dies between
PagerDuty's answer and the checkpoint allows). Retryable failures (429, 5xx, network)
are retried inside the workflow with bounded backoff and durable sleeps, and every
attempt is recorded.

Workflows wait in one DBOS queue partitioned by instance and flow, so no flow runs more
than ``PDC_FLOW_CONCURRENCY`` executions at once, across every process sharing the
database. DBOS keeps its tables in the runtime's own database (SQLite file or
PostgreSQL), and everything it stores (inputs, step outputs) is sealed with the
runtime's Fernet key by ``SealedSerializer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import pickle
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography.fernet import Fernet
from dbos import (
    DBOS,
    DBOSClient,
    EnqueueOptions,
    Serializer,
    SetEnqueueOptions,
    SetWorkflowID,
)
from sqlalchemy import column, select, table, update
from sqlalchemy.engine import make_url

from pagerduty_connector.component.errors import ComponentError, PagerDutyError
from pagerduty_connector.component.redact import get_logger, redact
from pagerduty_connector.runtime import dbos_internals, metrics
from pagerduty_connector.runtime.checkpoints import Checkpoints, step_id
from pagerduty_connector.runtime.logs import throttle
from pagerduty_connector.runtime.store import (
    ExecutionRow,
    ExecutorRow,
    now,
)
from pagerduty_connector.runtime.store.outage import patiently, unavailable, why

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from dbos import Queue

    from pagerduty_connector.runtime.engine import Engine
    from pagerduty_connector.runtime.settings import RuntimeSettings
    from pagerduty_connector.runtime.store import Store

log = get_logger("durable")
QUEUE = "pdc-flows"
# Flows with a concurrencyKey: one run at a time per key, in arrival order (DBOS takes a
# partition's runs by enqueue time, then by workflow id, and execution ids are
# time-ordered: see ``new_id``).
ORDERED_QUEUE = "pdc-ordered"
# Flows with a wait step: a waiting run holds its place in its queue's partition for as
# long as it waits, so these have a bound of their own (PDC_WAITING_CONCURRENCY), or
# four runs waiting ten minutes would hold up every other run of their flow.
PATIENT_QUEUE = "pdc-patient"
# Loop items whose earlier run failed, run again by a retry (a fork of the item's
# workflow): with no limit and no partition, as the run that waits for them already
# holds its flow's place (``runtime/steps/loop.py``).
ITEM_QUEUE = "pdc-items"
# One version for every process: DBOS recovers only workflows of its own version, and
# any replica must be able to finish another's executions.
APPLICATION_VERSION = "pdc-1"
# A step's body: its arguments in, its outcome (``ok``, ``result`` or ``error``) out.
StepBody = Callable[..., Awaitable[dict[str, Any]]]
_engine: Engine | None = None


def current() -> Engine:
    """The engine the running workflows belong to (DBOS is one per process)."""
    if _engine is None:
        raise RuntimeError("the durable engine is not started")
    return _engine


def system_database_url(database_url: str) -> str:
    """DBOS's (synchronous) URL for the runtime's database: the same file or database."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return url.set(drivername="sqlite").render_as_string(hide_password=False)
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


_NO_ARGUMENTS: dict[str, Any] = {"args": (), "kwargs": {}}
# What a run's workflow returns: how it ended.
RUN_ENDS = frozenset({"succeeded", "failed"})


class SealedSerializer(Serializer):
    """What DBOS stores (workflow inputs, step outputs, errors), pickled then sealed with
    Fernet: step outputs can hold PagerDuty data and secrets, and only data sealed with
    the runtime's key is ever unpickled."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())
        self._no_arguments: str | None = None
        self._outcomes: dict[str, str] = {}

    def serialize(self, data: Any) -> str:
        """Seal ``data``."""
        # Every run's inputs are the same, none (the execution is the workflow's id), and
        # sealing them again per queued delivery was a fifth of what enqueueing it cost;
        # so is nearly every run's output, how it ended. The one sealed copy of each tells
        # a reader nothing the workflow's status does not say already.
        if type(data) is dict and data == _NO_ARGUMENTS:
            if self._no_arguments is None:
                self._no_arguments = self._seal(data)
            return self._no_arguments
        if type(data) is str and data in RUN_ENDS:
            if data not in self._outcomes:
                self._outcomes[data] = self._seal(data)
            return self._outcomes[data]
        return self._seal(data)

    def _seal(self, data: Any) -> str:
        return self._fernet.encrypt(pickle.dumps(data)).decode("ascii")

    def deserialize(self, serialized_data: str) -> Any:
        """Open what ``serialize`` sealed."""
        return pickle.loads(self._fernet.decrypt(serialized_data.encode("ascii")))

    def name(self) -> str:
        """The name DBOS records next to each value."""
        return "pdc_sealed_pickle"


WORKFLOW = "pdc.execution"
ITEM_WORKFLOW = "pdc.item-run"
PLAN_STEP = "pdc.plan"
SCHEDULE_POLL = 5.0


def enqueue_options(execution_id: str, placement: tuple[str, str]) -> EnqueueOptions:
    """How a recorded execution is queued: its workflow, under its own id, in the queue
    and partition ``placement`` names."""
    queue_name, partition_key = placement
    return {
        "workflow_name": WORKFLOW,
        "queue_name": queue_name,
        "workflow_id": execution_id,
        "queue_partition_key": partition_key,
        "app_version": APPLICATION_VERSION,
    }


def enqueuer(database_url: str, secret_key: str, engine: Any = None) -> DBOSClient:
    """A DBOS client that only enqueues, inside the writer's own transactions."""
    return DBOSClient(
        system_database_url=None if engine is not None else system_database_url(database_url),
        system_database_engine=engine,
        serializer=SealedSerializer(secret_key),
        lazy=True,
    )


def checkpoint_engine(url: str) -> Any:
    """DBOS's engine. On SQLite: DBOS's own connection settings (IMMEDIATE transactions,
    a 30 s busy timeout, foreign keys) plus ``synchronous=NORMAL``: in WAL mode a commit
    then waits for no fsync, and survives a crash of the process (not of the machine).
    Checkpoints are written many times per run; the delivery records that a 202
    promises stay ``FULL`` (the writer's own connection)."""
    from sqlalchemy import create_engine, event

    if not url.startswith("sqlite"):
        return None

    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _settings(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = "IMMEDIATE"
        for pragma in ("busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    return engine


DRAIN_LIMIT = 120.0
# A pending run this process has had no task for, for this long, is resumed (seconds).
ORPHAN_AGE = 15.0
# The most executions whose plan this process keeps until their run starts.
PLANNED_LIMIT = 4096
# A recorded execution whose run is not queued this long after it was received is queued
# (seconds): a retry is recorded, then forked, and the two must not race.
LOST_AFTER = 30.0
# Executions looked at per sweep.
SWEEP_BATCH = 200
# DBOS statuses of a workflow that has ended.
ENDED = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
UNFINISHED = ("received", "running", "waiting")


class StepFailed(ComponentError):
    """A flow step failed for good (after its retries); the message says why."""


class RunSuspended(asyncio.CancelledError):
    """A run stopped where it was because the database could not take its checkpoint.

    Raised as a cancellation, for which DBOS records nothing: the workflow stays pending
    and is resumed from its last checkpoint once the database is back. (An error would
    be recorded as the workflow's end, which DBOS cannot resume.)
    """


class _StoppedRuns(logging.Filter):
    """Drops DBOS's warning for each run ``Durable.stop`` cancels: a stop is not a
    fault, and ``stop`` says once how many runs it stopped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Asyncio task cancelled for workflow")


class Durable:
    """Starts DBOS in this process and submits executions to its queue."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.queue: Queue | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._checkpoints: Any = None
        self.checkpoints: Checkpoints | None = None
        # The runs going on in this process now (their workflow ids), and those of them
        # that a stop need not wait for: at a step boundary, or asleep between tries.
        self.live: set[str] = set()
        self.parked: set[str] = set()
        # Per execution, how many of its steps (loop items') are in a wait step here.
        self.waiting: dict[str, int] = {}
        self.stopping = False
        # Executions recorded by this process whose run has not started: what their
        # plan step would read of their row (instance, flow, trigger output).
        self.planned: dict[str, tuple[str, str, dict[str, Any]]] = {}
        # Pending runs of this executor seen without a task here at the last sweep.
        self._unowned: set[str] = set()

    async def start(self) -> None:
        """Launch DBOS (recovering this executor's unfinished workflows) and the queues;
        a process that runs no flows only enqueues to them."""
        global _engine
        settings = self.engine.settings
        _engine = self.engine
        dbos_internals.check()
        url = system_database_url(settings.resolved_database_url())
        self._checkpoints = checkpoint_engine(url)
        serializer = SealedSerializer(settings.secret_key or "")
        self.checkpoints = Checkpoints(serializer, traced=bool(settings.otlp_traces_endpoint))
        DBOS(
            config={
                "name": "pagerduty-connector",
                "system_database_url": url,
                "system_database_engine": self._checkpoints,
                "executor_id": settings.executor,
                "application_version": APPLICATION_VERSION,
                "serializer": serializer,
                "log_level": "WARNING",
                # On SQLite DBOS polls for notifications; its stop waits for one poll,
                # which by default is a second.
                "notification_listener_polling_interval_sec": settings.queue_polling_interval,
                # How soon a replica sees a schedule deployed elsewhere (the schedule
                # trigger); one small query per replica each time.
                "scheduler_polling_interval_sec": SCHEDULE_POLL,
                **tracing(settings),
            }
        )
        if not settings.runs_flows:
            # Queued runs are left to the worker processes; this one only enqueues.
            DBOS.listen_queues([])
        # While the database is away each DBOS thread complains every second.
        throttle("dbos")
        # Launched from the running loop: DBOS then runs queued workflows on this loop.
        DBOS.launch()
        self.queue = await DBOS.register_queue_async(
            QUEUE,
            partition_concurrency=settings.flow_concurrency,
            polling_interval_sec=settings.queue_polling_interval,
        )
        await DBOS.register_queue_async(
            ORDERED_QUEUE,
            partition_concurrency=1,
            polling_interval_sec=settings.queue_polling_interval,
        )
        self.patient = await DBOS.register_queue_async(
            PATIENT_QUEUE,
            partition_concurrency=settings.waiting_concurrency,
            polling_interval_sec=settings.queue_polling_interval,
        )
        await DBOS.register_queue_async(
            ITEM_QUEUE, polling_interval_sec=settings.queue_polling_interval
        )
        await self.beat()
        self._watcher = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        """Stop DBOS; unfinished workflows resume at the next start."""
        global _engine
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        # Stop the queues first, so no run starts while the ones here are stopped; then
        # cancel every workflow task (DBOS records nothing for a cancelled one, so each
        # resumes from its last checkpoint), also one dispatched as the queues stopped.
        dbos_log = logging.getLogger("dbos")
        if not any(isinstance(f, _StoppedRuns) for f in dbos_log.filters):
            dbos_log.addFilter(_StoppedRuns())
        dbos_internals.stop_background_threads()
        await self._let_steps_finish(self.engine.settings.stop_grace)
        interrupted: set[asyncio.Task[Any]] = set()
        for _ in range(3):
            await asyncio.sleep(self.engine.settings.queue_polling_interval)
            tasks = dbos_internals.workflow_tasks()
            if not tasks:
                break
            interrupted.update(tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if interrupted:
            log.info("%d runs stopped; they resume from their checkpoints", len(interrupted))
        DBOS.destroy(destroy_registry=False)
        if self._checkpoints is not None:  # ours, so DBOS leaves it open
            self._checkpoints.dispose()
        _engine = None

    async def _let_steps_finish(self, grace: float) -> None:
        """A planned stop: no run here starts another step (``between_steps`` parks it),
        and the steps in flight get up to ``grace`` seconds to finish and be checkpointed,
        so the runs resume after them and nothing is sent twice. Only a step still
        running when the time is up is cut (and sent again at the resume)."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        busy = self.live - self.parked
        if busy:
            log.info("stopping: %d runs finish the step they are in (up to %g s)", len(busy), grace)
        while busy and loop.time() < deadline:
            await asyncio.sleep(0.05)
            busy = self.live - self.parked
        if busy:
            log.warning(
                "%d runs were still in a step after %g s (PDC_STOP_GRACE): that step is cut "
                "and runs again when the run resumes",
                len(busy),
                grace,
            )

    def remember(
        self, execution_id: str, instance_id: str, flow: str, trigger: dict[str, Any]
    ) -> None:
        """Keep what the plan step of an execution being recorded here reads of its row,
        for its run (if it starts in this process) to read nothing: a tenth of a run's
        database work. The oldest go first past ``PLANNED_LIMIT`` (those runs read)."""
        if not self.engine.settings.runs_flows:
            return
        if len(self.planned) >= PLANNED_LIMIT:
            self.planned.pop(next(iter(self.planned)))
        self.planned[execution_id] = (instance_id, flow, trigger)

    def forget(self, workflow_id: str) -> None:
        """A run here has ended or stopped: it is no longer live, parked or read."""
        self.live.discard(workflow_id)
        self.parked.discard(workflow_id)
        if self.checkpoints is not None:
            self.checkpoints.forget(workflow_id)

    async def between_steps(self, execution_id: str) -> None:
        """Return at once, unless the process is stopping: then wait here, at a checkpoint,
        until the stop cancels the run (it resumes from this point)."""
        if not self.stopping:
            return
        self.parked.add(execution_id)
        await asyncio.Event().wait()

    @contextlib.asynccontextmanager
    async def resting(self, execution_id: str) -> AsyncIterator[None]:
        """A durable sleep between tries: a stop need not wait for its end (DBOS recorded
        when it wakes, and a resumed run sleeps until then)."""
        self.parked.add(execution_id)
        try:
            yield
        finally:
            self.parked.discard(execution_id)

    async def submit(
        self, execution_id: str, instance_id: str, flow: str, *, patient: bool = False
    ) -> None:
        """Queue the workflow of a recorded execution (idempotent: its id is the
        execution's, so a second submit finds the first)."""
        queue = self.patient if patient else self.queue
        assert queue is not None
        with (
            SetWorkflowID(execution_id),
            SetEnqueueOptions(queue_partition_key=partition(instance_id, flow)),
        ):
            await queue.enqueue_async(run_execution)

    async def beat(self) -> None:
        """Say this process is alive."""
        me = self.engine.settings.executor
        async with self.engine.store.session() as db:
            row = await db.get(ExecutorRow, me)
            if row is None:
                db.add(ExecutorRow(executor_id=me, heartbeat_at=now()))
            else:
                row.heartbeat_at = now()
            await db.commit()

    async def take_over(self) -> list[str]:
        """Resume the runs of every process silent for longer than ``executor_timeout``;
        return their ids. A silent process is claimed (its heartbeat moved to now) in one
        update, so two live processes never take over the same one."""
        settings = self.engine.settings
        cutoff = now() - timedelta(seconds=settings.executor_timeout)
        async with self.engine.store.session() as db:
            silent = (
                (
                    await db.execute(
                        select(ExecutorRow.executor_id).where(
                            ExecutorRow.heartbeat_at < cutoff,
                            ExecutorRow.executor_id != settings.executor,
                        )
                    )
                )
                .scalars()
                .all()
            )
        resumed: list[str] = []
        for executor in silent:
            async with self.engine.store.session() as db:
                claimed = await db.execute(
                    update(ExecutorRow)
                    .where(ExecutorRow.executor_id == executor, ExecutorRow.heartbeat_at < cutoff)
                    .values(heartbeat_at=now())
                )
                await db.commit()
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue
            runs = await DBOS.list_workflows_async(
                status="PENDING", executor_id=executor, load_input=False, load_output=False
            )
            for run in runs:
                await DBOS.resume_workflow_async(run.workflow_id, queue_name=run.queue_name)
                resumed.append(run.workflow_id)
            if runs:
                log.warning("took over %d runs of silent executor %s", len(runs), executor)
        return resumed

    async def _watch(self) -> None:
        outage = False
        while True:
            await asyncio.sleep(self.engine.settings.heartbeat_interval)
            try:
                await self.beat()
                await self.take_over()
                if self.engine.settings.runs_flows:
                    await self.sweep()
            except Exception as exc:  # tried again at the next beat
                if not unavailable(exc):
                    log.exception("heartbeat, take-over or sweep failed")
                elif not outage:
                    log.warning("heartbeat: the database is unavailable (%s)", why(exc))
                outage = outage or unavailable(exc)
                continue
            if outage:
                log.info("heartbeat: the database is back")
                outage = False

    async def sweep(self) -> None:
        """Leave no execution unfinished with nothing running it: settle the executions
        whose run ended without saying so, resume this process's runs left pending with
        no task, queue the records whose run was never queued; and drop expired state."""
        from pagerduty_connector.runtime import state

        await self.settle_ended()
        await self.resume_orphans()
        await self.engine.requeue_unfinished(older_than=LOST_AFTER)
        await state.sweep(self.engine.store)

    async def settle_ended(self) -> list[str]:
        """Record the end of executions still ``received``/``running`` whose workflow has
        ended (an error DBOS recorded, a cancellation, an end whose record could not be
        written); their ids."""
        workflows = workflow_table(self.engine.store)
        query = (
            select(ExecutionRow.id)
            .join(workflows, workflows.c.workflow_uuid == ExecutionRow.id)
            .where(ExecutionRow.status.in_(UNFINISHED), workflows.c.status.in_(ENDED))
            .limit(SWEEP_BATCH)
        )
        async with self.engine.store.session() as db:
            ended = list((await db.execute(query)).scalars())
        for execution_id in ended:
            info = await DBOS.get_workflow_status_async(execution_id)
            if info is None:
                continue
            if info.status == "SUCCESS" and info.output in ("succeeded", "failed"):
                status, error = info.output, "its step records could not be written"
            elif info.status == "CANCELLED":
                status, error = "cancelled", "the run was cancelled"
            else:
                reason = info.error or info.status
                status, error = (
                    "failed",
                    redact(f"the run stopped: {type(reason).__name__}: {reason}"),
                )
            log.warning("execution %s had ended without its record: %s", execution_id, error)
            await self.engine.finish(execution_id, status, error=error)
        return ended

    async def resume_orphans(self) -> list[str]:
        """Resume this executor's pending runs that have no task in this process (one
        stopped because the database was away, or whose start failed inside DBOS); their
        ids. A run counts as one only when no task had it at two sweeps in a row and it
        has not changed for ``ORPHAN_AGE`` seconds, so a run starting now is never
        resumed beside itself."""
        me = self.engine.settings.executor
        pending = await DBOS.list_workflows_async(
            status="PENDING", executor_id=me, load_input=False, load_output=False
        )
        settled = (time.time() - ORPHAN_AGE) * 1000
        unowned = {
            run.workflow_id: run
            for run in pending
            if run.workflow_id not in self.live and (run.updated_at or 0) < settled
        }
        orphans = [unowned[i] for i in unowned.keys() & self._unowned]
        self._unowned = set(unowned) - {run.workflow_id for run in orphans}
        for run in orphans:
            if run.workflow_id in self.live:  # it started meanwhile
                continue
            await DBOS.resume_workflow_async(run.workflow_id, queue_name=run.queue_name)
        if orphans:
            log.warning("resumed %d runs left pending with no task", len(orphans))
        return [run.workflow_id for run in orphans]

    async def fork(
        self,
        execution_id: str,
        checkpoint: int,
        new_id: str,
        partition: str,
        *,
        patient: bool = False,
    ) -> None:
        """Run execution ``execution_id`` again as ``new_id`` from its DBOS step
        ``checkpoint``: the steps before it keep their recorded outputs."""
        queue = PATIENT_QUEUE if patient else QUEUE
        with SetWorkflowID(new_id):
            await DBOS.fork_workflow_async(
                execution_id, checkpoint, queue_name=queue, queue_partition_key=partition
            )

    async def cancel(self, execution_id: str) -> None:
        """Cancel an execution's run wherever it is: queued, it never starts; running (in
        any process), it stops when it next reaches DBOS, before its next step. So do
        the workflows of its loop items (their ids start with the execution's)."""
        await DBOS.cancel_workflow_async(execution_id)
        items = await DBOS.list_workflows_async(
            workflow_id_prefix=f"{execution_id}.",
            status=["PENDING", "ENQUEUED"],
            load_input=False,
            load_output=False,
        )
        if items:
            await DBOS.cancel_workflows_async([w.workflow_id for w in items])

    async def retry_point(self, execution: ExecutionRow) -> int:
        """The DBOS step a retry of ``execution`` starts from (the steps before it keep
        their recorded outputs): the first attempt of the flow step that failed; else,
        for a run that failed between attempts (a template, the database, a fault of
        ours), the first DBOS step that recorded an error, or the one after the last
        step recorded, so that nothing that reached PagerDuty is sent again."""
        return await resume_point(execution.id, execution.steps or [])

    async def drain(self) -> None:
        """Wait until no execution is unfinished (tests, and operators before an upgrade);
        ``TimeoutError`` after ``DRAIN_LIMIT`` seconds."""
        deadline = asyncio.get_running_loop().time() + DRAIN_LIMIT
        while rows := await self.engine.unfinished():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(rows)} executions are still unfinished")
            for execution_id, *_ in rows:
                try:
                    handle = await DBOS.retrieve_workflow_async(execution_id)
                    await handle.get_result()
                except Exception:  # the record says what went wrong; or not queued yet
                    await asyncio.sleep(0.05)


async def resume_point(workflow_id: str, records: list[dict[str, Any]]) -> int:
    """The DBOS step of workflow ``workflow_id`` (whose flow steps recorded ``records``)
    a retry starts from: see ``Durable.retry_point``."""
    attempts = failed_attempts(records)
    if attempts:
        return int(attempts[0]["checkpoint"])
    recorded = await DBOS.list_workflow_steps_async(workflow_id)
    errored = [s["function_id"] for s in recorded if s["error"] is not None]
    if errored:
        return min(errored)
    return max((s["function_id"] for s in recorded), default=-1) + 1


def failed_attempts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The attempts of the first failed action in ``records``, nested steps included
    (a branch's, a loop item's): where a retry starts. For a loop whose items ran side
    by side, the checkpoint that took the first failed item's result (the item's own
    steps are in its workflow: the retry runs that item again from its failed step)."""
    for record in records:
        if record.get("status") != "failed":
            continue
        if record.get("attempts"):
            return list(record["attempts"])
        for lane, item in zip(record.get("lanes") or [], record.get("items") or [], strict=False):
            if any(r.get("status") == "failed" for r in item) and "checkpoint" in lane:
                return [{"checkpoint": lane["checkpoint"]}]
        inner = [
            *(record.get("steps") or []),
            *(r for item in record.get("items") or [] for r in item),
        ]
        found = failed_attempts(inner)
        if found:
            return found
    return []


def workflow_table(store: Store) -> Any:
    """DBOS's table of workflows (``workflow_status``, documented among its system tables)
    in the runtime's database, for joins with the executions: one row per run."""
    schema = None if store.is_sqlite else "dbos"
    return table("workflow_status", column("workflow_uuid"), column("status"), schema=schema)


def partition(instance_id: str, flow: str) -> str:
    """The queue partition of a flow: its concurrency limit holds per partition."""
    return f"{instance_id}/{flow}"


def placement(
    instance_id: str, flow: str, key: str | None, *, patient: bool = False
) -> tuple[str, str]:
    """Where a run waits: its flow's partition (of the patient queue when the flow has
    a wait step), or with a concurrency key that key's partition of the ordered queue."""
    if key is None:
        return PATIENT_QUEUE if patient else QUEUE, partition(instance_id, flow)
    return ORDERED_QUEUE, f"{partition(instance_id, flow)}#{key}"


def retryable(error: ComponentError, method: str | None) -> bool:
    """429 always, and a request that provably never left (refused, unresolvable, no
    connection in time) whatever its method; 5xx and other network failures unless a
    POST may already have taken effect."""
    if not isinstance(error, PagerDutyError):
        return False
    if error.status == 429 or not error.sent:
        return True
    sent_safely = (method or error.method or "GET").upper() != "POST"
    return sent_safely and (error.status is None or error.status >= 500)


def checkpointed(name: str) -> Callable[[StepBody], StepBody]:
    """The body as the workflow's next DBOS step ``name``, its checkpoint read and
    written in batches with the other runs' (``runtime/checkpoints.py``)."""

    def wrap(body: StepBody) -> StepBody:
        @functools.wraps(body)
        async def step(*args: Any) -> Any:
            checkpoints = current().durable.checkpoints
            assert checkpoints is not None
            return await checkpoints.step(name, body, *args)

        return step

    return wrap


class Planned(NamedTuple):
    """What the plan step reads of an execution's row."""

    instance_id: str
    flow: str
    trigger: dict[str, Any]


@checkpointed(PLAN_STEP)
async def load_plan(execution_id: str) -> dict[str, Any] | None:
    """What the execution runs (its trigger output and the flow as it is now), and when it
    started: the run is recorded as running here, in the same checkpoint, so a resumed
    run keeps the first start and no step of its own is spent on it."""
    engine = current()

    async def read() -> Any:
        # Only what the plan needs, not the row (its body, headers and steps as JSON):
        # a tenth of the run's own reading, measured with bench/flow_throughput.py.
        query = select(ExecutionRow.instance_id, ExecutionRow.flow, ExecutionRow.trigger).where(
            ExecutionRow.id == execution_id
        )
        async with engine.store.engine.connect() as connection:
            return (await connection.execute(query)).one_or_none()

    known = engine.durable.planned.pop(execution_id, None)
    execution = Planned(*known) if known else await patiently(read, f"execution {execution_id}")
    # The instance as intake sees it (the cache every delivery reads, dropped on every
    # change to the instance or its connection): a read of its row per run was a tenth
    # of a run's database work.
    instance = (
        await patiently(
            partial(engine.intake.get, execution.instance_id), f"execution {execution_id}"
        )
        if execution
        else None
    )
    if execution is None or instance is None or execution.flow not in instance.flows:
        return None
    started = now()
    update = partial(
        engine.writer.update, execution_id, {"status": "running", "started_at": started}
    )
    await patiently(update, f"execution {execution_id}")
    return {
        "execution": execution_id,
        "instance": instance.instance_id,
        "flow": instance.flows[execution.flow],
        "trigger": execution.trigger or {},
        "connection": instance.connection.id if instance.connection else None,
        "urls": {name: engine.webhook_url(instance.instance_id, name) for name in instance.flows},
        "started": started.isoformat(),
    }


async def retry_flow(execution_id: str) -> dict[str, Any] | None:
    """The flow a retry runs when it is not the one its first run planned."""
    engine = current()

    async def read() -> dict[str, Any] | None:
        async with engine.store.session() as db:
            query = select(ExecutionRow.flow_definition).where(ExecutionRow.id == execution_id)
            return (await db.execute(query)).scalar_one_or_none()

    return await patiently(read, f"execution {execution_id}")


@DBOS.step(name="pdc.started")
async def mark_started(execution_id: str) -> str:
    """Record that the execution started: a separate checkpoint only in runs planned
    before the plan step recorded it (their checkpoints number it), kept so they resume."""
    started = now()
    update = partial(
        current().writer.update, execution_id, {"status": "running", "started_at": started}
    )
    await patiently(update, f"execution {execution_id}")
    return started.isoformat()


def tracing(settings: RuntimeSettings) -> dict[str, Any]:
    """DBOS's configuration for OpenTelemetry: a span per run and per step, exported to
    ``PDC_OTLP_TRACES_ENDPOINT`` (none when it is unset), named for this executor."""
    if not settings.otlp_traces_endpoint:
        return {}
    return {
        "enable_otlp": True,
        "otlp_traces_endpoints": [settings.otlp_traces_endpoint],
        "otlp_attributes": {"service.instance.id": settings.executor},
    }


def annotate(**attributes: str) -> None:
    """Add ``attributes`` to the current run's or step's span, when runs are traced."""
    engine = _engine
    if engine is None or not engine.settings.otlp_traces_endpoint:
        return
    span = DBOS.span
    for key, value in attributes.items():
        span.set_attribute(key, value)


def measured(label: Callable[..., str]) -> Callable[[StepBody], StepBody]:
    """Count each attempt a step body makes, and its time, in the metrics (``label``
    names its action from its arguments). Under the DBOS step: a resumed run that
    replays a recorded attempt does not count it again."""

    def wrap(body: StepBody) -> StepBody:
        @functools.wraps(body)
        async def timed(*args: Any) -> dict[str, Any]:
            begun, action = time.perf_counter(), label(*args)
            annotate(**{"pdc.action": action, "pdc.execution": DBOS.workflow_id or ""})
            outcome = await body(*args)
            metrics.step_attempt(
                action,
                time.perf_counter() - begun,
                outcome["ok"],
                outcome.get("retryable", False),
            )
            return outcome

        return timed

    return wrap


@checkpointed("pdc.action")
@measured(lambda _connection, action, *_: action)
async def call_action(
    connection_id: str | None, action: str, inputs: dict[str, Any], urls: dict[str, str]
) -> dict[str, Any]:
    """One attempt of one flow step; failures are returned, not raised, so each is kept."""
    engine = current()
    try:
        connection = (
            await patiently(partial(engine.intake.connection, connection_id), f"step {action}")
            if connection_id
            else None
        )
        result = await engine.run_action(connection, action, inputs, urls)
    except ComponentError as exc:
        method = getattr(engine.manifest.runnable(action), "request", None)
        return _failed(f"{type(exc).__name__}: {exc}", retryable(exc, method and method.method))
    except Exception as exc:
        if unavailable(exc):  # the database, not PagerDuty or the step (an OAuth refresh)
            return _failed(f"the database was unavailable: {why(exc)}", True)
        # A fault of ours: the step fails, with why, and is not retried.
        log.exception("step %s of execution %s failed unexpectedly", action, DBOS.workflow_id)
        return _failed(f"unexpected error: {type(exc).__name__}: {exc}", False)
    return {"ok": True, "result": result, "checkpoint": step_id(), "at": now().isoformat()}


def _failed(error: str, retry: bool) -> dict[str, Any]:
    """A failed attempt as ``call_action`` returns it (and DBOS keeps it)."""
    return {
        "ok": False,
        "error": redact(error),
        "retryable": retry,
        "checkpoint": step_id(),
        "at": now().isoformat(),
    }


class DurableServices:
    """What a durable run's steps need (``steps.Services``): every effect a DBOS step or
    a durable sleep, and a clock made of recorded times only (the run's start, then each
    attempt's end and each wait's end), so a resumed run renders what it rendered."""

    def __init__(
        self, engine: Engine, plan: dict[str, Any], started: str, execution_id: str | None = None
    ) -> None:
        from pagerduty_connector.runtime.templates import parse_time

        self.engine, self.plan, self.manifest = engine, plan, engine.manifest
        # The execution the steps belong to (a loop item's workflow is not it).
        self.execution_id = execution_id or DBOS.workflow_id or ""
        self._parse = parse_time
        self.clock = parse_time(started)
        # How many times each loop has begun in this workflow: part of its items' ids,
        # so a loop run twice (inside another loop) starts items of its own each time.
        self.loops: dict[str, int] = {}

    def lanes(self, runner: Any, loop: Any) -> ItemWorkflows:
        """A loop's items, each a workflow of its own."""
        begun = self.loops[loop.name] = self.loops.get(loop.name, -1) + 1
        return ItemWorkflows(self, runner.flow_name, loop, begun)

    def now(self) -> Any:
        """The run's clock."""
        return self.clock

    def advance(self, moment: str | None) -> None:
        """Move the clock on to a recorded moment (never back)."""
        if moment:
            self.clock = max(self.clock, self._parse(moment))

    async def action(self, step: Any, inputs: dict[str, Any], record: dict[str, Any]) -> Any:
        """The action, each attempt a checkpoint, retried (``attempt``)."""
        plan = self.plan
        return await attempt(
            self,
            record,
            lambda: call_action(plan["connection"], step.action, inputs, plan["urls"]),
        )

    async def http(self, request: dict[str, Any], record: dict[str, Any]) -> Any:
        """An http step's request, each attempt a checkpoint, retried (``attempt``)."""
        return await attempt(self, record, lambda: http_call(request))

    async def state(self, operation: dict[str, Any]) -> Any:
        """A key/value operation on the instance's store: one checkpoint, so a resumed
        run does not increment twice."""
        await self.engine.durable.between_steps(DBOS.workflow_id or "")
        return await state_operation(self.plan["instance"], operation)

    async def wait(self, seconds: float, record: dict[str, Any]) -> None:
        """A durable sleep (DBOS records when it ends; a resumed run sleeps only what is
        left), the execution shown as ``waiting`` meanwhile; the clock then moves to the
        end of the wait. A planned stop need not wait for it."""
        durable, workflow_id = self.engine.durable, DBOS.workflow_id or ""
        await durable.between_steps(workflow_id)
        until = self.clock.add(seconds=seconds)
        if seconds > 0:
            # Items of a loop can wait side by side: the execution is waiting until the
            # last of them (in this process) wakes.
            execution_id = self.execution_id
            waiting = durable.waiting[execution_id] = durable.waiting.get(execution_id, 0) + 1
            why = f"waiting until {until.isoformat()} (step {record['name']})"
            if waiting == 1:
                await self._status(execution_id, {"status": "waiting", "reason": why})
            async with durable.resting(workflow_id):
                await DBOS.sleep_async(seconds)
            durable.waiting[execution_id] -= 1
            if not durable.waiting[execution_id]:
                del durable.waiting[execution_id]
                await self._status(execution_id, {"status": "running", "reason": None})
        self.clock = until

    async def _status(self, execution_id: str, values: dict[str, Any]) -> None:
        update = partial(self.engine.writer.update, execution_id, values)
        await patiently(update, f"execution {execution_id}")


class ItemWorkflows:
    """The items of one loop of a durable run, each a DBOS workflow (``pdc.item``) with
    its own checkpoints: items in flight at once cannot share the run's, whose order
    would then depend on which item's step happened to start first.

    An item's workflow id is ``<execution>.<loop>.<n>.<index>``: in the run's own
    checkpoints (DBOS records a started child), so a resumed run finds its items again
    and a retry (a fork of the run) keeps those started before its fork point."""

    def __init__(self, services: DurableServices, flow_name: str, loop: Any, begun: int) -> None:
        self.services, self.flow_name, self.loop = services, flow_name, loop
        self.prefix = f"{DBOS.workflow_id}.{loop.name}.{begun}"
        self.definition = loop.model_dump(by_alias=True, exclude_none=True)

    async def start(self, index: int, scope: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
        """Start item ``index`` (at a step boundary: a stopping process starts none).
        The item's workflow gets the scope's data; its clock is its own (``now``)."""
        services = self.services
        engine = services.engine
        await engine.durable.between_steps(DBOS.workflow_id or "")
        data = {k: v for k, v in scope.items() if k != "now"}
        with SetWorkflowID(f"{self.prefix}.{index}"):
            handle = await DBOS.start_workflow_async(
                run_loop_item,
                services.plan,
                self.flow_name,
                self.definition,
                data,
                services.clock.isoformat(),
            )
        child = handle.get_workflow_id()  # on a retry, maybe an earlier run's item

        async def result() -> dict[str, Any]:
            me = DBOS.workflow_id or ""
            async with engine.durable.resting(me):
                outcome = await item_result(child, services.execution_id)
            services.advance(outcome["at"])
            return {
                **outcome["result"],
                "workflow": outcome["workflow"],
                "checkpoint": outcome["checkpoint"],
            }

        return result


@DBOS.workflow(name=ITEM_WORKFLOW)
async def run_loop_item(
    plan: dict[str, Any],
    flow_name: str,
    loop: dict[str, Any],
    scope: dict[str, Any],
    clock: str,
) -> dict[str, Any]:
    """One item of a loop whose items run side by side: its steps, checkpointed here."""
    from pagerduty_connector.runtime.flows import Flow
    from pagerduty_connector.runtime.steps import run_item, walk
    from pagerduty_connector.runtime.steps.loop import ForEachStep

    engine = current()
    me = DBOS.workflow_id or ""
    execution_id = me.split(".", 1)[0]
    engine.durable.live.add(me)
    try:
        body = ForEachStep.model_validate(loop).steps
        if execution_id != plan["execution"] and (definition := await retry_flow(execution_id)):
            # A retry that runs the item again, maybe on the flow as it is now.
            name = loop["name"]
            found = [s for s in walk(Flow.model_validate(definition).steps) if s.name == name]
            if found and found[0].KEY == "forEach":
                body = found[0].steps
        services = DurableServices(engine, plan, clock, execution_id)
        return await run_item(flow_name, services, body, {**scope, "now": services.now})
    except Exception as exc:
        if unavailable(exc):
            log.warning("a loop item of %s waits for the database: %s", execution_id, why(exc))
            raise RunSuspended(me) from None
        raise
    finally:
        engine.durable.forget(me)


@DBOS.step(name="pdc.item")
async def item_result(child: str, execution_id: str) -> dict[str, Any]:
    """Wait for a loop item's workflow to end; its result. An item an earlier run
    started (a retry keeps it) is taken as it ended if it succeeded, else run again
    from its failed step (a fork, ``<execution>.<rest of its id>``), as a retry of
    the whole run would."""
    try:
        if not child.startswith(f"{execution_id}."):
            child = await _renewed(child, execution_id)
        result = await DBOS.get_result_async(child)
    except Exception as exc:
        if unavailable(exc):
            raise RunSuspended(child) from None
        error = redact(f"the item's run ended unexpectedly: {type(exc).__name__}: {exc}")
        result = {
            "status": "failed",
            "records": [{"name": "item", "kind": "forEach", "status": "failed", "error": error}],
            "outputs": {},
        }
    return {
        "result": result,
        "workflow": child,
        "checkpoint": step_id(),
        "at": now().isoformat(),
    }


async def _renewed(child: str, execution_id: str) -> str:
    """The workflow that gives a retry the result of an earlier run's loop item."""
    again = f"{execution_id}.{child.split('.', 1)[1]}"
    if await DBOS.get_workflow_status_async(again) is not None:
        return again  # forked already (this step was cut off after the fork)
    status = await DBOS.get_workflow_status_async(child)
    if status is None or status.status in ("PENDING", "ENQUEUED"):
        return child
    output = status.output if status.status == "SUCCESS" else None
    if isinstance(output, dict) and output.get("status") != "failed":
        return child
    records = output.get("records", []) if isinstance(output, dict) else []
    point = await resume_point(child, records)
    with SetWorkflowID(again):
        await DBOS.fork_workflow_async(child, point, queue_name=ITEM_QUEUE)
    return again


@checkpointed("pdc.http")
@measured(lambda _request: "http")
async def http_call(request: dict[str, Any]) -> dict[str, Any]:
    """One attempt of an http step's request (``runtime/outbound.py``), with its
    credential opened here, inside the step, so no secret is in the workflow's inputs."""
    from pagerduty_connector.runtime.outbound import OutboundError

    engine = current()
    try:
        credential = None
        if request.get("credential"):
            credential = await engine.credential(request["credential"])
        answer = await engine.outbound.send(
            request["method"],
            request["url"],
            request.get("headers") or {},
            request.get("body"),
            credential,
            request.get("timeout") or 10.0,
        )
    except OutboundError as exc:
        return _failed(f"{type(exc).__name__}: {exc}", exc.retryable)
    except ComponentError as exc:
        return _failed(f"{type(exc).__name__}: {exc}", False)
    except Exception as exc:
        if unavailable(exc):
            return _failed(f"the database was unavailable: {why(exc)}", True)
        log.exception("http step of execution %s failed unexpectedly", DBOS.workflow_id)
        return _failed(f"unexpected error: {type(exc).__name__}: {exc}", False)
    return {"ok": True, "result": answer, "checkpoint": step_id(), "at": now().isoformat()}


@DBOS.step(name="pdc.state")
async def state_operation(instance_id: str, operation: dict[str, Any]) -> Any:
    """One operation on an instance's key/value store, as a checkpoint."""
    from pagerduty_connector.runtime import state

    engine = current()
    return await patiently(
        partial(state.operate, engine.store, instance_id, operation), f"state of {instance_id}"
    )


async def attempt(
    services: DurableServices, record: dict[str, Any], call: Callable[[], Awaitable[Any]]
) -> Any:
    """Make a step's ``call`` (one checkpoint per attempt), retrying retryable failures
    with backoff; raise ``StepFailed``. Every attempt is listed in the step's ``record``."""
    engine = current()
    settings = engine.settings
    execution_id = DBOS.workflow_id or ""
    tries: list[dict[str, Any]] = []
    record["attempts"] = tries
    for number in range(1, settings.step_attempts + 1):
        await engine.durable.between_steps(execution_id)
        outcome = await call()
        services.advance(outcome.get("at"))
        tries.append(
            {
                "attempt": number,
                "ok": outcome["ok"],
                "error": outcome.get("error"),
                "checkpoint": outcome["checkpoint"],  # the DBOS step a retry forks from
            }
        )
        if outcome["ok"]:
            return outcome["result"]
        if not outcome["retryable"] or number == settings.step_attempts:
            raise StepFailed(outcome["error"])
        delay = min(settings.step_backoff * 2 ** (number - 1), settings.step_backoff_max)
        async with engine.durable.resting(execution_id):
            await DBOS.sleep_async(random.uniform(delay / 2, delay))
    raise AssertionError("unreachable")


@DBOS.workflow(name=WORKFLOW)
async def run_execution() -> str:
    """Run the flow of the execution whose id is this workflow's id; record every step."""
    # Imported here: the writer process imports this module to queue runs, never runs
    # one, and the templating behind flows is a sixth of its start-up.
    from pagerduty_connector.runtime.flows import Flow, run_flow

    engine = current()
    execution_id = DBOS.workflow_id
    assert execution_id is not None
    engine.durable.live.add(execution_id)
    try:
        plan = await load_plan(execution_id)
        if plan is None:
            error = "the instance or flow no longer exists"
            await engine.finish(execution_id, "failed", error=error)
            return "failed"
        if plan.get("execution", execution_id) != execution_id:
            # A retry: the plan is the first run's (kept by the fork); the retry may
            # run another flow (``flow_definition``, written before the fork and never
            # changed, so reading it here outside a step is as good as a checkpoint).
            plan = {**plan, "flow": await retry_flow(execution_id) or plan["flow"]}
        started = plan.get("started") or await mark_started(execution_id)
        flow = Flow.model_validate(plan["flow"])
        annotate(**{"pdc.instance": plan["instance"], "pdc.flow": flow.name})
        services = DurableServices(engine, plan, started)
        status, records = await run_flow(flow, engine.manifest, plan["trigger"], services)
    except Exception as exc:
        if unavailable(exc):
            # DBOS could not write a checkpoint (its own retries cover a lost
            # connection, not a full disk): stop here, as cancelled, so DBOS records
            # nothing and the run resumes from its last checkpoint (``resume_orphans``).
            log.warning("execution %s waits for the database: %s", execution_id, why(exc))
            raise RunSuspended(execution_id) from None
        log.exception("execution %s failed unexpectedly", execution_id)
        error = redact(f"the run failed unexpectedly: {type(exc).__name__}: {exc}")
        await engine.finish(execution_id, "failed", error=error)
        return "failed"
    finally:
        engine.durable.forget(execution_id)
    await engine.finish(execution_id, status, steps=records)
    return status
