"""What a database outage looks like to the runtime, and how its work waits one out.

A PostgreSQL restart, a server refusing connections or writes (a failover leaves the
old primary read-only), a dropped connection, a full disk under SQLite: each surfaces
as a different exception from a different driver
(asyncpg for the store, psycopg in the writer process and DBOS, sqlite3 under both),
often wrapped by SQLAlchemy. ``unavailable`` tells them apart from errors that are
ours (a bad statement, a constraint), so that:

- a request that needs the database answers 503 with ``Retry-After`` (PagerDuty
  retries a delivery answered 5xx), never a 500 or a 2xx for what was not recorded;
- a run's own reads and writes (its plan, its status) wait the outage out with
  ``patiently`` instead of failing the run;
- every connection is dropped and made again, not kept broken for the life of the
  process.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from pagerduty_connector.component.redact import get_logger
from pagerduty_connector.runtime.metrics import DATABASE_BACK, DATABASE_UNAVAILABLE

log = get_logger("store")
T = TypeVar("T")
# How long a run's own database work waits for the database before giving up (the run
# then ends failed once the database is back, or is resumed: see ``durable.Sweeper``).
PATIENCE = 600.0
# Seconds a client is asked to wait before trying again while the database is away.
RETRY_AFTER = 5


class StoreUnavailable(RuntimeError):
    """The database cannot be reached or written now; the same request can succeed later."""


# SQLite errors that are the machine's, not the statement's.
_SQLITE_OUTAGES = (
    "database or disk is full",
    "disk i/o error",
    "database is locked",
    "unable to open database file",
    "attempt to write a readonly database",
)


def _outage_state(sqlstate: object) -> bool:
    """Whether a PostgreSQL SQLSTATE says the server is away or will not write now: a
    connection exception (08), insufficient resources (53: disk full, too many
    connections), operator intervention (57P: shutting down, starting up), or a
    read-only transaction (25006: a standby, or a primary demoted by a failover)."""
    return isinstance(sqlstate, str) and (
        sqlstate.startswith(("08", "53", "57P")) or sqlstate == "25006"
    )


@functools.cache
def _driver_outages() -> tuple[type[BaseException], ...]:
    """The drivers' own exception classes for a lost or refused connection."""
    found: list[type[BaseException]] = [StoreUnavailable, ConnectionError, TimeoutError]
    try:
        import asyncpg

        found += [
            asyncpg.exceptions.PostgresConnectionError,  # 08xxx
            asyncpg.exceptions.InterfaceError,  # the connection is closed
            asyncpg.exceptions.OperatorInterventionError,  # 57xxx: shutdown, restart
            asyncpg.exceptions.InsufficientResourcesError,  # 53xxx: disk full, too many
        ]
    except ImportError:  # pragma: no cover (a dependency)
        pass
    try:
        import psycopg

        found.append(psycopg.OperationalError)
    except ImportError:  # pragma: no cover (a dependency)
        pass
    return tuple(found)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what caused it, each once: the driver's exception SQLAlchemy wraps
    (``orig``), or the one it was raised from."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        nested = getattr(current, "orig", None)
        current = nested if isinstance(nested, BaseException) else current.__cause__


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database is away, not that the
    statement was wrong."""
    from sqlalchemy import exc as sa

    for current in _causes(exc):
        if isinstance(current, sa.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa.OperationalError | sa.InterfaceError | sa.TimeoutError):
            return True
        if isinstance(current, _driver_outages()):
            return True
        if _outage_state(getattr(current, "sqlstate", None)):
            return True
        if isinstance(current, sqlite3.OperationalError):
            return any(sign in str(current).lower() for sign in _SQLITE_OUTAGES)
    return False


# SQLSTATEs of a server that answers but will not have us: a wrong password or user
# (class 28), a database that does not exist, no right to it. A person's to fix.
_REFUSALS = ("28", "3D000", "42501")


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database refused this user, password
    or database name (not an outage: waiting will not help)."""
    return any(
        isinstance(state := getattr(current, "sqlstate", None), str) and state.startswith(_REFUSALS)
        for current in _causes(exc)
    )


async def patiently(call: Callable[[], Awaitable[T]], what: str, limit: float = PATIENCE) -> T:
    """``await call()``, again while the database is unavailable (backing off from 0.2
    to 5 s), for up to ``limit`` seconds; says once that it waits and once that the
    database is back. Other errors, and the last outage error, are raised."""
    deadline = time.monotonic() + limit
    delay = 0.2
    waited = False
    while True:
        try:
            result = await call()
        except Exception as exc:
            if not unavailable(exc) or time.monotonic() + delay > deadline:
                raise
            if not waited:
                log.warning("the database is unavailable; %s waits for it (%s)", what, why(exc))
                DATABASE_UNAVAILABLE.labels("run").inc()
                waited = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        if waited:
            log.info("the database is back; %s goes on", what)
            DATABASE_BACK.inc()
        return result


def why(exc: BaseException) -> str:
    """``exc`` as the one line an operator reads: its kind and the driver's first line,
    without the statement SQLAlchemy appends."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
