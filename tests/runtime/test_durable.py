"""Durable runs: retries inside the workflow, recorded per attempt; what is not retried."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import pytest
import respx
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import text
from starlette.testclient import TestClient

from pagerduty_connector.component.client import ClientSettings, RetryPolicy
from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.app import create_app
from pagerduty_connector.runtime.durable import SealedSerializer, system_database_url
from pagerduty_connector.runtime.store import now
from tests.conftest import REST
from tests.support.processes import wait_until
from tests.support.runtime import (
    AUTH,
    EVENT,
    FLOW,
    INCIDENT,
    answer_incident,
    deliver,
    deploy_acme,
    drain,
    settings_for,
)

PATH = "/webhooks/acme/on-incident"
LIMITED = httpx2.Response(
    429, headers={"ratelimit-reset": "0"}, json={"error": {"message": "Rate limited", "code": 2020}}
)


@pytest.fixture
def durable_api(
    database_url: str, tmp_path: Path, pd: respx.MockRouter, subs: FakeSubscriptions
) -> Iterator[TestClient]:
    settings = settings_for(database_url, tmp_path, step_attempts=3, step_backoff=0)
    with TestClient(create_app(settings), headers=AUTH) as client:
        deploy_acme(client)
        yield client


def run_once(api: TestClient, subs: FakeSubscriptions) -> dict:
    answer = deliver(api, subs, PATH)
    assert answer.status_code == 202, answer.text
    drain(api)
    return api.get(f"/api/executions/{answer.json()['execution']}").json()


def test_a_rate_limited_step_is_retried_and_every_attempt_recorded(
    durable_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    # The client's own retries (5 after the first try) give up, then the workflow retries.
    get = pd.get(f"{REST}/incidents/Q1P5").mock(
        side_effect=[LIMITED] * 6 + [httpx2.Response(200, json=INCIDENT)]
    )
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    record = run_once(durable_api, subs)
    assert record["status"] == "succeeded", record
    assert get.call_count == 7
    attempts = record["steps"][0]["attempts"]
    assert [(a["attempt"], a["ok"]) for a in attempts] == [(1, False), (2, True)]
    assert "HTTP 429" in attempts[0]["error"]
    assert [(a["attempt"], a["ok"]) for a in record["steps"][1]["attempts"]] == [(1, True)]


def test_a_post_that_failed_with_a_5xx_is_not_sent_again(
    durable_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    note = pd.post(f"{REST}/incidents/Q1P5/notes").respond(
        502, json={"error": {"message": "Bad gateway"}}
    )
    record = run_once(durable_api, subs)
    assert record["status"] == "failed"
    assert note.call_count == 1  # it may have been applied: no duplicate note
    assert [a["ok"] for a in record["steps"][1]["attempts"]] == [False]


@pytest.fixture
def quick_api(
    database_url: str, tmp_path: Path, pd: respx.MockRouter, subs: FakeSubscriptions
) -> Iterator[TestClient]:
    """The runtime with no waits between retries, the client's or the workflow's."""
    settings = settings_for(database_url, tmp_path, step_attempts=3, step_backoff=0)
    client = ClientSettings(retry=RetryPolicy(base_delay=0, jitter=False))
    with TestClient(create_app(settings, client_settings=client), headers=AUTH) as api:
        deploy_acme(api)
        yield api


REFUSED = httpx2.ConnectError("[Errno 111] Connection refused")


def test_a_post_that_never_left_is_sent_again_until_it_lands_once(
    quick_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """PagerDuty unreachable (connection refused) for longer than the client's own six
    tries: the workflow tries the POST again, since it provably never left."""
    pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    created = httpx2.Response(201, json={"note": {"id": "N1"}})
    note = pd.post(f"{REST}/incidents/Q1P5/notes").mock(side_effect=[REFUSED] * 8 + [created])
    record = run_once(quick_api, subs)
    assert record["status"] == "succeeded", record
    assert note.call_count == 9  # 8 refused connections, then the one note PagerDuty got
    attempts = record["steps"][1]["attempts"]
    assert [a["ok"] for a in attempts] == [False, True]
    assert "could not reach PagerDuty at https://api.pagerduty.com" in attempts[0]["error"]
    assert "Connection refused" in attempts[0]["error"]


def test_a_post_cut_off_mid_request_is_not_sent_again(
    quick_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    note = pd.post(f"{REST}/incidents/Q1P5/notes").mock(
        side_effect=httpx2.ReadError("connection reset by peer")
    )
    record = run_once(quick_api, subs)
    assert record["status"] == "failed"
    assert note.call_count == 1  # PagerDuty may have made the note: no second one
    assert [a["ok"] for a in record["steps"][1]["attempts"]] == [False]


def test_retries_stop_after_the_configured_attempts_and_4xx_is_not_retried(
    durable_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    get = pd.get(f"{REST}/incidents/Q1P5").mock(return_value=LIMITED)
    record = run_once(durable_api, subs)
    assert record["status"] == "failed"
    assert len(record["steps"][0]["attempts"]) == 3 and get.call_count == 3 * 6
    pd.get(f"{REST}/incidents/Q1P5").mock(
        return_value=httpx2.Response(404, json={"error": {"message": "Not Found"}})
    )
    answer = deliver(durable_api, subs, PATH, "second")
    drain(durable_api)
    second = durable_api.get(f"/api/executions/{answer.json()['execution']}").json()
    assert [a["ok"] for a in second["steps"][0]["attempts"]] == [False]


def test_what_dbos_stores_is_sealed_with_the_runtime_key() -> None:
    key = Fernet.generate_key().decode()
    sealed = SealedSerializer(key)
    stored = sealed.serialize({"token": "u+SECRET-in-a-step-output"})
    assert "SECRET" not in stored
    assert sealed.deserialize(stored) == {"token": "u+SECRET-in-a-step-output"}
    with pytest.raises(InvalidToken):
        SealedSerializer(Fernet.generate_key().decode()).deserialize(stored)


def test_only_a_runs_empty_inputs_and_how_it_ended_are_sealed_once() -> None:
    sealed = SealedSerializer(Fernet.generate_key().decode())
    empty = {"args": (), "kwargs": {}}
    first, again = sealed.serialize(empty), sealed.serialize(dict(empty))
    assert first == again and sealed.deserialize(first) == empty
    for end in ("succeeded", "failed"):
        assert sealed.serialize(end) == sealed.serialize(end[:])
        assert sealed.deserialize(sealed.serialize(end)) == end and end not in sealed.serialize(end)
    assert sealed.serialize("a note") != sealed.serialize("a note")
    # Anything else gets a fresh token (a fresh IV) each time: equal values stay unlinkable.
    output = {"args": ("Q1P5",), "kwargs": {}}
    assert sealed.serialize(output) != sealed.serialize(output)
    assert sealed.deserialize(sealed.serialize(output)) == output


def test_dbos_uses_the_runtime_database() -> None:
    assert system_database_url("sqlite+aiosqlite:////data/pdc.db") == "sqlite:////data/pdc.db"
    assert (
        system_database_url("postgresql+asyncpg://u:p@db:5432/pdc")
        == "postgresql+psycopg://u:p@db:5432/pdc"
    )


def test_retry_and_replay_are_linked_to_the_original(
    durable_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    get = pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    note = pd.post(f"{REST}/incidents/Q1P5/notes").mock(
        side_effect=[
            httpx2.Response(403, json={"error": {"message": "Forbidden", "code": 2010}}),
            httpx2.Response(201, json={"note": {"id": "N1"}}),
            httpx2.Response(201, json={"note": {"id": "N2"}}),
        ]
    )
    failed = run_once(durable_api, subs)
    assert failed["status"] == "failed" and "HTTP 403" in failed["error"]
    assert (get.call_count, note.call_count) == (1, 1)

    retried = durable_api.post(f"/api/executions/{failed['id']}/retry")
    assert retried.status_code == 202, retried.text
    drain(durable_api)
    retry = durable_api.get(f"/api/executions/{retried.json()['execution']}").json()
    assert retry["status"] == "succeeded" and retry["retryOf"] == failed["id"]
    # The first step kept its output: PagerDuty was asked for the incident once in all.
    assert (get.call_count, note.call_count) == (1, 2)
    assert [s["name"] for s in retry["steps"]] == ["incident", "note"]
    assert retry["steps"][0]["result"] == failed["steps"][0]["result"]
    assert retry["steps"][1]["result"]["data"] == {"note": {"id": "N1"}}

    again = durable_api.post(f"/api/executions/{retry['id']}/retry")
    assert again.status_code == 409 and "succeeded: replay it to run its event again" in again.text

    replayed = durable_api.post(f"/api/executions/{failed['id']}/replay")
    assert replayed.status_code == 202, replayed.text
    drain(durable_api)
    replay = durable_api.get(f"/api/executions/{replayed.json()['execution']}").json()
    assert replay["status"] == "succeeded" and replay["replayOf"] == failed["id"]
    assert replay["trigger"]["event"] == failed["trigger"]["event"]
    # A replay runs every step again.
    assert (get.call_count, note.call_count) == (2, 3)
    listed = durable_api.get("/api/executions").json()
    assert {e["id"] for e in listed} == {failed["id"], retry["id"], replay["id"]}
    assert durable_api.post("/api/executions/nope/retry").status_code == 404


def test_a_delivery_and_its_run_are_committed_together_once(
    durable_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    answer_incident(pd)
    first = deliver(durable_api, subs, PATH, "same-delivery")
    again = deliver(durable_api, subs, PATH, "same-delivery")
    assert (first.status_code, again.status_code) == (202, 200)
    execution = first.json()["execution"]
    engine = durable_api.app.state.engine  # type: ignore[attr-defined]

    async def queued() -> list[tuple[str, str]]:
        # DBOS's own table, in the runtime's database: the run was committed with the row.
        table = "workflow_status" if engine.store.is_sqlite else "dbos.workflow_status"
        async with engine.store.session() as db:
            rows = await db.execute(text(f"SELECT workflow_uuid, name FROM {table}"))
            return [tuple(r) for r in rows]

    assert durable_api.portal.call(queued) == [(execution, "pdc.execution")]
    drain(durable_api)
    listed = durable_api.get("/api/executions").json()
    assert [(e["id"], e["status"]) for e in listed] == [(execution, "succeeded")]


def order_by_incident(api: TestClient) -> None:
    """Redeploy acme's flow with a concurrency key: one run per incident at a time."""
    keyed = {**FLOW, "concurrencyKey": "{{ trigger.event.data.id }}"}
    assert api.put("/api/instances/acme", json={"connection": "ops", "flows": [keyed]}).is_success


def test_runs_with_one_concurrency_key_go_one_at_a_time(
    durable_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    order_by_incident(durable_api)
    running: dict[str, int] = {"A": 0, "B": 0}
    peak: dict[str, int] = {"A": 0, "B": 0}
    b_started = asyncio.Event()

    async def incident(request: httpx2.Request) -> httpx2.Response:
        key = request.url.path.rsplit("/", 1)[1]
        running[key] += 1
        peak[key] = max(peak[key], running[key])
        if key == "B":
            b_started.set()
        elif not b_started.is_set():
            # The first A run holds until B runs: other keys are not held up by A.
            await asyncio.wait_for(b_started.wait(), 10)
        await asyncio.sleep(0.02)
        running[key] -= 1
        return httpx2.Response(200, json={"incident": {"id": key, "title": "t"}})

    pd.get(url__regex=rf"{REST}/incidents/[AB]$").mock(side_effect=incident)
    pd.post(url__regex=rf"{REST}/incidents/[AB]/notes").respond(201, json={"note": {"id": "N"}})
    answers = []
    for n, key in enumerate(["A", "A", "B", "A"]):
        event = copy.deepcopy(EVENT)
        event["event"]["data"]["id"] = key
        answers.append(deliver(durable_api, subs, PATH, f"keyed-{n}", event=event))
    assert [a.status_code for a in answers] == [202] * 4
    drain(durable_api)
    records = [durable_api.get(f"/api/executions/{a.json()['execution']}").json() for a in answers]
    assert [r["status"] for r in records] == ["succeeded"] * 4
    assert peak == {"A": 1, "B": 1}
    # The runs of key A never overlapped.
    runs_of_a = sorted((records[i] for i in (0, 1, 3)), key=lambda r: r["startedAt"])
    for earlier, later in itertools.pairwise(runs_of_a):
        assert earlier["finishedAt"] <= later["startedAt"]


def test_runs_with_one_concurrency_key_start_in_the_order_their_deliveries_arrived(
    durable_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    order_by_incident(durable_api)
    pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    # Delivered at once, so several are recorded, and queued, in one batch and within
    # one millisecond: their order is then the order of their (time-ordered) ids.
    with ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(lambda n: deliver(durable_api, subs, PATH, f"order-{n}"), range(24))
        )
    assert [a.status_code for a in answers] == [202] * 24
    drain(durable_api)
    ids = sorted(a.json()["execution"] for a in answers)  # the order they were recorded in
    records = [durable_api.get(f"/api/executions/{i}").json() for i in ids]
    assert [r["status"] for r in records] == ["succeeded"] * 24
    started = sorted(records, key=lambda r: r["startedAt"])
    assert [r["id"] for r in started] == ids
    for earlier, later in itertools.pairwise(started):
        assert earlier["finishedAt"] <= later["startedAt"]


def test_at_start_only_executions_without_a_queued_run_are_queued(
    database_url: str, tmp_path: Path, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """A row recorded before its run was queued in the same transaction (by an older
    version, or a retry cut off before its fork) is queued at the next start; the runs
    DBOS holds are left to DBOS."""
    settings = settings_for(database_url, tmp_path)
    pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    notes = pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api)
        ran = deliver(api, subs, PATH, "ran").json()["execution"]
        drain(api)
        engine = api.app.state.engine
        trigger = api.get(f"/api/executions/{ran}").json()["trigger"]
        lost = {
            "id": "lost-run",
            "instance_id": "acme",
            "flow": "on-incident",
            "webhook_id": "lost",
            "status": "received",
            "received_body": "{}",
            "headers": {},
            "trigger": trigger,
            "steps": [],
            "received_at": now(),
        }
        assert api.portal.call(engine.writer.record, lost)  # type: ignore[union-attr]
        unqueued = api.portal.call(partial(engine.unfinished, unqueued=True))  # type: ignore[union-attr]
        assert [row[0] for row in unqueued] == ["lost-run"]
    assert notes.call_count == 1
    with TestClient(create_app(settings), headers=AUTH) as api:
        drain(api)
        assert api.get("/api/executions/lost-run").json()["status"] == "succeeded"
        assert api.get(f"/api/executions/{ran}").json()["status"] == "succeeded"
    assert notes.call_count == 2  # the lost run's note; the first run was not run again


def _execution(webhook_id: str, place: tuple[str, str]) -> tuple[str, list[Any], Any]:
    """A new execution as the writer process takes it: id, column values, its run's place."""
    from pagerduty_connector.runtime.store import new_id
    from pagerduty_connector.runtime.store.models import ExecutionRow

    values = {
        "id": new_id(),
        **{"instance_id": "acme", "flow": "on-incident", "webhook_id": webhook_id},
        **{"status": "received", "received_body": "{}", "headers": {}, "trigger": {}},
        **{"response_status": 202, "steps": [], "received_at": now()},
    }
    columns = [c.name for c in ExecutionRow.__table__.columns]
    return values["id"], [values.get(name) for name in columns], place


def test_a_batch_and_its_runs_go_in_one_statement_per_table_or_one_in_all(
    durable_api: TestClient,
) -> None:
    """The writer's ``apply_batch``: five new executions queue five runs in two
    partitions, each run's rows as DBOS's own enqueue writes them; a redelivery queues
    nothing. SQLite: a statement per table (executions, DBOS's status, its inputs);
    PostgreSQL: one in all."""
    import psycopg
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    from pagerduty_connector.runtime.durable import enqueue_options, enqueuer, partition
    from pagerduty_connector.runtime.store import new_id
    from pagerduty_connector.runtime.store.models import ExecutionRow
    from pagerduty_connector.runtime.store.writer_process import Statements, apply_batch

    settings = durable_api.app.state.engine.settings  # type: ignore[attr-defined]
    engine = create_engine(
        system_database_url(settings.resolved_database_url()), poolclass=NullPool
    )
    on_sqlite = engine.dialect.name == "sqlite"
    sql = Statements(ExecutionRow.__table__, on_sqlite)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    class Counted(psycopg.Cursor):  # what the writer sends past SQLAlchemy, on PostgreSQL
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            statements.append(str(query))
            return super().execute(query, *args, **kwargs)

    # A queue no process polls, so the runs stay as queued for the look below.
    places = [("test-unpolled", partition("acme", flow)) for flow in ("on-incident", "other")]
    batch = [_execution(f"wh-{n}", places[n % 2]) for n in range(5)]
    ids = [row_id for row_id, _, _ in batch]
    redelivered = _execution("wh-0", places[0])
    by_dbos = {place: new_id() for place in places}
    schema = "" if on_sqlite else "dbos."
    try:
        queue = enqueuer("", settings.secret_key, engine=engine)
        with engine.connect() as connection:
            if not on_sqlite:
                connection.connection.driver_connection.cursor_factory = Counted
            statements.clear()
            assert apply_batch(connection, sql, queue, batch, []) == set(ids)
            assert len(statements) == (3 if on_sqlite else 1), statements
            assert apply_batch(connection, sql, queue, [redelivered], []) == set()
        with engine.connect() as connection, connection.begin():
            for place, dbos_id in by_dbos.items():
                queue.enqueue_in_transaction(connection, enqueue_options(dbos_id, place))
        with engine.connect() as connection:
            rows = {
                table: {
                    row["workflow_uuid"]: dict(row)
                    for row in connection.execute(text(f"SELECT * FROM {schema}{table}")).mappings()
                }
                for table in ("workflow_status", "workflow_input")
            }
    finally:
        engine.dispose()
    status = rows["workflow_status"]
    assert sorted(status) == sorted([*ids, *by_dbos.values()])
    assert [(status[i]["status"], status[i]["queue_partition_key"]) for i in ids] == [
        ("ENQUEUED", f"acme/{flow}") for flow in ("on-incident", "other") * 3
    ][:5]
    # Every column as DBOS itself writes it for a run of the same partition, but the id,
    # the times of writing and the token DBOS draws for each enqueue (its own per run).
    differ = {"workflow_uuid", "created_at", "updated_at", "retention_timestamp", "creator_xid"}
    for table, written in rows.items():
        for (_, _, place), i in zip(batch, ids, strict=True):
            expected = {k: v for k, v in written[by_dbos[place]].items() if k not in differ}
            assert {k: v for k, v in written[i].items() if k not in differ} == expected, table
    assert len({row["creator_xid"] for row in status.values()}) == len(status)


def test_without_dbos_hand_off_a_batch_fails_and_writes_nothing(
    durable_api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should DBOS lose the method the writer catches its rows at, a batch that queues runs
    fails before DBOS could write them on its own (in autocommit, apart from their
    executions): no execution, no run."""
    from dbos._sys_db import SystemDatabase
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from pagerduty_connector.runtime.durable import enqueuer, partition
    from pagerduty_connector.runtime.store.models import ExecutionRow
    from pagerduty_connector.runtime.store.writer_process import Statements, apply_batch

    settings = durable_api.app.state.engine.settings  # type: ignore[attr-defined]
    url = system_database_url(settings.resolved_database_url())
    engine = create_engine(url, poolclass=NullPool)
    schema = "" if engine.dialect.name == "sqlite" else "dbos."
    row_id, values, place = _execution("wh-lost", ("test-unpolled", partition("acme", "x")))
    monkeypatch.delattr(SystemDatabase, "_execute_prepared")
    try:
        queue = enqueuer("", settings.secret_key, engine=engine)
        sql = Statements(ExecutionRow.__table__, engine.dialect.name == "sqlite")
        with (
            engine.connect() as connection,
            pytest.raises(RuntimeError, match="_execute_prepared"),
        ):
            apply_batch(connection, sql, queue, [(row_id, values, place)], [])
        with engine.connect() as connection:
            found = [
                connection.execute(text(query), {"id": row_id}).scalar()
                for query in (
                    "SELECT count(*) FROM executions WHERE id = :id",
                    f"SELECT count(*) FROM {schema}workflow_status WHERE workflow_uuid = :id",
                )
            ]
    finally:
        engine.dispose()
    assert found == [0, 0]


def test_a_step_whose_input_renders_to_nothing_ends_its_run_failed_and_can_be_retried(
    database_url: str, tmp_path: Path, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """Measured before: the execution stayed ``running`` for good, through a restart, and
    Retry answered 409. Now the step fails naming its input and template, the run ends,
    stays ended after a restart, and a retry starts after the steps that succeeded."""
    settings = settings_for(database_url, tmp_path)
    get = pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    note = pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    steps = [
        FLOW["steps"][0],
        {
            **FLOW["steps"][1],
            "inputs": {
                "id": "{{ steps.incident.data.incident.id }}",
                # A documented key this event lacks: deploy lets it through.
                "note": "{{ trigger.event.data.priority.summary }}",
            },
        },
    ]
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api, [{**FLOW, "steps": steps}])
        answer = deliver(api, subs, PATH, "renders-nothing")
        drain(api)
        execution = answer.json()["execution"]
        record = api.get(f"/api/executions/{execution}").json()
        assert record["status"] == "failed"
        assert record["error"] == (
            "TemplateFailed: on-incident.note: input 'note': template "
            "'{{ trigger.event.data.priority.summary }}' failed: UndefinedError: 'dict object' "
            "has no attribute 'priority'"
        )
        assert [s["status"] for s in record["steps"]] == ["succeeded", "failed"]
    with TestClient(create_app(settings), headers=AUTH) as api:
        drain(api)  # nothing is left unfinished to resume
        assert api.get(f"/api/executions/{execution}").json()["status"] == "failed"
        retried = api.post(f"/api/executions/{execution}/retry")
        assert retried.status_code == 202, retried.text
        drain(api)
        retry = api.get(f"/api/executions/{retried.json()['execution']}").json()
        # The same flow, so the same failure; the first step was not asked for again.
        assert retry["status"] == "failed" and retry["error"] == record["error"]
        assert retry["steps"][0]["result"] == record["steps"][0]["result"]
    assert (get.call_count, note.call_count) == (1, 0)


@pytest.fixture
def held_api(
    database_url: str, tmp_path: Path, pd: respx.MockRouter, subs: FakeSubscriptions
) -> Iterator[tuple[TestClient, asyncio.Event, dict[str, int]]]:
    """The runtime running one run of a flow at a time, its GET held until released; the
    client, the release, and what reached PagerDuty."""
    settings = settings_for(
        database_url, tmp_path, flow_concurrency=1, step_backoff=0, heartbeat_interval=0.5
    )
    release = asyncio.Event()
    sent = {"get": 0, "note": 0}

    async def incident(request: httpx2.Request) -> httpx2.Response:
        sent["get"] += 1
        await release.wait()
        return httpx2.Response(200, json=INCIDENT)

    async def note(request: httpx2.Request) -> httpx2.Response:
        sent["note"] += 1
        return httpx2.Response(201, json={"note": {"id": "N1"}})

    pd.get(f"{REST}/incidents/Q1P5").mock(side_effect=incident)
    pd.post(f"{REST}/incidents/Q1P5/notes").mock(side_effect=note)
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api)
        yield api, release, sent


def test_an_operator_cancels_a_queued_and_a_running_run_then_retries_them(
    held_api: tuple[TestClient, asyncio.Event, dict[str, int]], subs: FakeSubscriptions
) -> None:
    api, release, sent = held_api
    running = deliver(api, subs, PATH, "running").json()["execution"]
    queued = deliver(api, subs, PATH, "queued").json()["execution"]
    wait_until(lambda: sent["get"] == 1, 10, "the first run to be in its GET")
    for execution in (queued, running):
        cancelled = api.post(f"/api/executions/{execution}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
    assert api.post(f"/api/executions/{running}/cancel").status_code == 409  # it has ended
    api.portal.call(release.set)  # type: ignore[union-attr]
    time.sleep(1.5)  # the running one reaches DBOS again, and stops there; the queued never starts
    assert sent == {"get": 1, "note": 0}
    records = [api.get(f"/api/executions/{e}").json() for e in (running, queued)]
    assert [(r["status"], r["error"]) for r in records] == [
        ("cancelled", "cancelled by an operator")
    ] * 2
    retries = [api.post(f"/api/executions/{e}/retry") for e in (running, queued)]
    assert [r.status_code for r in retries] == [202, 202], [r.text for r in retries]
    drain(api)
    done = [api.get(f"/api/executions/{r.json()['execution']}").json() for r in retries]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"]
    assert sent["note"] == 2  # one note for each, none for the cancelled runs
    assert sent["get"] <= 3  # the cut GET may be asked again, once


def test_a_run_cancelled_outside_the_runtime_ends_cancelled_in_its_record(
    held_api: tuple[TestClient, asyncio.Event, dict[str, int]], subs: FakeSubscriptions
) -> None:
    """A run whose DBOS workflow ended without the execution's record saying so (here
    cancelled with DBOS's own API, as an operator's DBOS tools would) is settled by the
    sweeper: measured before, such executions stayed ``received`` or ``running``."""
    from dbos import DBOS

    api, release, sent = held_api
    deliver(api, subs, PATH, "first")
    queued = deliver(api, subs, PATH, "second").json()["execution"]
    wait_until(lambda: sent["get"] == 1, 10, "the first run to be in its GET")
    api.portal.call(DBOS.cancel_workflow_async, queued)  # type: ignore[union-attr]
    record = wait_until(
        lambda: (r := api.get(f"/api/executions/{queued}").json())["status"] == "cancelled" and r,
        10,
        "the sweeper to settle the cancelled run",
    )
    assert record["error"] == "the run was cancelled" and record["finishedAt"]
    api.portal.call(release.set)  # type: ignore[union-attr]
    drain(api)
    assert sent == {"get": 1, "note": 1}  # the first run only


def test_a_loop_retried_resumes_at_the_failed_item(
    durable_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """Each item's steps are checkpoints: a retry starts at the item that failed, and the
    items before it are not sent again."""
    sent: list[str] = []

    def note(request: httpx2.Request) -> httpx2.Response:
        text = json.loads(request.content)["note"]["content"]
        sent.append(text)
        if text == "b" and sent.count("b") == 1:
            return httpx2.Response(403, json={"error": {"message": "Forbidden", "code": 2010}})
        return httpx2.Response(201, json={"note": {"id": f"N-{text}"}})

    pd.post(f"{REST}/incidents/Q1P5/notes").mock(side_effect=note)
    looping = {
        **FLOW,
        "steps": [
            {
                "name": "each",
                "forEach": "{{ trigger.event.data.assignees }}",
                "steps": [
                    {
                        "name": "note",
                        "action": "createIncidentNote",
                        "inputs": {"id": "Q1P5", "note": "{{ item }}"},
                    },
                ],
            }
        ],
    }
    assert durable_api.put(
        "/api/instances/acme", json={"connection": "ops", "flows": [looping]}
    ).is_success
    event = copy.deepcopy(EVENT)
    event["event"]["data"]["assignees"] = ["a", "b", "c"]
    answer = deliver(durable_api, subs, PATH, "loop", event=event)
    drain(durable_api)
    failed = durable_api.get(f"/api/executions/{answer.json()['execution']}").json()
    assert failed["status"] == "failed" and sent == ["a", "b"]
    retried = durable_api.post(f"/api/executions/{failed['id']}/retry")
    assert retried.status_code == 202, retried.text
    drain(durable_api)
    retry = durable_api.get(f"/api/executions/{retried.json()['execution']}").json()
    assert retry["status"] == "succeeded", retry
    assert sent == ["a", "b", "b", "c"]  # item a kept its recorded output
    outputs = retry["steps"][0]["result"]
    assert [o["note"]["data"]["note"]["id"] for o in outputs] == ["N-a", "N-b", "N-c"]


def test_a_run_planned_by_the_previous_release_retries_on_this_one(
    durable_api: TestClient,
    pd: respx.MockRouter,
    subs: FakeSubscriptions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs recorded before the plan step marked the start had a checkpoint of their own
    for it (``pdc.started``, the second): a retry of such a run on this release replays it
    there, instead of taking it for the first action's and failing the run."""
    from dbos import DBOS

    from pagerduty_connector.runtime import durable

    get = pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    note = pd.post(f"{REST}/incidents/Q1P5/notes").mock(
        side_effect=[
            httpx2.Response(403, json={"error": {"message": "Forbidden", "code": 2010}}),
            httpx2.Response(201, json={"note": {"id": "N1"}}),
        ]
    )
    planned = durable.load_plan.__wrapped__  # type: ignore[attr-defined]

    @DBOS.step(name=durable.PLAN_STEP)
    async def previous_plan(execution_id: str) -> dict[str, Any] | None:
        plan = await planned(execution_id)
        return {k: v for k, v in plan.items() if k != "started"} if plan else plan

    with monkeypatch.context() as previous_release:
        previous_release.setattr(durable, "load_plan", previous_plan)
        failed = run_once(durable_api, subs)
    assert failed["status"] == "failed" and "HTTP 403" in failed["error"]
    steps = DBOS.list_workflow_steps(failed["id"])
    assert [s["function_name"] for s in steps][:3] == ["pdc.plan", "pdc.started", "pdc.action"]

    retried = durable_api.post(f"/api/executions/{failed['id']}/retry")
    assert retried.status_code == 202, retried.text
    drain(durable_api)
    retry = durable_api.get(f"/api/executions/{retried.json()['execution']}").json()
    assert retry["status"] == "succeeded", retry
    assert (get.call_count, note.call_count) == (1, 2)
    assert retry["steps"][1]["result"]["data"] == {"note": {"id": "N1"}}


def test_a_run_records_its_start_in_its_plan_checkpoint(
    durable_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    from dbos import DBOS

    pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(201, json={"note": {"id": "N1"}})
    record = run_once(durable_api, subs)
    assert record["status"] == "succeeded"
    steps = DBOS.list_workflow_steps(record["id"])
    assert [s["function_name"] for s in steps] == ["pdc.plan", "pdc.action", "pdc.action"]
    assert steps[0]["output"]["started"] == record["startedAt"]


def test_a_run_taken_over_during_a_step_records_nothing_and_goes_no_further(
    held_api: tuple[TestClient, asyncio.Event, dict[str, int]], subs: FakeSubscriptions
) -> None:
    """Another execution owns the workflow now (a take-over, a resume elsewhere): the step
    that was running here is not recorded (batched checkpoints check the owner as DBOS's
    own do), and this run sends nothing more."""
    from dbos import DBOS

    api, release, sent = held_api
    execution = deliver(api, subs, PATH, "taken").json()["execution"]
    wait_until(lambda: sent["get"] == 1, 10, "the run to be in its GET")
    engine = api.app.state.engine  # type: ignore[attr-defined]
    table = "workflow_status" if engine.store.is_sqlite else "dbos.workflow_status"

    async def take_over() -> None:
        async with engine.store.session() as db:
            await db.execute(
                text(f"UPDATE {table} SET owner_xid = 'elsewhere' WHERE workflow_uuid = :id"),
                {"id": execution},
            )
            await db.commit()

    api.portal.call(take_over)  # type: ignore[union-attr]
    api.portal.call(release.set)  # type: ignore[union-attr]
    time.sleep(1.0)
    assert sent == {"get": 1, "note": 0}
    steps = [s["function_name"] for s in DBOS.list_workflow_steps(execution)]
    assert steps == ["pdc.plan"]  # the plan, recorded before; not the GET


def test_batched_checkpoints_are_dbos_steps_a_retry_replays(
    durable_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """Each step's checkpoint is in DBOS's table as DBOS's own step would be (name,
    number, output), and the record's attempts point at them: a retry from the failed
    note (DBOS's fork) replays the plan and the GET from their checkpoints."""
    from dbos import DBOS

    get = pd.get(f"{REST}/incidents/Q1P5").respond(json=INCIDENT)
    pd.post(f"{REST}/incidents/Q1P5/notes").mock(
        side_effect=[
            httpx2.Response(403, json={"error": {"message": "Forbidden", "code": 2010}}),
            httpx2.Response(201, json={"note": {"id": "N1"}}),
        ]
    )
    record = run_once(durable_api, subs)
    assert record["status"] == "failed", record
    steps = DBOS.list_workflow_steps(record["id"])
    assert [(s["function_id"], s["function_name"]) for s in steps] == [
        (1, "pdc.plan"),
        (2, "pdc.action"),
        (3, "pdc.action"),
    ]
    assert [r["attempts"][0]["checkpoint"] for r in record["steps"]] == [2, 3]
    assert steps[1]["output"]["result"]["data"] == INCIDENT and steps[2]["output"]["ok"] is False
    retried = durable_api.post(f"/api/executions/{record['id']}/retry")
    assert retried.status_code == 202, retried.text
    drain(durable_api)
    retry = durable_api.get(f"/api/executions/{retried.json()['execution']}").json()
    assert retry["status"] == "succeeded", retry
    assert get.call_count == 1  # the GET's recorded output, replayed


def test_a_run_plans_from_what_intake_kept_and_keeps_nothing_after(
    durable_api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """The plan of a run recorded here comes from what intake kept (the row is read only
    by a run recorded elsewhere): the same trigger output as the record's, and nothing
    is kept once the run started; past the limit, the oldest go first."""
    from dbos import DBOS

    from pagerduty_connector.runtime import durable as durable_module

    answer_incident(pd)
    record = run_once(durable_api, subs)
    assert record["status"] == "succeeded", record
    plan = DBOS.list_workflow_steps(record["id"])[0]["output"]
    assert plan["trigger"] == record["trigger"] and plan["flow"]["name"] == record["flow"]
    durable = durable_api.app.state.engine.durable  # type: ignore[attr-defined]
    assert durable.planned == {}
    with pytest.MonkeyPatch.context() as small:
        small.setattr(durable_module, "PLANNED_LIMIT", 2)
        for n in range(3):
            durable.remember(f"e{n}", "acme", "on-incident", {"n": n})
        assert list(durable.planned) == ["e1", "e2"]
    durable.planned.clear()
