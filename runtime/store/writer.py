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
from typing import TYPE_CHECKING, Any, cast

from pagerduty_connector.component.redact import get_logger
from pagerduty_connector.runtime.store.models import ExecutionRow
from pagerduty_connector.runtime.store.outage import StoreUnavailable
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


class _Child(asyncio.SubprocessProtocol):
    """The writer process's pipes (``writer_process.py``), read in the event loop's own
    callback: each answer settles its batch as soon as it arrives, and the next batch is
    sent from the same callback, so the child never waits on a hop through a task."""

    def __init__(self, answered: Any, lost: Any) -> None:
        self._answered, self._lost = answered, lost
        self._buffer = bytearray()
        self.gone = False
        self.transport: asyncio.SubprocessTransport | None = None
        self.exited = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> None:
        """Write a frame to the child's stdin (buffered by the loop; the writer bounds how
        much is unanswered)."""
        assert self.transport is not None
        pipe = self.transport.get_pipe_transport(0)
        if pipe is None:
            raise RuntimeError("the writer process's stdin is closed")
        # Not an isinstance check: uvloop's pipe transports do not derive from asyncio's.
        cast("asyncio.WriteTransport", pipe).write(data)

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if fd != 1:
            return
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            size = int.from_bytes(buffer[:4], "big")
            if len(buffer) < 4 + size:
                return
            answer = pickle.loads(buffer[4 : 4 + size])
            del buffer[: 4 + size]
            self._answered(self, answer)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.gone = True
            self._lost(self)

    def process_exited(self) -> None:
        self.gone = True
        self._lost(self)
        if not self.exited.done():
            self.exited.set_result(None)

    def kill(self) -> None:
        """End the child (it lost its pipe, or the parent gave up on it)."""
        if self.transport is not None and self.transport.get_returncode() is None:
            self.transport.kill()


# A change and the future its caller awaits; ``None`` changes nothing (``start``).
Waiting = tuple[Insert | Update | None, "asyncio.Future[bool]"]


class ExecutionWriter:
    """Writes executions in batches: inserts (deduplicated) and status updates.

    ``record`` and ``update`` return once their change is committed. An inserted row
    with a ``queue`` partition has its run queued for DBOS in the same transaction.
    This is the only writer of the executions table, so concurrent flows never make
    intake wait for it.

    Batches go to a child process (``writer_process.py``) as pickles of plain rows; it
    converts them to what the driver takes, so the event loop spends nothing on JSON or
    dates (on SQLite, being the only writer of executions, it never waits in SQLite's
    busy handler either). Up to ``IN_FLIGHT`` batches are unanswered at once, so the
    child starts the next as soon as it has committed one; changes arriving meanwhile
    gather into the batch after (group commit).
    """

    def __init__(self, store: Store, secret_key: str) -> None:
        if store.is_sqlite and not store.sqlite_path:
            raise ValueError("the runtime's SQLite database must be a file, not in memory")
        self._columns = [c.name for c in ExecutionRow.__table__.columns]
        self._hello = (store.url, secret_key)
        self._pending: list[Waiting] = []
        self._sent: collections.deque[list[Waiting]] = collections.deque()
        self._child: _Child | None = None
        self._starting: asyncio.Task[None] | None = None
        self._flush_soon = False
        # Batches failed since the last one that was written (None: none failed), so an
        # outage is logged when it starts and ends, not once per batch.
        self._failing: int | None = None

    async def start(self) -> None:
        """Start the writer process now rather than at the first change, and wait until
        it has committed an empty batch: its imports (a second) and connection then cost
        nothing to the first deliveries."""
        await self._submit(None)

    async def record(self, values: Insert) -> bool:
        """Store one execution row; ``False`` if its webhook id was already recorded."""
        return await self._submit(values)

    async def update(self, execution_id: str, values: dict[str, Any]) -> None:
        """Change columns of one execution."""
        await self._submit((execution_id, values))

    async def ping(self) -> None:
        """Return once the writer process has a working connection (``SELECT 1`` on it);
        ``StoreUnavailable`` if it has none now."""
        await self._submit(None)

    async def _submit(self, item: Insert | Update | None) -> bool:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if not self._flush_soon and len(self._sent) < IN_FLIGHT:
            # At the end of this turn of the loop, so that the changes of deliveries
            # handled in the same turn go together.
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await done

    def _flush(self) -> None:
        """Send what is pending, while fewer than ``IN_FLIGHT`` batches are unanswered."""
        self._flush_soon = False
        child = self._child
        if child is None:
            if self._pending and (self._starting is None or self._starting.done()):
                self._starting = asyncio.ensure_future(self._start_child())
            return
        while self._pending and len(self._sent) < IN_FLIGHT:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            try:
                data = frame(self._prepare(batch))
            except Exception as exc:  # a value pickle refuses: its batch's callers learn it
                self._settle(batch, exc, set())
                continue
            # Answers come in the order batches were sent: each settles the oldest.
            self._sent.append(batch)
            child.send(data)

    def _prepare(self, batch: list[Waiting]) -> Any:
        """A batch as the writer process takes it: rows as column values in table order."""
        rows, changes = [], []
        for item, _ in batch:
            if isinstance(item, dict):
                values = [item.get(name) for name in self._columns]
                rows.append((item["id"], values, item.get(QUEUE_KEY)))
            elif item is not None:
                row_id, changed = item
                changes.append((tuple(changed), [*changed.values(), row_id]))
        return rows, changes

    async def _start_child(self) -> None:
        loop = asyncio.get_running_loop()
        child: _Child | None = None
        try:
            _, child = await loop.subprocess_exec(
                lambda: _Child(self._answered, self._lost),
                sys.executable,
                "-m",
                "pagerduty_connector.runtime.store.writer_process",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,
            )
            child.send(frame(self._hello))
        except Exception as exc:  # its callers learn it rather than wait for ever
            if child is not None:
                child.kill()
            pending, self._pending = self._pending, []
            self._settle(pending, exc, set())
            return
        self._child = child
        if child.gone:  # it died while starting, before it was ours to replace
            self._lost(child)
        else:
            self._flush()

    def _answered(self, child: _Child, answer: tuple[str, Any]) -> None:
        if child is not self._child or not self._sent:
            return
        batch = self._sent.popleft()
        status, value = answer
        if status == "ok":
            self._settle(batch, None, set(value))
        elif status == "unavailable":
            self._settle(batch, StoreUnavailable(f"the database is unavailable: {value}"), set())
        else:
            self._settle(batch, RuntimeError(f"the writer could not commit: {value}"), set())
        self._flush()  # the child is waiting: what gathered meanwhile goes now

    def _lost(self, child: _Child) -> None:
        if child is not self._child:
            return
        self._child = None
        child.kill()
        sent, self._sent = self._sent, collections.deque()
        lost = StoreUnavailable("the writer process stopped; it is restarted")
        for batch in sent:
            self._settle(batch, lost, set())
        if self._pending:
            self._flush()

    def _settle(self, batch: list[Waiting], exc: BaseException | None, inserted: set[str]) -> None:
        if exc is not None and batch:  # every waiting caller learns it was not stored
            self._say_failed(len(batch), exc)
        elif self._failing is not None and any(item is not None for item, _ in batch):
            # A batch that wrote (a ping that read is no proof of that).
            log.info("the writer writes again (%d failed batches meanwhile)", self._failing)
            self._failing = None
        for item, done in batch:
            if done.done():
                continue
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(not isinstance(item, dict) or item["id"] in inserted)

    def _say_failed(self, count: int, exc: BaseException) -> None:
        if self._failing is None:
            log.error("could not write %d execution changes: %s", count, exc)
            self._failing = 0
        self._failing += 1

    async def close(self) -> None:
        """Let the writer process commit what it was sent, and exit. Callers are answered
        by then: the server has finished its requests before the runtime closes."""
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        pending, self._pending = self._pending, []
        self._settle(pending, RuntimeError("the writer is closed"), set())
        child = self._child
        if child is None:
            return
        answers = [done for batch in self._sent for _, done in batch]
        await asyncio.gather(*answers, return_exceptions=True)
        assert child.transport is not None
        stdin = child.transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.close()
        await child.exited
        child.transport.close()
