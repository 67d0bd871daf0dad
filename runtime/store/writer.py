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
import pickle
import sys
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON
from sqlalchemy.dialects import sqlite

from pagerduty_connector.component.redact import get_logger
from pagerduty_connector.runtime.store.models import ExecutionRow
from pagerduty_connector.runtime.store.writer_process import frame

if TYPE_CHECKING:
    from pagerduty_connector.runtime.store import Store

log = get_logger("writer")
MAX_BATCH = 256
# The key of an inserted row naming the (queue, partition) its run goes to (not a column).
QUEUE_KEY = "queue"

Insert = dict[str, Any]
Update = tuple[str, dict[str, Any]]


class _Batches:
    """Batches for the writer process (``writer_process.py``).

    Values are converted by SQLAlchemy's own bind processors here, on the event
    loop (JSON to text, and on SQLite dates to text); the child only runs the
    statements. On SQLite, being the only writer of executions, it never waits in
    SQLite's busy handler.
    """

    def __init__(self, url: str, is_sqlite: bool, secret_key: str) -> None:
        table = ExecutionRow.__table__
        # JSON goes as text on both (SQLite's processor is json.dumps); on PostgreSQL
        # psycopg takes every other value as it is.
        dialect = sqlite.dialect()
        self._hello = (url, table.name, [c.name for c in table.columns], secret_key)
        self._processors = {
            c.name: c.type.bind_processor(dialect)
            if is_sqlite or isinstance(c.type, JSON)
            else None
            for c in table.columns
        }
        self._process: asyncio.subprocess.Process | None = None

    def _convert(self, name: str, value: Any) -> Any:
        convert = self._processors[name]
        return convert(value) if convert else value

    def prepare(self, inserts: list[Insert], updates: list[Update]) -> Any:
        """Converted values for the writer (runs on the event loop)."""
        rows = [
            (
                row["id"],
                [self._convert(name, row.get(name)) for name in self._processors],
                row.get(QUEUE_KEY),
            )
            for row in inserts
        ]
        changes = [
            (tuple(values), [*(self._convert(k, v) for k, v in values.items()), row_id])
            for row_id, values in updates
        ]
        return rows, changes

    async def write(self, prepared: Any) -> set[str]:
        """Send a batch to the writer process and wait until it is committed."""
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
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(frame(prepared))
            await process.stdin.drain()
            size = int.from_bytes(await process.stdout.readexactly(4), "big")
            status, value = pickle.loads(await process.stdout.readexactly(size))
        except (ConnectionError, asyncio.IncompleteReadError):
            process.kill()
            raise RuntimeError("the writer process stopped; it is restarted") from None
        if status != "ok":
            raise RuntimeError(f"the writer could not commit: {value}")
        return set(value)

    async def close(self) -> None:
        """Let the writer process finish and exit."""
        if self._process is not None and self._process.returncode is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            await self._process.wait()


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
        self.store = store
        Item = tuple[Insert | Update, asyncio.Future[bool]]
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[set[str]] | None = None
        self._process = _Batches(store.url, store.is_sqlite, secret_key)

    async def _submit(self, item: Insert | Update) -> bool:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, done))
        return await done

    async def record(self, values: Insert) -> bool:
        """Store one execution row; ``False`` if its webhook id was already recorded."""
        return await self._submit(values)

    async def update(self, execution_id: str, values: dict[str, Any]) -> None:
        """Change columns of one execution."""
        await self._submit((execution_id, values))

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            inserts = [item for item, _ in batch if isinstance(item, dict)]
            updates = [item for item, _ in batch if isinstance(item, tuple)]
            try:
                inserted = await self._write(inserts, updates)
            except Exception as exc:  # every waiting caller learns it was not stored
                log.exception("could not write %d execution changes", len(batch))
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for item, done in batch:
                if not done.done():
                    done.set_result(not isinstance(item, dict) or item["id"] in inserted)

    async def _write(self, inserts: list[Insert], updates: list[Update]) -> set[str]:
        prepared = self._process.prepare(inserts, updates)
        # Shielded: a cancelled caller must not interrupt a batch half sent or read.
        self._inflight = asyncio.ensure_future(self._process.write(prepared))
        return await asyncio.shield(self._inflight)

    async def close(self) -> None:
        """Stop the writer task (pending callers have already been answered or failed)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight is not None:
            await asyncio.gather(self._inflight, return_exceptions=True)
        await self._process.close()
