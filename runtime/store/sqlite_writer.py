"""The SQLite writer process: applies batches of execution rows to the database file.

Intake and the engine hand their batches to this child process over a pipe
(length-prefixed pickles from the parent, which alone writes to it) and wait for
its answer, which comes only after the batch is committed. A process rather than
a thread: a thread writing SQLite must win the GIL back from the busy event loop
after every call into C, which capped intake at a fraction of what it could take.
Each new execution that is to run is queued for DBOS in the same transaction as its
row, so a delivery is never recorded without its run, nor run without its record.
Run as ``python -m pagerduty_connector.runtime.store.sqlite_writer <database path>``.
"""

from __future__ import annotations

import pickle
import sys
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from dbos import DBOSClient
    from sqlalchemy.engine import Connection

# (id, (instance, webhook id) or None, column values, (queue, partition) or None)
Row = tuple[str, tuple[str, str] | None, list[Any], tuple[str, str] | None]
Change = tuple[str, list[Any]]


class Statements:
    """The SQL of a batch, built from the executions table's columns."""

    def __init__(self, table: str, columns: list[str]) -> None:
        self.insert = f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES "
        self.one = "(" + ", ".join("?" * len(columns)) + ")"
        # An OR of equalities, which SQLite answers with one index search per key;
        # ``(a, b) IN (VALUES ...)`` scans the whole index, slower as the log grows.
        self.seen = f"SELECT instance_id, webhook_id FROM {table} WHERE "
        self.key = "(instance_id = ? AND webhook_id = ?)"


def apply_batch(
    connection: Connection,
    sql: Statements,
    queue: DBOSClient,
    rows: list[Row],
    changes: list[Change],
) -> set[str]:
    """Insert rows whose webhook id is new and queue their runs, apply updates, commit;
    the ids inserted."""
    from pagerduty_connector.runtime.durable import enqueue_options

    with connection.begin():
        keys = [key for _, key, _, _ in rows if key]
        seen: set[tuple[str, str]] = set()
        if keys:
            query = sql.seen + " OR ".join([sql.key] * len(keys))
            found = connection.exec_driver_sql(query, tuple(p for key in keys for p in key))
            seen = {(a, b) for a, b in found}
        inserted: set[str] = set()
        params: list[Any] = []
        runs: list[tuple[str, tuple[str, str]]] = []
        for row_id, key, values, placement in rows:
            if key is None or key not in seen:
                if key:
                    seen.add(key)  # a repeat inside this batch is a redelivery too
                inserted.add(row_id)
                params.extend(values)
                if placement:
                    runs.append((row_id, placement))
        if inserted:
            statement = sql.insert + ", ".join([sql.one] * len(inserted))
            connection.exec_driver_sql(statement, tuple(params))
        for row_id, placement in runs:
            queue.enqueue_in_transaction(connection, enqueue_options(row_id, placement))
        for statement, values in changes:
            connection.exec_driver_sql(statement, tuple(values))
    return inserted


def _read(stream: BinaryIO) -> Any:
    header = stream.read(4)
    if len(header) < 4:
        return None
    return pickle.loads(stream.read(int.from_bytes(header, "big")))


def frame(value: Any) -> bytes:
    """A length-prefixed pickle."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(4, "big") + data


def serve(path: str, incoming: BinaryIO, outgoing: BinaryIO) -> None:
    """Apply batches until the parent closes the pipe."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import StaticPool

    from pagerduty_connector.runtime.durable import enqueuer
    from pagerduty_connector.runtime.store import sqlite_pragmas

    hello = _read(incoming)
    if hello is None:
        return
    table, columns, secret_key = hello
    sql = Statements(table, columns)
    engine = create_engine(f"sqlite:///{path}", poolclass=StaticPool)
    event.listen(engine, "connect", sqlite_pragmas)
    queue = enqueuer("", secret_key, engine=engine)
    with engine.connect() as connection:
        while (batch := _read(incoming)) is not None:
            try:
                answer: tuple[str, Any] = ("ok", apply_batch(connection, sql, queue, *batch))
            except Exception as exc:  # the parent fails the batch's callers with this
                answer = ("error", f"{type(exc).__name__}: {exc}")
            outgoing.write(frame(answer))
            outgoing.flush()
    engine.dispose()


if __name__ == "__main__":
    serve(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
