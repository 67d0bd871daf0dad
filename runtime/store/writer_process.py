"""The writer process: applies batches of execution rows to the database.

Intake and the engine hand their batches to this child process over a pipe
(length-prefixed pickles from the parent, which alone writes to it) and wait for
its answer, which comes only after the batch is committed. A process rather than
a thread or the event loop: building and sending SQL, and DBOS's synchronous
enqueue, cost as much CPU as the rest of intake, and in a process of its own that
work no longer competes with the event loop for the GIL (on SQLite, a writer
thread had to win the GIL back after every call into C and capped intake at a
fraction of what it could take; on PostgreSQL, writing from the event loop held
intake at 0.3x bare Starlette). Each new execution that is to run is queued for
DBOS in the same transaction as its row, so a delivery is never recorded without
its run, nor run without its record.
Run as ``python -m pagerduty_connector.runtime.store.writer_process``; the first
frame names the database, so no URL (or password) shows in the process list.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import pickle
import re
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

if TYPE_CHECKING:
    from dbos import DBOSClient
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

# (id, column values, (queue, partition) or None)
Row = tuple[str, list[Any], tuple[str, str] | None]
# (column names to set, values then the row's id)
Change = tuple[tuple[str, ...], list[Any]]


def json_text(value: Any) -> str:
    """A JSON column's text: orjson's, a quarter of what the standard library's costs
    (the executions' trigger output and step records were a quarter of this process's
    CPU, bench/flow_throughput.py); what orjson refuses (an integer past 64 bits, a key
    that is not a string) the standard library writes, as before."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


class Statements:
    """The SQL of a batch, built from the executions table's columns, in the driver's
    placeholder style (``?`` for sqlite3, ``%s`` for psycopg), and the conversion of
    the parent's values to what the driver takes, by SQLAlchemy's own bind processors
    (JSON to text on both; on SQLite, dates to text too)."""

    def __init__(self, table: Table, is_sqlite: bool) -> None:
        from sqlalchemy import JSON
        from sqlalchemy.dialects import sqlite

        self.table, self.is_sqlite, self.mark = table.name, is_sqlite, "?" if is_sqlite else "%s"
        columns = [c.name for c in table.columns]
        dialect = sqlite.dialect(json_serializer=json_text)
        self.convert = {
            c.name: c.type.bind_processor(dialect)
            if is_sqlite or isinstance(c.type, JSON)
            else None
            for c in table.columns
        }
        self._in_order = [self.convert[name] for name in columns]
        into = f"INSERT INTO {self.table} ({', '.join(columns)}) "
        self.insert = into + "VALUES "
        self.one = "(" + ", ".join([self.mark] * len(columns)) + ")"
        # A redelivery (same instance and X-Webhook-Id) or a replayed event (same
        # instance, flow and PagerDuty event id), also within one batch, also one another
        # replica commits at the same moment, is skipped by its unique index, and
        # RETURNING says which rows were new: only those get a run.
        self.conflict = " ON CONFLICT DO NOTHING RETURNING id"
        # PostgreSQL: every batch, whatever its size, as one statement of few shapes
        # (arrays), which psycopg parses and PostgreSQL plans once; a multi-row VALUES
        # changes shape with the batch, and psycopg parsed it anew every time.
        self.columnar: _ColumnarInsert | None = None
        if not is_sqlite:
            types = [c.type for c in table.columns]
            # JSON as text, by SQLAlchemy's JSON processor (psycopg's own dumper would
            # wrap each value first).
            self.columnar = _ColumnarInsert(
                self.table,
                tuple(columns),
                types,
                key="id",
                suffix=self.conflict,
                converters=self._in_order,
            )

    def row(self, values: list[Any]) -> list[Any]:
        """One row's values, in column order, converted."""
        return [f(v) if f else v for f, v in zip(self._in_order, values, strict=True)]

    def changed(self, names: tuple[str, ...], values: list[Any]) -> list[Any]:
        """An update's values (then the row's id), converted."""
        return [
            *(f(v) if (f := self.convert[n]) else v for n, v in zip(names, values, strict=False)),
            values[-1],
        ]

    def update(self, names: tuple[str, ...]) -> str:
        """An UPDATE of the named columns of one row."""
        assignments = ", ".join(f"{name} = {self.mark}" for name in names)
        return f"UPDATE {self.table} SET {assignments} WHERE id = {self.mark}"


def _element_type(column_type: Any) -> str:
    """A column's PostgreSQL type, without length, for an array of its values."""
    from sqlalchemy.dialects import postgresql

    return re.sub(r"\(.*?\)", "", column_type.compile(dialect=postgresql.dialect()))


class _NothingReturned:
    def fetchone(self) -> None:
        return None


class _ColumnarInsert:
    """PostgreSQL: an insert of many rows given as arrays, ``INSERT ... SELECT ... FROM
    unnest(...)``, for the executions and for each of DBOS's tables.

    A column whose value is the same in every row of a batch (most of DBOS's: the
    workflow's name, queue, version, options left empty; many of an execution's) goes
    as one value rather than an array, since psycopg dumps array elements one by one in
    Python. The ``key`` column is always an array (unnest needs one; ``suffix`` may
    read it). The SQL is made once per set of such columns.
    """

    def __init__(
        self,
        target: str,
        columns: tuple[str, ...],
        types: list[Any],
        *,
        key: str,
        suffix: str = "",
        converters: list[Any] | None = None,
    ) -> None:
        from sqlalchemy.dialects import postgresql

        dialect = postgresql.dialect()
        self.target, self.columns, self.types, self.suffix = target, columns, types, suffix
        self.arrayed = tuple(column == key for column in columns)
        self.converters = converters or [
            t.dialect_impl(dialect).bind_processor(dialect) for t in types
        ]
        self.shapes: dict[tuple[bool, ...], str] = {}

    def statement(self, values: list[Any]) -> tuple[str, tuple[Any, ...]]:
        """The SQL and parameters inserting rows given as ``values``: one sequence per
        column, in column order."""
        values = [
            list(map(convert, column)) if convert else column
            for column, convert in zip(values, self.converters, strict=True)
        ]
        same = tuple(
            not keyed and column.count(column[0]) == len(column)
            for keyed, column in zip(self.arrayed, values, strict=True)
        )
        sql = self.shapes.get(same)
        if sql is None:
            sql = self.shapes[same] = self._sql(same)
        ones = [column[0] for column, one in zip(values, same, strict=True) if one]
        arrays = [list(column) for column, one in zip(values, same, strict=True) if not one]
        return sql, (*ones, *arrays)

    def _sql(self, same: tuple[bool, ...]) -> str:
        """The insert with the columns flagged in ``same`` as one value for every row
        (their parameters come first, then the arrays)."""
        shaped = list(zip(self.columns, self.types, same, strict=True))
        picks = [f"%b::{_element_type(t)}" if one else f"v.{c}" for c, t, one in shaped]
        casts = ", ".join(f"%b::{_element_type(t)}[]" for _, t, one in shaped if not one)
        names = ", ".join(c for c, _, one in shaped if not one)
        return (
            f"INSERT INTO {self.target} ({', '.join(self.columns)}) "
            f"SELECT {', '.join(picks)} FROM unnest({casts}) AS v({names}){self.suffix}"
        )


_COLUMNAR: dict[tuple[str, str, tuple[str, ...]], _ColumnarInsert] = {}


def _columnar(name: str, build: Any, schema: str, columns: tuple[str, ...]) -> _ColumnarInsert:
    """PostgreSQL: the insert of DBOS's statement ``name`` for rows naming ``columns``
    (made once), of those rows whose workflow id is among the executions inserted by
    the same statement (``new``, see ``insert_and_enqueue``). ``ON CONFLICT`` is left
    out: every row is a new execution's run."""
    insert = _COLUMNAR.get((schema, name, columns))
    if insert is None:
        from sqlalchemy.dialects import postgresql

        table = build().table
        quote = postgresql.dialect().identifier_preparer.quote
        key = "workflow_uuid"
        if key not in columns:
            raise RuntimeError(f"DBOS's {table.name} rows no longer name {key}")
        insert = _COLUMNAR[(schema, name, columns)] = _ColumnarInsert(
            f"{quote(schema)}.{quote(table.name)}",
            tuple(quote(column) for column in columns),
            [table.c[column].type for column in columns],
            key=quote(key),
            suffix=f" WHERE v.{quote(key)} IN (SELECT id FROM new)",
        )
    return insert


def dbos_rows(
    connection: Connection, queue: DBOSClient, runs: list[Any]
) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
    """DBOS's rows for queueing ``runs`` (DBOS enqueue options), by DBOS's statement
    name (status rows first: inputs refer to them), with the statement's builder.

    DBOS's own ``enqueue_in_transaction`` builds a run's rows (status, inputs, the
    sealed arguments) and hands each to its ``_execute_prepared``; that hand-off is
    caught here, so the rows of a whole batch can go to DBOS's tables together. Runs
    queued with the same options but their id differ only in that id and in the token
    DBOS draws per enqueue (``creator_xid``; the times written are the batch's own), so
    DBOS builds the rows of the first run of each such shape, and the others copy them
    (DBOS's Python was about a quarter of the writer's work for a queued batch).
    What DBOS would check on the returned row (a workflow id already used by another
    function) cannot happen: every run's id is a new execution's, inserted in the same
    transaction.
    """
    from pagerduty_connector.runtime.dbos_internals import caught_writes, new_token

    caught: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
    latest: dict[str, dict[str, Any]] = {}

    def catch(_conn: Any, name: str, values: dict[str, Any], build: Any, **_: Any) -> Any:
        caught.setdefault(name, (build, []))[1].append(values)
        latest[name] = values
        return _NothingReturned()

    built: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    with caught_writes(queue, catch):
        for options in runs:
            shape = tuple(item for item in options.items() if item[0] != "workflow_id")
            first = built.get(shape)
            if first is None:
                latest.clear()
                queue.enqueue_in_transaction(connection, options)
                if not latest:
                    raise RuntimeError("DBOS wrote a run's rows without _execute_prepared")
                built[shape] = dict(latest)
                continue
            for name, row in first.items():
                copied = {**row, "workflow_uuid": options["workflow_id"]}
                if "creator_xid" in copied:
                    copied["creator_xid"] = new_token()
                caught[name][1].append(copied)
    return caught


def enqueue_all(connection: Connection, queue: DBOSClient, runs: list[Any]) -> None:
    """SQLite: queue ``runs`` in ``connection``'s transaction with one ``executemany``
    per DBOS table for the whole batch, instead of DBOS's two statements per run."""
    for name, (build, caught) in dbos_rows(connection, queue, runs).items():
        for columns, group in itertools.groupby(caught, key=tuple):
            sql, converters = _plain_insert(connection, name, build, columns)
            rows = [
                tuple(f(v) if f else v for f, v in zip(converters, row.values(), strict=True))
                for row in group
            ]
            connection.exec_driver_sql(sql, rows)


_PLAIN: dict[tuple[str, tuple[str, ...]], tuple[str, list[Any]]] = {}


def _plain_insert(
    connection: Connection, name: str, build: Any, columns: tuple[str, ...]
) -> tuple[str, list[Any]]:
    """SQLite: a plain ``INSERT`` for DBOS's statement ``name`` naming ``columns``, and
    each column's bind processor (made once)."""
    made = _PLAIN.get((name, columns))
    if made is None:
        dialect = connection.dialect
        table = build().table
        quote = dialect.identifier_preparer.quote
        sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, columns))}) "
            f"VALUES ({', '.join('?' * len(columns))})"
        )
        converters = [
            table.c[column].type.dialect_impl(dialect).bind_processor(dialect) for column in columns
        ]
        made = _PLAIN[(name, columns)] = (sql, converters)
    return made


def insert_new(connection: Connection, sql: Statements, rows: list[Row]) -> set[str]:
    """SQLite: insert the rows whose (instance, webhook id) is new; the ids inserted."""
    values = [sql.row(row_values) for _, row_values, _ in rows]
    statement = sql.insert + ", ".join([sql.one] * len(rows)) + sql.conflict
    params = tuple(value for row in values for value in row)
    return {row_id for (row_id,) in connection.exec_driver_sql(statement, params)}


def insert_and_enqueue(
    connection: Connection, sql: Statements, queue: DBOSClient, rows: list[Row]
) -> tuple[str, tuple[Any, ...]]:
    """PostgreSQL: one statement that inserts the rows whose (instance, webhook id) is
    new and queues the runs of those among them that have one; it returns the ids
    inserted.

    The executions insert is the first of its ``WITH`` queries; each DBOS table's rows
    (``_ColumnarInsert``: an array per column that varies, one value for a column the
    same in every row) are inserted where their workflow id is among the ids it
    returned, so a redelivery's run is never queued. One statement, not one per table:
    each round trip to PostgreSQL was most of a batch's time in the writer.
    """
    from pagerduty_connector.runtime.durable import enqueue_options

    assert sql.columnar is not None
    by_column = list(zip(*(values for _, values, _ in rows), strict=True))
    statement, first = sql.columnar.statement(by_column)
    params = list(first)
    runs = [enqueue_options(row_id, placement) for row_id, _, placement in rows if placement]
    if not runs:
        return statement, first
    from pagerduty_connector.runtime.dbos_internals import system_schema

    schema = system_schema(queue)
    queries = [f"new AS ({statement})"]
    for name, (build, caught) in dbos_rows(connection, queue, runs).items():
        # DBOS names the same columns for every run queued here; grouped all the same,
        # so a row naming others could not lose a column.
        for columns, group in itertools.groupby(caught, key=tuple):
            by_column = list(zip(*(row.values() for row in group), strict=True))
            insert, more = _columnar(name, build, schema, columns).statement(by_column)
            queries.append(f"q{len(queries)} AS ({insert})")
            params.extend(more)
    return "WITH " + ", ".join(queries) + " SELECT id FROM new", tuple(params)


def apply_batch(
    connection: Connection,
    sql: Statements,
    queue: DBOSClient,
    rows: list[Row],
    changes: list[Change],
) -> set[str]:
    """Insert rows whose webhook id is new and queue their runs, apply updates, commit;
    the ids inserted.

    Consecutive updates of the same columns go as one executemany; their order, which
    matters for two updates of one row, is kept. On SQLite, the rows inserted decide
    which runs DBOS's statements queue; on PostgreSQL one statement does both
    (``insert_and_enqueue``).
    """
    from pagerduty_connector.runtime.durable import enqueue_options

    updates = [
        (sql.update(names), [tuple(sql.changed(names, values)) for _, values in group])
        for names, group in itertools.groupby(changes, key=lambda change: change[0])
    ]
    if not sql.is_sqlite:
        insert = insert_and_enqueue(connection, sql, queue, rows) if rows else None
        return _on_postgresql(connection.connection.driver_connection, insert, updates)
    with connection.begin():
        inserted = insert_new(connection, sql, rows) if rows else set()
        queued = [
            enqueue_options(row_id, placement)
            for row_id, _, placement in rows
            if placement and row_id in inserted
        ]
        if queued:
            enqueue_all(connection, queue, queued)
        for statement, params in updates:
            connection.exec_driver_sql(statement, params)
    return inserted


def _on_postgresql(
    raw: Any, insert: tuple[str, tuple[Any, ...]] | None, updates: list[tuple[str, list[Any]]]
) -> set[str]:
    """Run a batch on psycopg's connection: the insert alone in autocommit (one
    statement, one round trip: psycopg would send BEGIN and COMMIT as two more), with
    updates in a transaction."""
    if not raw.autocommit:
        raw.autocommit = True
    inserted: set[str] = set()
    with raw.cursor() as cursor, raw.transaction() if updates else contextlib.nullcontext():
        if insert:
            cursor.execute(*insert)
            inserted = {row_id for (row_id,) in cursor.fetchall()}
        for statement, params in updates:
            cursor.executemany(statement, params)
    return inserted


def _patiently(apply: Any, limit: float = 10.0) -> Any:
    """Run ``apply`` (one transaction), again while SQLite says the database is locked,
    for up to ``limit`` seconds."""
    from sqlalchemy.exc import OperationalError

    deadline = time.monotonic() + limit
    while True:
        try:
            return apply()
        except OperationalError as exc:
            if "locked" not in str(exc.orig) or time.monotonic() > deadline:
                raise
            time.sleep(0.0003)


def _read(stream: BinaryIO) -> Any:
    header = stream.read(4)
    if len(header) < 4:
        return None
    return pickle.loads(stream.read(int.from_bytes(header, "big")))


def frame(value: Any) -> bytes:
    """A length-prefixed pickle."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(4, "big") + data


def serve(incoming: BinaryIO, outgoing: BinaryIO) -> None:
    """Apply batches until the parent closes the pipe.

    Each answer is ``("ok", ids inserted)``, ``("unavailable", why)`` when the database
    could not be reached or written (the parent answers 503; nothing of the batch was
    committed), or ``("error", why)``. After an outage the connection is dropped and the
    next batch opens a new one, so a restarted PostgreSQL or a freed disk is used again
    at once. A batch with no rows and no changes checks the connection (``SELECT 1``):
    the parent's readiness probe goes the way a delivery's record goes.
    """
    from sqlalchemy import create_engine, event, text
    from sqlalchemy.pool import NullPool

    from pagerduty_connector.runtime.durable import enqueuer, system_database_url
    from pagerduty_connector.runtime.store import sqlite_pragmas
    from pagerduty_connector.runtime.store.models import ExecutionRow
    from pagerduty_connector.runtime.store.outage import unavailable, why

    hello = _read(incoming)
    if hello is None:
        return
    url, secret_key = hello
    sync_url = system_database_url(url)
    is_sqlite = sync_url.startswith("sqlite")
    sql = Statements(ExecutionRow.__table__, is_sqlite)
    # Parameters are rows of deliveries: an error names the statement, not the data. One
    # connection at a time, made again after an outage (NullPool keeps no broken one);
    # a PostgreSQL server that does not answer is given up on after 5 s.
    options = {} if is_sqlite else {"connect_args": {"connect_timeout": 5}}
    engine = create_engine(sync_url, poolclass=NullPool, hide_parameters=True, **options)
    if is_sqlite:
        event.listen(engine, "connect", sqlite_pragmas)
        # SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms between tries while
        # DBOS holds the write lock; a delivery waits for the lock here instead, in
        # steps of a fraction of a millisecond (``_patiently``).
        event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA busy_timeout=0"))
    queue = enqueuer("", secret_key, engine=engine)
    connection: Connection | None = None
    frozen = False
    while (batch := _read(incoming)) is not None:
        try:
            if connection is None:
                connection = engine.connect()
                if not frozen:  # what was loaded to get here is kept: never scan it again
                    gc.freeze()
                    frozen = True
            rows, changes = batch
            if rows or changes:
                applied = _patiently(partial(apply_batch, connection, sql, queue, rows, changes))
            else:
                connection.execute(text("SELECT 1")).close()
                connection.rollback()
                applied = set()
            answer: tuple[str, Any] = ("ok", applied)
        except Exception as exc:  # the parent fails the batch's callers with this
            lost = unavailable(exc)
            answer = ("unavailable" if lost else "error", why(exc))
            if lost and connection is not None:
                # Broken: dropped without the rollback a close would try on it.
                with contextlib.suppress(Exception):
                    connection.invalidate()
                    connection.close()
                connection = None
        try:
            outgoing.write(frame(answer))
            outgoing.flush()
        except BrokenPipeError:  # the parent is gone (killed); nobody waits for this
            break
    if connection is not None:
        connection.close()
    engine.dispose()


def main() -> None:
    """Entry point: serve the parent on stdin and stdout. Signals meant for the runtime
    (Ctrl-C in a terminal, SIGTERM to the process group) are left to the parent, which
    closes the pipe when it has nothing more to write: a graceful stop then still
    records how its last runs ended."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
