"""Instance deploy and teardown: validation, then the triggers' hooks, in one transaction.

On deploy the triggers' deploy hooks run with the subscriptions the flows need, so
PagerDuty holds exactly one per flow; whatever an owned URL no longer needs (a
removed flow) goes. The signing secrets PagerDuty
returns are stored sealed in ``webhook_subscriptions``. If the instance cannot be
stored afterwards, what the hooks created is deleted again. On teardown each
trigger's teardown hook deletes everything delivering to the instance, across pages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from pagerduty_connector.component.contracts import Trigger
from pagerduty_connector.component.errors import DeployError, InputError
from pagerduty_connector.component.registry import TRIGGERS
from pagerduty_connector.runtime.flows import Flow, validate_flow
from pagerduty_connector.runtime.store import ConnectionRow, InstanceRow, SubscriptionRow, select
from pagerduty_connector.triggers.subscriptions import Desired, Held, SyncResult, undo_created

if TYPE_CHECKING:
    from pagerduty_connector.runtime.engine import Engine


def owned_by(engine: Engine, instance_id: str) -> Callable[[str], bool]:
    """Whether a delivery URL belongs to ``instance_id`` (any of its flows, past or present)."""
    prefix = engine.webhook_url(instance_id, "")
    return lambda url: url.startswith(prefix)


def by_hook(flows: list[dict[str, Any]]) -> list[tuple[Trigger, list[dict[str, Any]]]]:
    """The flows grouped by their trigger's deploy hook, in first-use order.

    Triggers sharing one hook (both webhook triggers do) deploy together: one listing
    of PagerDuty's subscriptions serves all their flows and one rollback covers them.
    """
    grouped: dict[Any, tuple[Trigger, list[dict[str, Any]]]] = {}
    for flow in flows:
        trigger = TRIGGERS[flow["trigger"]["type"]]
        hook = getattr(trigger.deploy, "__func__", trigger.deploy)
        grouped.setdefault(hook, (trigger, []))[1].append(flow)
    return list(grouped.values())


def subscription_of(engine: Engine, instance_id: str, flow: dict[str, Any]) -> Desired:
    """What the flow's own trigger needs PagerDuty to hold for it."""
    url = engine.webhook_url(instance_id, flow["name"])
    return TRIGGERS[flow["trigger"]["type"]].subscription(
        flow["name"], url, flow["trigger"]["inputs"]
    )


def validate_flows(engine: Engine, instance: str, flows: list[Flow]) -> list[str]:
    """Check every flow, step and input (``InputError`` naming them); return warnings."""
    names = [f.name for f in flows]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InputError(instance, "flows", f"flow name '{duplicate}' is used twice")
    return [w for flow in flows for w in validate_flow(flow, engine.manifest)]


def scopes_needed(engine: Engine, flows: list[Flow]) -> dict[str, str]:
    """Where each OAuth scope is needed: every step's action and every flow's trigger."""
    needs: dict[str, str] = {}
    for flow in flows:
        trigger = next(t for t in engine.manifest.triggers if t.key == flow.trigger.type)
        if trigger.scope:
            needs[f"flow '{flow.name}' trigger"] = trigger.scope
        for step in flow.steps:
            scope = getattr(engine.manifest.runnable(step.action), "scope", None)
            if scope:
                needs[f"flow '{flow.name}' step '{step.name}'"] = scope
    return needs


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
    """Every trigger deploys through PagerDuty, so the instance needs a connection."""
    if instance.flows and not instance.connection_id:
        names = ", ".join(f"'{f['name']}'" for f in instance.flows)
        raise InputError(
            instance.id,
            "connection",
            f"flows {names} subscribe to PagerDuty webhooks, which needs a connection",
        )


async def deploy_triggers(engine: Engine, db: AsyncSession, instance: InstanceRow) -> SyncResult:
    """Run each trigger's deploy hook for its flows; store the subscriptions they hold.

    Runs inside the caller's transaction. If a later hook fails, what the earlier
    ones created is deleted before the error is raised.
    """
    require_connection(instance)
    connection = await db.get(ConnectionRow, instance.connection_id)
    assert connection is not None
    held = await held_subscriptions(engine, db, instance.id)
    owned = owned_by(engine, instance.id)
    urls = {engine.webhook_url(instance.id, f["name"]) for f in instance.flows}
    # Each hook removes only what no flow of the instance wants any more.
    unwanted = lambda url: owned(url) and url not in urls  # noqa: E731
    total = SyncResult()
    async with engine.client(engine.connection_config(connection)) as client:
        for trigger, flows in by_hook(instance.flows):
            desired = [subscription_of(engine, instance.id, f) for f in flows]
            try:
                result = await trigger.deploy(client, desired, held, unwanted)
            except DeployError:
                await undo_created(client, total.created)
                raise
            total.held += result.held
            total.created += result.created
            total.log += result.log
    await replace_held(engine, db, instance.id, total.held)
    return total


async def commit_deploy(engine: Engine, db: AsyncSession, row: InstanceRow) -> list[str]:
    """Deploy the triggers and commit; undo what they created if the commit fails."""
    result = await deploy_triggers(engine, db, row)
    try:
        await db.commit()
        engine.intake.forget(row.id)
    except Exception:
        await db.rollback()
        connection = await db.get(ConnectionRow, row.connection_id) if row.connection_id else None
        if connection is not None:
            async with engine.client(engine.connection_config(connection)) as client:
                await undo_created(client, result.created)
        raise
    return result.log


async def teardown_triggers(engine: Engine, db: AsyncSession, instance: InstanceRow) -> list[str]:
    """Run each trigger's teardown hook; return the subscription ids removed."""
    if not instance.connection_id:
        return []
    connection = await db.get(ConnectionRow, instance.connection_id)
    assert connection is not None
    deleted: list[str] = []
    owned = owned_by(engine, instance.id)
    async with engine.client(engine.connection_config(connection)) as client:
        for trigger, _ in by_hook(instance.flows):
            deleted += await trigger.teardown(client, owned)
    await replace_held(engine, db, instance.id, [])
    return deleted
