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


@contextmanager
def postgres_server(*, fsync: bool = False) -> Iterator[str]:
    """Start a server on 127.0.0.1 and yield an asyncpg SQLAlchemy URL to a fresh database.

    Tests run it with ``fsync=off`` for speed; benchmarks ask for durable commits.
    """
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    assert initdb and pg_ctl, "PostgreSQL binaries not found"
    root = Path(tempfile.mkdtemp(prefix="pdc-pg-"))
    data = root / "data"
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(root, user)
        root.chmod(0o700)
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=user, timeout=120)

    run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    durability = "on" if fsync else "off"
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync={durability}"
    run(pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            user=user,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


async def create_database(root_url: str, prefix: str = "t") -> str:
    """A new, empty database on the server of ``root_url``; its SQLAlchemy URL."""
    import uuid

    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(root_url.replace("+asyncpg", ""))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return root_url.rsplit("/", 1)[0] + f"/{name}"
