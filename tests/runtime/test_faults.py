"""Faults of the world around the runtime: its database taken away and given back, its
disk full, PagerDuty unreachable, PostgreSQL restarted under replicas in a storm.

Each test counts what reached PagerDuty per incident (every delivery is about an
incident of its own), so "nothing sent twice" is checked, not assumed; and each one
takes the fault away after a while and checks that the runtime recovered by itself:
deliveries accepted again, ``/ready`` true, every execution ended.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import re
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import pytest
import respx
from starlette.testclient import TestClient

from pagerduty_connector.component.client import ClientSettings, RetryPolicy
from pagerduty_connector.component.standin.server import LocalPagerDuty, free_port, running
from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.app import create_app
from pagerduty_connector.triggers.signature import sign
from tests.support.postgres import PostgresServer, available, create_database, running_postgres
from tests.support.processes import scraped, wait_until
from tests.support.runtime import (
    AUTH,
    EVENT,
    FLOW,
    REST,
    deploy_acme,
    drain,
    make_connection,
    secret_for,
    settings_for,
)

PATH = "/webhooks/acme/on-incident"
# How long a fault lasts, and how soon after it ends the runtime must take deliveries.
OUTAGE = 10.0
RECOVERY = 10.0


def event_about(incident: str) -> bytes:
    """A signed delivery's body: ``incident.triggered`` for ``incident``."""
    event = copy.deepcopy(EVENT)
    event["event"]["data"]["id"] = incident
    event["event"]["id"] = f"ev-{incident}"
    return json.dumps(event).encode()


class PagerDutyCounts:
    """respx routes answering every incident's GET and note, slowly enough that runs are
    in flight when a fault starts, and counting each request by incident."""

    def __init__(self, pd: respx.MockRouter, delay: float = 0.5) -> None:
        self.gets: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()

        async def get(request: httpx2.Request) -> httpx2.Response:
            incident = request.url.path.rsplit("/", 1)[1]
            self.gets[incident] += 1
            await asyncio.sleep(delay)
            return httpx2.Response(200, json={"incident": {"id": incident, "title": "t"}})

        async def note(request: httpx2.Request) -> httpx2.Response:
            incident = request.url.path.split("/")[2]
            self.notes[incident] += 1
            return httpx2.Response(201, json={"note": {"id": f"N{incident}"}})

        pd.get(url__regex=rf"^{re.escape(REST)}/incidents/INC\d+$").mock(side_effect=get)
        pd.post(url__regex=rf"^{re.escape(REST)}/incidents/INC\d+/notes$").mock(side_effect=note)


def outage_and_back(
    api: TestClient,
    subs: FakeSubscriptions,
    start: Callable[[], None],
    end: Callable[[], None],
    pd: PagerDutyCounts,
) -> list[str]:
    """Deliver while the fault is on and after it ends, as PagerDuty would (a delivery
    answered 5xx is sent again); check the answers, readiness and liveness on the way;
    return the executions accepted."""
    secret = secret_for(subs, PATH)
    incidents = (f"INC{n:04d}" for n in itertools.count())

    def send(incident: str) -> httpx2.Response:
        body = event_about(incident)
        headers = {"X-Webhook-Id": incident, "X-PagerDuty-Signature": sign(body, secret)}
        return api.post(PATH, content=body, headers=headers)

    accepted = []
    for incident in itertools.islice(incidents, 8):  # runs in flight when the fault starts
        answer = send(incident)
        assert answer.status_code == 202, answer.text
        accepted.append(answer.json()["execution"])
    # The fault comes while runs are in a step (each flow runs 4 at once).
    wait_until(lambda: len(pd.gets) >= 4, 30, "runs to be in a step")
    before = scraped(api)
    refused = 0
    start()
    began = time.monotonic()
    while time.monotonic() - began < OUTAGE:
        incident = next(incidents)
        answer = send(incident)
        refused += 1
        # Nothing can be recorded: never a 2xx, never a 500, and told when to try again.
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "5"
        assert "nothing was recorded" in answer.json()["error"]["message"]
        assert api.get("/ready").status_code == 503
        assert api.get("/health").status_code == 200
        time.sleep(0.5)
    end()
    back = time.monotonic()
    incident = next(incidents)
    while (answer := send(incident)).status_code != 202:  # PagerDuty sends it again
        assert answer.status_code == 503, answer.text
        refused += 1
        assert time.monotonic() - back < RECOVERY, "not taking deliveries again in time"
        time.sleep(0.25)
    accepted.append(answer.json()["execution"])
    wait_until(lambda: api.get("/ready").status_code == 200, RECOVERY, "readiness")
    # An operator's metrics moved as the answers did: every 503 counted, and the outage.
    after = scraped(api)

    def moved(name: str, *labels: tuple[str, str]) -> float:
        key = (name, tuple(sorted(labels)))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("pdc_deliveries_total", ("status", "503")) == refused
    assert moved("pdc_database_unavailable_total", ("where", "request")) >= refused
    return accepted


def assert_every_run_ended_once(
    api: TestClient, accepted: list[str], pd: PagerDutyCounts, in_flight: int = 0
) -> None:
    """Every execution accepted succeeded, and PagerDuty got each incident's note once;
    each incident's GET once too, but for at most ``in_flight`` of them (a GET PagerDuty
    answered while its checkpoint could not be written is sent again on resume)."""
    drain(api)
    records = [api.get(f"/api/executions/{e}").json() for e in accepted]
    assert [r["status"] for r in records] == ["succeeded"] * len(accepted), records
    incidents = [r["trigger"]["event"]["data"]["id"] for r in records]
    assert {i: pd.notes[i] for i in incidents} == dict.fromkeys(incidents, 1)
    again = [i for i in incidents if pd.gets[i] != 1]
    assert len(again) <= in_flight and all(pd.gets[i] == 2 for i in again), pd.gets
    assert sum(pd.notes.values()) == len(accepted)  # nothing refused was run


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, to take away and give back."""
    if not available():
        pytest.skip("PostgreSQL binaries not installed")
    with running_postgres() as server:
        yield server


def test_postgresql_refusing_connections_for_10_s(
    postgres: PostgresServer, tmp_path: Path, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """Measured before: intake never recovered in 4 minutes, 5 runs stuck for good."""
    counts = PagerDutyCounts(pd)
    url = asyncio.run(create_database(postgres.url))
    settings = settings_for(url, tmp_path, heartbeat_interval=1.0)
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api)
        accepted = outage_and_back(api, subs, postgres.stop, postgres.start, counts)
        assert_every_run_ended_once(api, accepted, counts)


def test_postgresql_refusing_writes_for_10_s(
    postgres: PostgresServer, tmp_path: Path, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """The server takes connections but refuses every write (``default_transaction_read_
    only``, as a standby or a demoted primary after a failover answers): 503s, then back."""
    counts = PagerDutyCounts(pd)
    url = asyncio.run(create_database(postgres.url))
    settings = settings_for(url, tmp_path, heartbeat_interval=1.0)

    def read_only(on: bool) -> Callable[[], None]:
        async def switch() -> None:
            admin = await asyncpg.connect(postgres.url.replace("+asyncpg", ""))
            await admin.execute(f"ALTER SYSTEM SET default_transaction_read_only = {on}")
            await admin.execute("SELECT pg_reload_conf()")
            # Sessions already open keep their transaction mode: end them, as a failover
            # would (each side reconnects and finds the server read-only).
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname IS NOT NULL"
            )
            await admin.close()

        return lambda: asyncio.run(switch())

    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api)
        accepted = outage_and_back(api, subs, read_only(True), read_only(False), counts)
        assert_every_run_ended_once(api, accepted, counts, in_flight=8)


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 48 MB file system of the test's own (tmpfs), to fill up."""
    folder = Path(tempfile.mkdtemp(prefix="pdc-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        folder.rmdir()


def test_sqlite_on_a_full_disk_for_10_s(
    small_disk: Path,
    pd: respx.MockRouter,
    subs: FakeSubscriptions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Measured before: 69 of 120 runs never started until the process was restarted.
    Each GET takes 3 s, so the disk fills while runs are in one: DBOS cannot write its
    checkpoint (its own retries cover a lost connection, not a full disk), the run
    stops where it is, and the sweeper resumes it once the disk has room."""
    caplog.set_level(logging.INFO, logger="pdc")
    counts = PagerDutyCounts(pd, delay=3.0)
    settings = settings_for(
        f"sqlite+aiosqlite:///{small_disk / 'pdc.db'}", small_disk, heartbeat_interval=1.0
    )
    filler = small_disk / "filler"

    def fill() -> None:
        # SQLite writes into WAL space it already has even on a full disk: the log is
        # emptied first, so every write after needs room the disk no longer has.
        with sqlite3.connect(small_disk / "pdc.db") as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)

    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api)
        accepted = outage_and_back(api, subs, fill, filler.unlink, counts)
        assert_every_run_ended_once(api, accepted, counts, in_flight=8)
    said = caplog.text
    assert "waits for the database: OperationalError: database or disk is full" in said
    assert re.search(r"resumed \d+ runs left pending with no task", said)


def test_pagerduty_unreachable_for_20_s(database_url: str, tmp_path: Path) -> None:
    """PagerDuty's address refuses connections for 20 s while 40 runs go on: nothing was
    sent by a refused connection, so every step is tried again, POSTs included, and
    every run succeeds with one note. Measured before: 6 of 40 runs failed for good."""
    port = free_port()
    standin = LocalPagerDuty(port=port)
    serving = threading.Thread(target=standin.serve_forever, daemon=True)
    serving.start()
    # Everything goes to the stand-in, a real server on a port that can go away.
    client = ClientSettings(api_url=standin.url, retry=RetryPolicy())
    settings = settings_for(database_url, tmp_path)
    with TestClient(create_app(settings, client_settings=client), headers=AUTH) as api:
        deploy_acme(api)
        (secret,) = standin.subscriptions.secrets.values()
        accepted = []
        for n in range(40):
            body = event_about(f"INC{n:04d}")
            headers = {"X-Webhook-Id": f"d{n}", "X-PagerDuty-Signature": sign(body, secret)}
            answer = api.post(PATH, content=body, headers=headers)
            assert answer.status_code == 202
            accepted.append(answer.json()["execution"])
            if n == 5:  # PagerDuty goes away with runs started and queued
                # Its kept-alive connections too: served on, they had taken every note
                # (a flaky pass measured with 32 runs at once).
                standin.go_away()
                down = time.monotonic()
        time.sleep(max(0.0, 20 - (time.monotonic() - down)))
        subscriptions = standin.subscriptions
        standin = LocalPagerDuty(port=port)
        standin.subscriptions = subscriptions  # the same PagerDuty, back on its address
        threading.Thread(target=standin.serve_forever, daemon=True).start()
        try:
            drain(api)
            records = [api.get(f"/api/executions/{e}").json() for e in accepted]
            assert [r["status"] for r in records] == ["succeeded"] * 40, [
                r["error"] for r in records
            ]
            notes = Counter(p for m, p in standin.requests if m == "POST")
            assert notes == {f"/incidents/INC{n:04d}/notes": 1 for n in range(40)}
        finally:
            standin.shutdown()
            standin.server_close()


def test_postgresql_restarted_mid_storm_under_two_replicas(tmp_path: Path) -> None:
    """Two ``pdc serve`` replicas share one PostgreSQL, restarted (``pg_ctl restart -m
    fast``) in the middle of 300 deliveries spread over them. Measured before: every
    later delivery answered 500 until the replicas were restarted by hand, and 49 runs
    stayed running for good. Now every delivery answered 2xx has one execution, every
    execution ends, and no note is sent twice but one in flight at the restart."""
    from tests.runtime.test_replicas import Replicas, _env

    if not available():
        pytest.skip("PostgreSQL binaries not installed")
    with running_postgres() as postgres, running(slow=("POST", "/notes", 0.2)) as pagerduty:
        database = asyncio.run(create_database(postgres.url, "storm"))
        # Four runs of the flow at once per replica: what the bound on notes sent twice
        # below counts on (the default, 32, would leave it to the machine's speed).
        env = _env(database, pagerduty, PDC_HEARTBEAT_INTERVAL="1", PDC_FLOW_CONCURRENCY="4")
        replicas = Replicas(tmp_path, env)
        try:
            clients = [replicas.start(name) for name in ("a", "b")]
            make_connection(clients[0])
            deployed = clients[0].post(
                "/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]}
            )
            assert deployed.status_code == 201, deployed.text
            (secret,) = pagerduty.subscriptions.secrets.values()
            answers: dict[str, tuple[int, str]] = {}
            refused = Counter[int]()
            turn = itertools.cycle(clients)
            for n in range(300):
                if n == 100:
                    postgres.restart()
                incident = f"INC{n:04d}"
                body = event_about(incident)
                headers = {"X-Webhook-Id": incident, "X-PagerDuty-Signature": sign(body, secret)}
                deadline = time.monotonic() + 30
                while True:  # a delivery refused goes to the next replica, as a balancer would
                    try:
                        answer = next(turn).post(PATH, content=body, headers=headers)
                    except httpx2.HTTPError:
                        answer = None
                    if answer is not None and answer.status_code in (200, 202):
                        answers[incident] = (answer.status_code, answer.json().get("execution"))
                        break
                    if answer is not None:
                        assert answer.status_code == 503, answer.text
                        refused[answer.status_code] += 1
                    assert time.monotonic() < deadline, f"{incident} was never accepted"
                    time.sleep(0.1)
            executions = [e for status, e in answers.values() if status == 202]
            assert len(executions) == 300  # each delivery recorded once, on some replica

            def ended() -> list[dict[str, Any]] | None:
                records = [clients[0].get(f"/api/executions/{e}").json() for e in executions]
                done = all(r["status"] in ("succeeded", "failed") for r in records)
                return records if done else None

            records = wait_until(ended, 120, "every execution to end")
            assert [r["status"] for r in records] == ["succeeded"] * 300
            notes = Counter(p for m, p in pagerduty.requests if m == "POST" and "INC" in p)
            assert set(notes) == {f"/incidents/INC{n:04d}/notes" for n in range(300)}
            twice = [p for p, count in notes.items() if count > 1]
            # A note sent when the restart cut its checkpoint's write may be sent again:
            # at most the runs in flight then (4 per flow on each replica).
            assert len(twice) <= 8 and max(notes.values()) <= 2, twice
            assert refused[503] > 0  # the restart was noticed and answered honestly
            for name in ("a", "b"):
                log = replicas.log(name)
                assert " 500 " not in log and "Internal Server Error" not in log
        finally:
            replicas.stop()
