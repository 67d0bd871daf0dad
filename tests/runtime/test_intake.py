"""Intake's cache: every process sharing a PostgreSQL database hears a change at once."""

from __future__ import annotations

import asyncio
import gc
import time

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


async def test_deliveries_arriving_while_an_entry_is_read_share_one_read(store: Store) -> None:
    box = SecretBox(Fernet.generate_key().decode())
    async with store.session() as db:
        db.add(InstanceRow(id="acme", flows=[], enabled=True))
        await db.commit()
    cache = IntakeCache(store, box, ttl=3600)
    reads = 0
    load = cache._load

    async def counted(instance_id: str) -> object:
        nonlocal reads
        reads += 1
        return await load(instance_id)

    cache._load = counted  # type: ignore[method-assign]
    targets = await asyncio.gather(*(cache.get("acme") for _ in range(32)))
    assert reads == 1
    assert all(t is targets[0] and t is not None and t.enabled for t in targets)

    # A change dropped while a read was under way: that read is not kept.
    gate = asyncio.Event()

    async def slow(instance_id: str) -> object:
        await gate.wait()
        return await load(instance_id)

    cache.forget("acme")
    cache._load = slow  # type: ignore[method-assign]
    pending = asyncio.ensure_future(cache.get("acme"))
    await asyncio.sleep(0.01)  # the read is under way, held at the gate
    cache.forget("acme")
    # A read started after the drop holds the slot; the old read ending leaves it there.
    later_gate = asyncio.Event()

    async def later(instance_id: str) -> object:
        await later_gate.wait()
        return await load(instance_id)

    cache._load = later  # type: ignore[method-assign]
    newer = asyncio.ensure_future(cache.get("acme"))
    await asyncio.sleep(0.01)
    holder = cache._loading["acme"]
    gate.set()
    await pending
    assert "acme" not in cache._entries
    assert cache._loading.get("acme") is holder
    later_gate.set()
    assert (await newer) is not None and "acme" in cache._entries


async def test_an_expired_entry_is_used_while_it_is_read_again(store: Store) -> None:
    """Under load the read of an expired entry waits on a busy database; deliveries go on
    with what was read meanwhile, and wait for the read only once the entry is twice as
    old as its lifetime (or a failed read left nothing newer)."""
    box = SecretBox(Fernet.generate_key().decode())
    async with store.session() as db:
        db.add(InstanceRow(id="acme", flows=[], enabled=True))
        await db.commit()
    ttl = 10.0
    cache = IntakeCache(store, box, ttl=ttl)

    def aged(seconds: float) -> None:
        # The entry read that long ago (set, not slept for: a loaded machine's sleep
        # could overshoot into the next band).
        target = cache._entries["acme"][1]
        cache._entries["acme"] = (time.monotonic() - seconds, target)

    first = await cache.get("acme")
    assert first is not None and first.enabled
    async with store.session() as db:
        row = await db.get(InstanceRow, "acme")
        row.enabled = False  # type: ignore[union-attr]
        await db.commit()
    load, gate, reads = cache._load, asyncio.Event(), 0

    async def held(instance_id: str) -> object:
        nonlocal reads
        reads += 1
        await gate.wait()
        return await load(instance_id)

    cache._load = held  # type: ignore[method-assign]
    aged(ttl * 0.9)
    assert await cache.get("acme") is first and reads == 0  # fresh: no read
    aged(ttl * 1.5)  # expired, not twice over
    served = await asyncio.wait_for(asyncio.gather(*(cache.get("acme") for _ in range(8))), 1)
    assert all(target is first for target in served)  # nobody waited for the read
    assert reads == 1 and "acme" in cache._loading  # one read, under way
    gate.set()
    await cache._loading["acme"]
    assert (await cache.get("acme")).enabled is False  # type: ignore[union-attr]

    # A read that fails while the entry is served: nothing is left unretrieved, and past
    # twice the lifetime the delivery waits for a read of its own and learns its error.
    unretrieved: list[object] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, ctx: unretrieved.append(ctx))

    async def broken(instance_id: str) -> object:
        raise RuntimeError("database unavailable")

    cache._load = broken  # type: ignore[method-assign]
    try:
        aged(ttl * 1.5)
        assert (await cache.get("acme")).enabled is False  # type: ignore[union-attr]
        await asyncio.sleep(0.01)  # the read fails meanwhile
        aged(ttl * 2.5)
        with pytest.raises(RuntimeError, match="database unavailable"):
            await cache.get("acme")
        gc.collect()
        await asyncio.sleep(0)
        assert unretrieved == []
    finally:
        loop.set_exception_handler(None)
