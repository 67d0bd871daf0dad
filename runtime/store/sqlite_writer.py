"""The SQLite writer process: applies batches of execution rows to the database file.

Intake and the engine hand their batches to this child process over a pipe
(length-prefixed pickles from the parent, which alone writes to it) and wait for
its answer, which comes only after the batch is committed. A process rather than
a thread: a thread writing SQLite must win the GIL back from the busy event loop
after every call into C, which capped intake at a fraction of what it could take.
Run as ``python -m pagerduty_connector.runtime.store.sqlite_writer <database path>``.
"""

from __future__ import annotations

import pickle
import sqlite3
import sys
from typing import Any, BinaryIO

Row = tuple[str, tuple[str, str] | None, list[Any]]
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
    connection: sqlite3.Connection, sql: Statements, rows: list[Row], changes: list[Change]
) -> set[str]:
    """Insert rows whose webhook id is new, apply updates, commit; the ids inserted."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        keys = [key for _, key, _ in rows if key]
        seen: set[tuple[str, str]] = set()
        if keys:
            query = sql.seen + " OR ".join([sql.key] * len(keys))
            seen = set(connection.execute(query, [part for key in keys for part in key]))
        inserted: set[str] = set()
        params: list[Any] = []
        for row_id, key, values in rows:
            if key is None or key not in seen:
                if key:
                    seen.add(key)  # a repeat inside this batch is a redelivery too
                inserted.add(row_id)
                params.extend(values)
        if inserted:
            connection.execute(sql.insert + ", ".join([sql.one] * len(inserted)), params)
        for statement, values in changes:
            connection.execute(statement, values)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
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
    from pagerduty_connector.runtime.store import sqlite_pragmas

    connection = sqlite3.connect(path, isolation_level=None)
    sqlite_pragmas(connection, None)
    hello = _read(incoming)
    if hello is None:
        return
    sql = Statements(*hello)
    while (batch := _read(incoming)) is not None:
        try:
            answer: tuple[str, Any] = ("ok", apply_batch(connection, sql, *batch))
        except Exception as exc:  # the parent fails the batch's callers with this
            answer = ("error", f"{type(exc).__name__}: {exc}")
        outgoing.write(frame(answer))
        outgoing.flush()
    connection.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
