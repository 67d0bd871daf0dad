"""``pdc serve`` refusing to start, as a newcomer meets it: one line that names what is
wrong and the fix, no traceback, and nothing that says it is ready before it is.

Each case starts the real command in a subprocess: a port another process holds, a
host that is not this machine's, a PostgreSQL nobody listens for, and (with the test
PostgreSQL) a database and a user that do not exist.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from pagerduty_connector.component.standin.server import free_port
from tests.support.processes import serve_env

ADMIN = "startup-admin-token-9182"


def pdc_serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``pdc serve`` run until it gives up (it must, and soon)."""
    return subprocess.run(
        [sys.executable, "-m", "pagerduty_connector.runtime.cli", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return serve_env(tmp_path, free_port(), "http://127.0.0.1:9", ADMIN)


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another process (this one) listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def lines(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def test_a_port_in_use_is_one_line_before_anything_says_ready(
    env: dict[str, str], taken: int
) -> None:
    done = pdc_serve(env, "--port", str(taken))
    output = lines(done)
    assert done.returncode == 1, output
    assert f"error: cannot listen on 127.0.0.1:{taken}: Address already in use" in output
    assert "choose another port with --port or PDC_PORT" in output
    # Found before the app is even made: no migration, no "ready", no traceback.
    assert "runtime ready" not in output and "Traceback" not in output
    assert "alembic" not in output
    assert len(done.stderr.strip().splitlines()) == 1, output


def test_a_host_that_is_not_this_machine_is_one_line(env: dict[str, str]) -> None:
    unknown = pdc_serve(env, "--host", "no-such-host.invalid")
    assert unknown.returncode == 1
    assert "cannot listen on no-such-host.invalid:" in unknown.stderr
    assert "set --host or PDC_HOST" in unknown.stderr and "Traceback" not in lines(unknown)
    # 192.0.2.0/24 is documentation space: never this machine's.
    foreign = pdc_serve(env, "--host", "192.0.2.7")
    assert foreign.returncode == 1 and "not an address of this machine" in foreign.stderr


def test_a_database_nobody_listens_for_is_one_line_naming_it(env: dict[str, str]) -> None:
    port = free_port()
    done = pdc_serve({**env, "PDC_DATABASE_URL": f"postgresql://pdc:pw@127.0.0.1:{port}/pdc"})
    output = lines(done)
    assert done.returncode != 0, output
    assert "Traceback" not in output and "File " not in output, output
    assert f"cannot start: StoreUnavailable: cannot connect to PostgreSQL at 127.0.0.1:{port}" in (
        output
    )
    assert "PDC_DATABASE_URL" in output and "pw@" not in output
    assert "runtime ready" not in output


def test_a_database_that_refuses_us_is_one_line_naming_the_fix(
    env: dict[str, str], postgres_root: str | None
) -> None:
    if postgres_root is None:
        pytest.skip("PostgreSQL binaries not installed")
    url = make_url(postgres_root)
    for wrong, said in (
        (url.set(database="no_such_db"), 'database "no_such_db" does not exist'),
        (url.set(username="no_such_role"), 'role "no_such_role" does not exist'),
    ):
        done = pdc_serve({**env, "PDC_DATABASE_URL": wrong.render_as_string(False)})
        output = lines(done)
        assert done.returncode != 0 and said in output, output
        assert "Traceback" not in output and "check that the database is up" in output
