"""Group commit of executions: one writer batches intake's inserts and the engine's updates.

A delivery must be stored before it is answered, but one transaction per delivery
caps intake at the database's commit rate. ``ExecutionWriter`` queues the rows of
concurrent deliveries, and the engine's status updates, and writes them in one
transaction (on PostgreSQL ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``; on
SQLite through the writer process, ``sqlite_writer.py``), so a redelivery is
recognised by its ``X-Webhook-Id`` without failing the batch; each caller is
answered only when its change is committed.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from typing import TYPE_CHECKING, Any

from sqlalchemy.dialects import postgresql, sqlite

from pagerduty_connector.component.redact import get_logger
from pagerduty_connector.runtime.durable import enqueue_options, enqueuer
from pagerduty_connector.runtime.store.models import ExecutionRow
from pagerduty_connector.runtime.store.sqlite_writer import frame

if TYPE_CHECKING:
    from dbos import EnqueueOptions

    from pagerduty_connector.runtime.store import Store

log = get_logger("writer")
MAX_BATCH = 256
# The key of an inserted row naming the (queue, partition) its run goes to (not a column).
QUEUE_KEY = "queue"

Insert = dict[str, Any]
Update = tuple[str, dict[str, Any]]


class _SqliteBatches:
    """Batches for the SQLite writer process (``sqlite_writer.py``).

    Values are converted by SQLAlchemy's own bind processors here, on the event
    loop; the child only runs the statements. Being the only writer of executions,
    it never waits in SQLite's busy handler.
    """

    def __init__(self, path: str, secret_key: str) -> None:
        table = ExecutionRow.__table__
        dialect = sqlite.dialect()
        self.path = path
        self._secret_key = secret_key
        self._table = table.name
        self._processors = {c.name: c.type.bind_processor(dialect) for c in table.columns}
        self._process: asyncio.subprocess.Process | None = None

    def _convert(self, name: str, value: Any) -> Any:
        convert = self._processors[name]
        return convert(value) if convert else value

    def prepare(self, inserts: list[Insert], updates: list[Update]) -> Any:
        """Converted values for the writer (runs on the event loop)."""
        rows = [
            (
                row["id"],
                (row["instance_id"], row["webhook_id"]) if row["webhook_id"] else None,
                [self._convert(name, row.get(name)) for name in self._processors],
                row.get(QUEUE_KEY),
            )
            for row in inserts
        ]
        changes = [
            (
                f"UPDATE {self._table} SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                [*(self._convert(k, v) for k, v in values.items()), row_id],
            )
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
                "pagerduty_connector.runtime.store.sqlite_writer",
                self.path,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert process.stdin is not None
            hello = (self._table, list(self._processors), self._secret_key)
            process.stdin.write(frame(hello))
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(frame(prepared))
            await process.stdin.drain()
            size = int.from_bytes(await process.stdout.readexactly(4), "big")
            status, value = pickle.loads(await process.stdout.readexactly(size))
        except (ConnectionError, asyncio.IncompleteReadError):
            process.kill()
            raise RuntimeError("the SQLite writer process stopped; it is restarted") from None
        if status != "ok":
            raise RuntimeError(f"the SQLite writer could not commit: {value}")
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
    with a ``queue`` partition has its run queued for DBOS in the same transaction. On
    SQLite this is the only writer of the executions table, so concurrent flows never
    make intake wait for it.
    """

    def __init__(self, store: Store, secret_key: str) -> None:
        self.store = store
        self._enqueuer = None if store.is_sqlite else enqueuer(store.url, secret_key)
        Item = tuple[Insert | Update, asyncio.Future[bool]]
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[set[str]] | None = None
        table = ExecutionRow.__table__
        insert = sqlite.insert if store.is_sqlite else postgresql.insert
        self._statement = (
            insert(table)
            .on_conflict_do_nothing(index_elements=["instance_id", "webhook_id"])
            .returning(table.c.id)
        )
        self._sqlite = _SqliteBatches(store.sqlite_path, secret_key) if store.sqlite_path else None

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
        if self._sqlite is not None:
            prepared = self._sqlite.prepare(inserts, updates)
            # Shielded: a cancelled caller must not interrupt a batch half sent or read.
            self._inflight = asyncio.ensure_future(self._sqlite.write(prepared))
            return await asyncio.shield(self._inflight)
        table = ExecutionRow.__table__
        async with self.store.engine.begin() as connection:
            inserted: set[str] = set()
            if inserts:
                columns = [{k: v for k, v in row.items() if k != QUEUE_KEY} for row in inserts]
                result = await connection.execute(self._statement, columns)
                inserted = {row[0] for row in result}
                runs = [
                    enqueue_options(row["id"], row[QUEUE_KEY])
                    for row in inserts
                    if row.get(QUEUE_KEY) and row["id"] in inserted
                ]
                if runs:
                    await connection.run_sync(self._enqueue, runs)
            for row_id, values in updates:
                await connection.execute(table.update().where(table.c.id == row_id).values(values))
            return inserted

    def _enqueue(self, connection: Any, runs: list[EnqueueOptions]) -> None:
        assert self._enqueuer is not None
        for options in runs:
            self._enqueuer.enqueue_in_transaction(connection, options)

    async def close(self) -> None:
        """Stop the writer task (pending callers have already been answered or failed)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._inflight is not None:
            await asyncio.gather(self._inflight, return_exceptions=True)
        if self._sqlite is not None:
            await self._sqlite.close()
