"""A throwaway PostgreSQL server for the tests, started from the machine's binaries.

``initdb`` refuses to run as root, so when the tests run as root the server runs
as the ``postgres`` system user. Without binaries the PostgreSQL tests are
skipped locally and fail under CI (``CI=true``), where ``.ci/run`` installs them.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pagerduty_connector.component.standin.server import free_port


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def available() -> bool:
    """Whether ``initdb`` and ``pg_ctl`` can be found."""
    return bool(_binary("initdb") and _binary("pg_ctl"))


class PostgresServer:
    """A throwaway server in its own folder: started, stopped and restarted at will (the
    fault tests take it away from a running runtime and bring it back)."""

    def __init__(self, *, fsync: bool = False) -> None:
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        assert initdb and pg_ctl, "PostgreSQL binaries not found"
        self.pg_ctl = pg_ctl
        self.root = Path(tempfile.mkdtemp(prefix="pdc-pg-"))
        self.data = self.root / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.root, self.user)
            self.root.chmod(0o700)
        self.port = free_port()
        self._run(
            initdb,
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        durability = "on" if fsync else "off"
        self.options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync={durability}"
        )

    @property
    def url(self) -> str:
        """An asyncpg SQLAlchemy URL of its ``postgres`` database."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self.user, timeout=120)

    def _pg_ctl(self, *action: str) -> None:
        """``pg_ctl`` on this server's folder, with its options and log, waiting."""
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-o",
            self.options,
            "-l",
            str(self.root / "log"),
            "-w",
            *action,
        )

    def start(self) -> None:
        """Start it and wait until it takes connections."""
        self._pg_ctl("start")

    def stop(self, mode: str = "fast") -> None:
        """Stop it (``fast``: disconnect every client, as an operator's restart does;
        ``immediate``: as a crash)."""
        self._pg_ctl("-m", mode, "stop")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is dropped, the server is back in
        well under a second."""
        self._pg_ctl("-m", "fast", "restart")

    def remove(self) -> None:
        """Stop it if it runs and delete its folder."""
        subprocess.run(
            [self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            user=self.user,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def postgres_server(*, fsync: bool = False) -> Iterator[str]:
    """Start a server on 127.0.0.1 and yield an asyncpg SQLAlchemy URL to a fresh database.

    Tests run it with ``fsync=off`` for speed; benchmarks ask for durable commits.
    """
    with running_postgres(fsync=fsync) as server:
        yield server.url


@contextmanager
def running_postgres(*, fsync: bool = False) -> Iterator[PostgresServer]:
    """A started ``PostgresServer``, removed afterwards."""
    server = PostgresServer(fsync=fsync)
    try:
        server.start()
        yield server
    finally:
        server.remove()


async def create_database(root_url: str, prefix: str = "t") -> str:
    """A new, empty database on the server of ``root_url``; its SQLAlchemy URL."""
    import uuid

    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(root_url.replace("+asyncpg", ""))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return root_url.rsplit("/", 1)[0] + f"/{name}"
