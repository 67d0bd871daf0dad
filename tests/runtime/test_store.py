"""Settings, encryption at rest and the store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from pagerduty_connector.component.errors import ConfigurationError
from pagerduty_connector.runtime.crypto import SecretBox
from pagerduty_connector.runtime.settings import load_settings
from pagerduty_connector.runtime.store import (
    Base,
    ConnectionRow,
    ExecutionRow,
    Store,
    alembic_config,
    new_id,
    now,
    select,
)
from pagerduty_connector.runtime.store.writer import ExecutionWriter


def test_development_secrets_are_generated_private(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    token_file, key_file = tmp_path / "admin-token", tmp_path / "secret-key"
    assert token_file.read_text() == settings.admin_token
    assert key_file.read_text() == settings.secret_key
    for path in (token_file, key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_settings(data_dir=tmp_path)
    assert (again.admin_token, again.secret_key) == (settings.admin_token, settings.secret_key)
    assert settings.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path.resolve()}/pdc.db"


def test_production_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PDC_ENV=production needs PDC_ADMIN_TOKEN"):
        load_settings(env="production", data_dir=tmp_path)
    assert not (tmp_path / "admin-token").exists()


def test_bad_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PDC_SECRET_KEY is not a Fernet key"):
        load_settings(data_dir=tmp_path, admin_token="t", secret_key="short")
    with pytest.raises(ConfigurationError, match="PDC_FLOW_CONCURRENCY"):
        load_settings(data_dir=tmp_path, flow_concurrency=0)


def test_secret_box_round_trip_and_wrong_key() -> None:
    box = SecretBox(load_settings(admin_token="t", secret_key=_key()).secret_key or "")
    sealed = box.seal({"apiKey": "u+plaintext-key"})
    assert "plaintext" not in sealed
    assert box.open(sealed) == {"apiKey": "u+plaintext-key"}
    with pytest.raises(ConfigurationError, match="cannot be decrypted"):
        SecretBox(_key()).open(sealed)


def _key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


async def test_migrations_are_idempotent_and_secrets_are_sealed_at_rest(store: Store) -> None:
    await store.migrate()  # a second upgrade changes nothing
    box = SecretBox(_key())
    async with store.session() as db:
        db.add(
            ConnectionRow(
                name="ops", type="pagerduty-api-key", secrets=box.seal({"apiKey": "u+SEKRIT"})
            )
        )
        await db.commit()
    async with store.engine.connect() as raw:
        rows = (await raw.execute(text("SELECT name, secrets FROM connections"))).all()
        revision = (await raw.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    assert rows[0][0] == "ops" and "SEKRIT" not in rows[0][1]
    assert revision == ScriptDirectory.from_config(alembic_config()).get_current_head() == "0010"


async def test_the_migrated_tables_have_the_models_indexes(store: Store) -> None:
    async with store.engine.connect() as raw:
        indexes = await raw.run_sync(
            lambda sync: {t: inspect(sync).get_indexes(t) for t in Base.metadata.tables}
        )
    for name, table in Base.metadata.tables.items():
        # Unique constraints are compared by their own test (one execution per webhook);
        # unique indexes (one execution per event) are indexes like the others.
        declared = {(i.name, tuple(c.name for c in i.columns), i.unique) for i in table.indexes}
        migrated = {
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in indexes[name]
            # The index behind a unique constraint is its constraint's, on PostgreSQL.
            if not i.get("duplicates_constraint")
        }
        assert migrated == declared, name
    # Lookups by instance use the unique index that leads with it, not one of their own.
    assert "ix_executions_instance_id" not in {i["name"] for i in indexes["executions"]}


async def test_one_execution_per_webhook_id(store: Store) -> None:
    async with store.session() as db:
        db.add(ExecutionRow(instance_id="i1", flow="f", webhook_id="w-1", status="received"))
        await db.commit()
    with pytest.raises(IntegrityError):
        async with store.session() as db:
            db.add(ExecutionRow(instance_id="i1", flow="f", webhook_id="w-1", status="received"))
            await db.commit()
    async with store.session() as db:
        db.add(ExecutionRow(instance_id="i2", flow="f", webhook_id="w-1", status="received"))
        await db.commit()
        count = len((await db.execute(select(ExecutionRow))).scalars().all())
    assert count == 2


def _row(webhook_id: str | None) -> dict[str, Any]:
    """An execution row as intake writes it."""
    received = now()
    return {
        "id": new_id(),
        "instance_id": "acme",
        "flow": "on-incident",
        "webhook_id": webhook_id,
        "status": "received",
        "reason": None,
        "received_body": "{}",
        "headers": {"x-webhook-id": webhook_id},
        "response_status": 202,
        "trigger": {"event": {"event_type": "incident.triggered"}},
        "steps": [],
        "error": None,
        "received_at": received,
        "started_at": None,
        "finished_at": None,
    }


async def test_execution_writer_batches_deduplicate_and_update(store: Store) -> None:
    writer = ExecutionWriter(store, Fernet.generate_key().decode())

    first, again, other, untagged = _row("wh-1"), _row("wh-1"), _row("wh-2"), _row(None)
    # Queued together, so they are written in one batch: the repeat inside it is refused.
    results = await asyncio.gather(*(writer.record(r) for r in (first, again, other, untagged)))
    assert results == [True, False, True, True]
    assert await writer.record(_row("wh-2")) is False  # a later batch sees the stored one
    await writer.update(first["id"], {"status": "succeeded", "steps": [{"name": "a"}]})
    # Updates queued together go in one batch and in order (consecutive ones of the same
    # columns as one statement): the last change of a row wins.
    started = now()
    await asyncio.gather(
        writer.update(untagged["id"], {"status": "running", "started_at": started}),
        writer.update(untagged["id"], {"status": "succeeded", "finished_at": started}),
        writer.update(other["id"], {"status": "succeeded", "finished_at": started}),
        writer.update(other["id"], {"status": "running", "started_at": started}),
    )
    await writer.close()
    async with store.session() as db:
        rows = (await db.execute(select(ExecutionRow))).scalars().all()
        stored = {r.id: r for r in rows}
    assert set(stored) == {first["id"], other["id"], untagged["id"]}
    assert stored[first["id"]].status == "succeeded"
    assert stored[first["id"]].steps == [{"name": "a"}]
    assert stored[first["id"]].trigger == {"event": {"event_type": "incident.triggered"}}
    assert stored[other["id"]].received_at is not None
    assert (stored[other["id"]].status, stored[untagged["id"]].status) == ("running", "succeeded")
    assert stored[other["id"]].finished_at is not None


async def test_a_dead_writer_process_is_replaced(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'pdc.db'}")
    await store.migrate()
    writer = ExecutionWriter(store, Fernet.generate_key().decode())
    assert await writer.record(_row("wh-1")) is True
    first = writer._child
    assert first is not None and first.transport is not None
    first_pid = first.transport.get_pid()
    first.kill()
    await first.exited
    assert await writer.record(_row("wh-2")) is True  # a new writer process took over
    assert writer._child is not None and writer._child.transport is not None
    assert writer._child.transport.get_pid() != first_pid
    assert await writer.record(_row("wh-1")) is False  # and sees what the first stored
    await writer.close()
    await store.close()


async def test_a_batch_the_writer_cannot_send_fails_only_its_callers(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'pdc.db'}")
    await store.migrate()
    writer = ExecutionWriter(store, Fernet.generate_key().decode())
    await writer.start()
    unsendable = {**_row("wh-1"), "headers": {"x": lambda: None}}  # pickle refuses it
    with pytest.raises(Exception, match="pickle"):
        await asyncio.wait_for(writer.record(unsendable), 10)
    # The next batches are answered as their own: none takes the failed batch's answer.
    again = asyncio.gather(writer.record(_row("wh-2")), writer.record(_row("wh-2")))
    assert await asyncio.wait_for(again, 10) == [True, False]
    stored = await asyncio.wait_for(writer.record(_row("wh-1")), 10)
    assert stored is True  # the failed one was never stored
    await writer.close()
    await store.close()


def test_the_writer_waits_for_a_locked_sqlite_database_in_short_steps() -> None:
    from sqlalchemy.exc import OperationalError

    from pagerduty_connector.runtime.store.writer_process import _patiently

    tries: list[float] = []

    def locked_twice() -> str:
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return "committed"

    assert _patiently(locked_twice) == "committed"
    assert len(tries) == 3 and tries[-1] - tries[0] < 0.05  # not SQLite's 1-100 ms sleeps

    def broken() -> None:
        tries.append(time.monotonic())
        raise OperationalError("INSERT", {}, Exception("no such table: executions"))

    tries.clear()
    with pytest.raises(OperationalError, match="no such table"):
        _patiently(broken)
    assert len(tries) == 1  # other errors are not retried

    def always_locked() -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    started = time.monotonic()
    with pytest.raises(OperationalError, match="locked"):  # until the limit, then it fails
        _patiently(always_locked, limit=0.05)
    assert 0.05 <= time.monotonic() - started < 1


def test_the_writer_runs_under_uvloop(tmp_path: Path) -> None:
    """An app embedded in a server on uvloop: its pipe transports are not asyncio's."""
    import uvloop  # a dev dependency: missing, the test fails rather than skips

    async def record_twice() -> list[bool]:
        store = Store(f"sqlite+aiosqlite:///{tmp_path / 'pdc.db'}")
        await store.migrate()
        writer = ExecutionWriter(store, Fernet.generate_key().decode())
        try:
            return [
                await asyncio.wait_for(writer.record(_row("wh-1")), 30),
                await asyncio.wait_for(writer.record(_row("wh-1")), 30),
            ]
        finally:
            await writer.close()
            await store.close()

    assert uvloop.run(record_twice()) == [True, False]
