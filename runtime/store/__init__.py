"""The runtime's store: SQLAlchemy 2 (async) on SQLite by default, PostgreSQL when asked.

The schema is created and upgraded by Alembic (``migrations/``) at startup; the
tables are in ``models``, the batched execution writer in ``writer``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy import select as _select
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from pagerduty_connector.runtime.store.models import (
    Base,
    ConnectionRow,
    ExecutionRow,
    ExecutorRow,
    InstanceRow,
    OAuthStateRow,
    StateRow,
    SubscriptionRow,
    new_id,
    now,
)
from pagerduty_connector.runtime.store.outage import StoreUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "Base",
    "ConnectionRow",
    "ExecutionRow",
    "ExecutorRow",
    "InstanceRow",
    "OAuthStateRow",
    "StateRow",
    "Store",
    "SubscriptionRow",
    "alembic_config",
    "new_id",
    "now",
    "select",
]


def alembic_config() -> Config:
    """Alembic's configuration for our migrations (package data, so a wheel has them)."""
    # Imported here: the writer process imports this package and never migrates, and
    # Alembic is a third of its start-up.
    from alembic.config import Config

    config = Config()
    config.set_main_option(
        "script_location", str(files("pagerduty_connector.runtime.store") / "migrations")
    )
    return config


def _upgrade(connection: SyncConnection) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection SQLite settings: WAL journal, durable commits, a busy timeout."""
    # WAL lets readers work while a writer commits and makes each commit cheaper;
    # synchronous=FULL keeps every commit durable (a 202 promises the record).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _postgresql_creator(url: str) -> Callable[[], Awaitable[Any]]:
    """How the pool connects to PostgreSQL: as SQLAlchemy's asyncpg dialect would (its
    arguments from the URL), with a refused or unanswered connection raised as
    ``StoreUnavailable`` naming the server. (asyncpg raises the socket's own
    ``ConnectionRefusedError``, which SQLAlchemy passes on unwrapped: a request would
    answer 500 rather than 503.)"""
    import asyncpg
    from sqlalchemy.dialects.postgresql.asyncpg import dialect

    parsed = make_url(url)
    args, kwargs = dialect().create_connect_args(parsed)
    kwargs.setdefault("timeout", 10)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"

    async def connect() -> Any:
        try:
            return await asyncpg.connect(*args, **kwargs)
        except (OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {where}: {exc}") from exc

    return connect


class Store:
    """The database: an async engine, sessions, and migrations."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.sqlite_path: str | None = None
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            self.sqlite_path = parsed.database
        # A pre-ping is a round trip per checkout; a local SQLite file never goes away.
        # Parameters can hold sealed secrets and delivery data: errors name statements only.
        options: dict[str, Any] = {}
        if not self.is_sqlite:
            options["async_creator"] = _postgresql_creator(url)
        self.engine: AsyncEngine = create_async_engine(
            url, pool_pre_ping=not self.is_sqlite, hide_parameters=True, **options
        )
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)
        self.session = async_sessionmaker(self.engine, expire_on_commit=False)

    async def migrate(self) -> None:
        """Create or upgrade the schema to the newest Alembic revision."""
        if self.sqlite_path:
            Path(self.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
        async with self.engine.begin() as connection:
            await connection.run_sync(_upgrade)

    async def close(self) -> None:
        """Dispose of the connection pool."""
        await self.engine.dispose()


select = _select
