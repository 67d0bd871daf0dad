"""Group commit of executions: one writer batches intake's inserts and the engine's updates.

A delivery must be stored before it is answered, but one transaction per delivery
caps intake at the database's commit rate. ``ExecutionWriter`` queues the rows of
concurrent deliveries, and the engine's status updates, and writes them in one
transaction, in a child process (``writer_process.py``), with ``INSERT ... ON
CONFLICT DO NOTHING RETURNING id``, so a redelivery is recognised by its
``X-Webhook-Id`` without failing the batch; each caller is answered only when its
change is committed.
"""

from __future__ import annotations

import asyncio
import collections
import pickle
import sys
from typing import TYPE_CHECKING, Any

from pagerduty_connector.component.redact import get_logger
from pagerduty_connector.runtime.store.models import ExecutionRow
from pagerduty_connector.runtime.store.writer_process import frame

if TYPE_CHECKING:
    from pagerduty_connector.runtime.store import Store

log = get_logger("writer")
MAX_BATCH = 256
# Batches handed to the writer process and not yet committed, at most.
IN_FLIGHT = 2
# The key of an inserted row naming the (queue, partition) its run goes to (not a column).
QUEUE_KEY = "queue"

Insert = dict[str, Any]
Update = tuple[str, dict[str, Any]]


class _Batches:
    """Batches for the writer process (``writer_process.py``).

    Rows go as they are (pickled); the child converts them to what the driver takes
    (``writer_process.Statements``), so the event loop spends nothing on JSON or dates.
    On SQLite, being the only writer of executions, the child never waits in SQLite's
    busy handler.
    """

    def __init__(self, url: str, secret_key: str) -> None:
        self._columns = [c.name for c in ExecutionRow.__table__.columns]
        self._hello = (url, secret_key)
        self._process: asyncio.subprocess.Process | None = None
        self._waiting: collections.deque[asyncio.Future[set[str]]] = collections.deque()
        self._reader: asyncio.Task[None] | None = None

    def prepare(self, inserts: list[Insert], updates: list[Update]) -> Any:
        """A batch as the writer process takes it: rows as column values in table order."""
        rows = [
            (row["id"], [row.get(name) for name in self._columns], row.get(QUEUE_KEY))
            for row in inserts
        ]
        changes = [(tuple(values), [*values.values(), row_id]) for row_id, values in updates]
        return rows, changes

    async def start(self) -> asyncio.subprocess.Process:
        """The writer process, started if it is not running (its imports take a second:
        the runtime starts it at startup, not on the first delivery)."""
        process = self._process
        if process is None or process.returncode is not None:
            process = self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pagerduty_connector.runtime.store.writer_process",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert process.stdin is not None
            process.stdin.write(frame(self._hello))
            self._waiting = collections.deque()
            self._reader = asyncio.create_task(self._answers(process, self._waiting))
        return process

    async def send(self, prepared: Any) -> asyncio.Future[set[str]]:
        """Hand a batch to the writer process; the future resolves once it is committed.

        Batches are answered in the order they were sent, so several can be on their
        way at once: the child starts the next batch as soon as it has committed one,
        without waiting for a round trip through the event loop.
        """
        process = await self.start()
        assert process.stdin is not None
        answer: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        try:
            process.stdin.write(frame(prepared))
            await process.stdin.drain()
        except ConnectionError:
            process.kill()  # the reader fails every batch sent to it
        return answer

    async def _answers(
        self, process: asyncio.subprocess.Process, waiting: collections.deque[Any]
    ) -> None:
        assert process.stdout is not None
        try:
            while True:
                size = int.from_bytes(await process.stdout.readexactly(4), "big")
                status, value = pickle.loads(await process.stdout.readexactly(size))
                answer = waiting.popleft()
                if status == "ok":
                    answer.set_result(set(value))
                else:
                    answer.set_exception(RuntimeError(f"the writer could not commit: {value}"))
        except (ConnectionError, asyncio.IncompleteReadError):
            if process.returncode is None:
                process.kill()
            while waiting:
                lost = RuntimeError("the writer process stopped; it is restarted")
                waiting.popleft().set_exception(lost)

    async def close(self) -> None:
        """Let the writer process finish what it was sent and exit."""
        if self._process is not None and self._process.returncode is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            await self._process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class ExecutionWriter:
    """Writes executions in batches: inserts (deduplicated) and status updates.

    ``record`` and ``update`` return once their change is committed. An inserted row
    with a ``queue`` partition has its run queued for DBOS in the same transaction.
    This is the only writer of the executions table, so concurrent flows never make
    intake wait for it.
    """

    def __init__(self, store: Store, secret_key: str) -> None:
        if store.is_sqlite and not store.sqlite_path:
            raise ValueError("the runtime's SQLite database must be a file, not in memory")
        Item = tuple[Insert | Update, asyncio.Future[bool]]
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Future[set[str]]] = set()
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._process = _Batches(store.url, secret_key)

    async def _submit(self, item: Insert | Update) -> bool:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, done))
        return await done

    async def start(self) -> None:
        """Start the writer process now rather than at the first change, and wait until
        it has committed an empty batch: its imports and connection then cost nothing to
        the first deliveries."""
        await (await self._process.send(self._process.prepare([], [])))

    async def record(self, values: Insert) -> bool:
        """Store one execution row; ``False`` if its webhook id was already recorded."""
        return await self._submit(values)

    async def update(self, execution_id: str, values: dict[str, Any]) -> None:
        """Change columns of one execution."""
        await self._submit((execution_id, values))

    async def _run(self) -> None:
        while True:
            # A slot first, then the batch: while every slot is taken, changes pile up
            # into the next batch (group commit); with one free, the child never idles.
            await self._slots.acquire()
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            inserts = [item for item, _ in batch if isinstance(item, dict)]
            updates = [item for item, _ in batch if isinstance(item, tuple)]
            try:
                answer = await self._process.send(self._process.prepare(inserts, updates))
            except Exception as exc:
                self._slots.release()
                self._settle(batch, exc, set())
                continue
            self._inflight.add(answer)
            answer.add_done_callback(lambda done, batch=batch: self._answered(batch, done))

    def _answered(self, batch: list[Any], answer: asyncio.Future[set[str]]) -> None:
        self._inflight.discard(answer)
        self._slots.release()
        exc = answer.exception() if not answer.cancelled() else RuntimeError("cancelled")
        self._settle(batch, exc, set() if exc else answer.result())

    @staticmethod
    def _settle(batch: list[Any], exc: BaseException | None, inserted: set[str]) -> None:
        if exc is not None:  # every waiting caller learns it was not stored
            log.error("could not write %d execution changes: %s", len(batch), exc)
        for item, done in batch:
            if done.done():
                continue
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(not isinstance(item, dict) or item["id"] in inserted)

    async def close(self) -> None:
        """Stop the writer task (pending callers have already been answered or failed)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._process.close()
