"""Each instance's key/value store: what flows remember across runs and replicas.

``get``, ``set`` (with an optional expiry), ``increment`` (atomic) and ``delete``. A value
is any JSON value; an expired one reads as missing and is swept. Every change is
conditional on the version it read (``UPDATE ... WHERE version = :read``), and taken
again if another run changed the key meanwhile: two increments from two replicas at once
count twice, on SQLite and PostgreSQL alike, without locks held across awaits. In a run,
each operation is one checkpoint (``durable.state_operation``), so a resumed run does not
increment twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, or_, update
from sqlalchemy.exc import IntegrityError

from pagerduty_connector.component.errors import InputError
from pagerduty_connector.runtime.store import StateRow, Store, now, select

# How many times a change is tried again when another run changed the key meanwhile.
CONFLICTS = 50
OPERATIONS = ("get", "set", "increment", "delete")


def _live(row: StateRow | None, moment: datetime) -> StateRow | None:
    """``row`` unless it has expired."""
    if row is None or row.expires_at is None:
        return row
    expires = (
        row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=moment.tzinfo)
    )
    return row if expires > moment else None


async def get(store: Store, instance_id: str, key: str, default: Any = None) -> Any:
    """The value of ``key``, or ``default`` when it is missing or expired."""
    async with store.session() as db:
        row = _live(await db.get(StateRow, (instance_id, key)), now())
    return default if row is None else row.value


async def change(
    store: Store,
    instance_id: str,
    key: str,
    compute: Any,
    ttl: float | None,
) -> Any:
    """Set ``key`` to ``compute(current value or None)``, conditionally on the version
    read, trying again on a conflict; the value written."""
    for _ in range(CONFLICTS):
        moment = now()
        expires = moment + timedelta(seconds=ttl) if ttl else None
        async with store.session() as db:
            row = await db.get(StateRow, (instance_id, key))
            current = _live(row, moment)
            value = compute(None if current is None else current.value)
            if row is None:
                try:
                    await db.execute(
                        insert(StateRow).values(
                            instance_id=instance_id,
                            key=key,
                            value=value,
                            version=1,
                            expires_at=expires,
                            updated_at=moment,
                        )
                    )
                    await db.commit()
                    return value
                except IntegrityError:  # another run made it first: read it again
                    await db.rollback()
                    continue
            done = await db.execute(
                update(StateRow)
                .where(
                    StateRow.instance_id == instance_id,
                    StateRow.key == key,
                    StateRow.version == row.version,
                )
                .values(value=value, version=row.version + 1, expires_at=expires, updated_at=moment)
            )
            await db.commit()
            if done.rowcount == 1:  # type: ignore[attr-defined]
                return value
    raise InputError("state", key, f"changed by other runs {CONFLICTS} times in a row; try again")


async def remove(store: Store, instance_id: str, key: str) -> bool:
    """Delete ``key``; whether it was there (and not expired)."""
    async with store.session() as db:
        row = _live(await db.get(StateRow, (instance_id, key)), now())
        await db.execute(
            delete(StateRow).where(StateRow.instance_id == instance_id, StateRow.key == key)
        )
        await db.commit()
    return row is not None


async def operate(store: Store, instance_id: str, operation: dict[str, Any]) -> Any:
    """One operation, as a ``state`` step renders it: ``{"op", "key", "value", "by",
    "ttl", "default"}``; its result."""
    op, key, ttl = operation["op"], operation["key"], operation.get("ttl")
    if op == "get":
        return await get(store, instance_id, key, operation.get("default"))
    if op == "set":
        value = operation.get("value")
        return await change(store, instance_id, key, lambda _: value, ttl)
    if op == "increment":
        by = operation.get("by", 1)

        def add(current: Any) -> Any:
            if current is None:
                return by
            if not isinstance(current, int | float) or isinstance(current, bool):
                raise InputError("state", key, f"holds {type(current).__name__}, not a number")
            return current + by

        return await change(store, instance_id, key, add, ttl)
    if op == "delete":
        return {"deleted": await remove(store, instance_id, key)}
    raise InputError("state", "op", f"unknown operation {op!r} ({', '.join(OPERATIONS)})")


async def listed(store: Store, instance_id: str) -> dict[str, Any]:
    """Every live key of an instance and its value (the API's view)."""
    moment = now()
    query = (
        select(StateRow)
        .where(
            StateRow.instance_id == instance_id,
            or_(StateRow.expires_at.is_(None), StateRow.expires_at > moment),
        )
        .order_by(StateRow.key)
    )
    async with store.session() as db:
        rows = (await db.execute(query)).scalars().all()
    return {
        row.key: {
            "value": row.value,
            "expiresAt": row.expires_at.isoformat() if row.expires_at else None,
            "updatedAt": row.updated_at.isoformat(),
        }
        for row in rows
    }


async def sweep(store: Store) -> None:
    """Delete expired values (they already read as missing)."""
    async with store.session() as db:
        await db.execute(
            delete(StateRow).where(
                and_(StateRow.expires_at.is_not(None), StateRow.expires_at <= now())
            )
        )
        await db.commit()


async def forget(store: Store, instance_id: str) -> None:
    """Delete an instance's store (its teardown)."""
    async with store.session() as db:
        await db.execute(delete(StateRow).where(StateRow.instance_id == instance_id))
        await db.commit()
