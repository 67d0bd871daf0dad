"""Intake's cache: every process sharing a PostgreSQL database hears a change at once."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.fernet import Fernet

from pagerduty_connector.runtime.crypto import SecretBox
from pagerduty_connector.runtime.intake import IntakeCache
from pagerduty_connector.runtime.store import InstanceRow, Store


async def test_a_change_announced_by_one_process_is_dropped_by_the_others(store: Store) -> None:
    if store.is_sqlite:
        pytest.skip("SQLite is served by one process; the announcement is local")
    box = SecretBox(Fernet.generate_key().decode())
    async with store.session() as db:
        db.add(InstanceRow(id="acme", flows=[], enabled=True))
        await db.commit()
    here, there = IntakeCache(store, box, ttl=3600), IntakeCache(store, box, ttl=3600)
    await there.start()
    try:
        assert (await there.get("acme")).enabled is True  # type: ignore[union-attr]
        async with store.session() as db:
            row = await db.get(InstanceRow, "acme")
            row.enabled = False  # type: ignore[union-attr]
            await db.commit()
        assert (await there.get("acme")).enabled is True  # type: ignore[union-attr]  # cached
        await here.announce("acme")
        for _ in range(200):
            if "acme" not in there._entries:
                break
            await asyncio.sleep(0.01)
        assert (await there.get("acme")).enabled is False  # type: ignore[union-attr]
        await there.get("other")
        await here.announce()  # everything, e.g. after a connection changed
        for _ in range(200):
            if not there._entries:
                break
            await asyncio.sleep(0.01)
        assert there._entries == {}
    finally:
        await there.stop()
