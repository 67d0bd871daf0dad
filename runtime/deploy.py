"""Instance deploy and teardown hooks: the triggers' webhook subscriptions.

On deploy every flow whose trigger is subscription-backed gets exactly one
PagerDuty subscription at its webhook URL, and subscriptions of flows the
instance no longer has are removed; the signing secrets PagerDuty returns are
stored sealed in ``webhook_subscriptions``. On teardown every subscription whose
URL belongs to the instance is deleted, across all pages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.registry import TRIGGERS
from pagerduty_connector.runtime.store import ConnectionRow, InstanceRow, SubscriptionRow, select
from pagerduty_connector.triggers.subscriptions import (
    Desired,
    Held,
    SyncResult,
    delete_subscriptions,
    sync_subscriptions,
    undo_created,
)

if TYPE_CHECKING:
    from pagerduty_connector.runtime.engine import Engine


def subscribed_flows(flows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The flows whose trigger is backed by a PagerDuty webhook subscription."""
    return [f for f in flows if hasattr(TRIGGERS.get(f["trigger"]["type"]), "desired")]


def owned_by(engine: Engine, instance_id: str) -> Callable[[str], bool]:
    """Whether a delivery URL belongs to ``instance_id`` (any of its flows, past or present)."""
    prefix = engine.webhook_url(instance_id, "")
    return lambda url: url.startswith(prefix)


def desired_subscriptions(engine: Engine, instance: InstanceRow) -> list[Desired]:
    """The subscription each subscribed flow of ``instance`` needs."""
    return [
        TRIGGERS[f["trigger"]["type"]].desired(
            f["name"], engine.webhook_url(instance.id, f["name"]), f["trigger"]["inputs"]
        )
        for f in subscribed_flows(instance.flows)
    ]


async def held_subscriptions(engine: Engine, db: AsyncSession, instance_id: str) -> list[Held]:
    """The subscriptions (and their secrets) stored for an instance."""
    query = select(SubscriptionRow).where(SubscriptionRow.instance_id == instance_id)
    rows = (await db.execute(query)).scalars()
    return [
        Held(r.flow, r.subscription_id, r.url, engine.box.open(r.secret).get("secret", ""))
        for r in rows
    ]


async def replace_held(
    engine: Engine, db: AsyncSession, instance_id: str, held: list[Held]
) -> None:
    """Store ``held`` as the instance's subscriptions (in the caller's transaction)."""
    await db.execute(delete(SubscriptionRow).where(SubscriptionRow.instance_id == instance_id))
    for h in held:
        db.add(
            SubscriptionRow(
                instance_id=instance_id,
                flow=h.flow,
                subscription_id=h.subscription_id,
                url=h.url,
                secret=engine.box.seal({"secret": h.secret}),
            )
        )


def require_connection(instance: InstanceRow) -> None:
    """A subscribed flow needs the instance's PagerDuty connection; say so at deploy."""
    flows = subscribed_flows(instance.flows)
    if flows and not instance.connection_id:
        names = ", ".join(f"'{f['name']}'" for f in flows)
        raise InputError(
            instance.id,
            "connection",
            f"flows {names} subscribe to PagerDuty webhooks, which needs a connection",
        )


async def deploy_triggers(engine: Engine, db: AsyncSession, instance: InstanceRow) -> SyncResult:
    """Bring PagerDuty's subscriptions in line with the instance; store their secrets.

    Runs inside the caller's transaction; if the caller cannot commit, it calls
    ``undo_deploy`` with the result so nothing created is left behind.
    """
    if not instance.connection_id:
        return SyncResult()
    connection = await db.get(ConnectionRow, instance.connection_id)
    assert connection is not None
    held = await held_subscriptions(engine, db, instance.id)
    async with engine.client(engine.connection_config(connection)) as client:
        result = await sync_subscriptions(
            client, desired_subscriptions(engine, instance), held, owned_by(engine, instance.id)
        )
    await replace_held(engine, db, instance.id, result.held)
    return result


async def undo_deploy(engine: Engine, connection: ConnectionRow, result: SyncResult) -> None:
    """Delete what a deploy created when its instance could not be stored."""
    async with engine.client(engine.connection_config(connection)) as client:
        await undo_created(client, result.created)


async def teardown_triggers(engine: Engine, db: AsyncSession, instance: InstanceRow) -> list[str]:
    """Delete every subscription delivering to the instance; return the ids removed."""
    if not instance.connection_id:
        return []
    connection = await db.get(ConnectionRow, instance.connection_id)
    assert connection is not None
    async with engine.client(engine.connection_config(connection)) as client:
        deleted = await delete_subscriptions(client, owned_by(engine, instance.id))
    await replace_held(engine, db, instance.id, [])
    return deleted
