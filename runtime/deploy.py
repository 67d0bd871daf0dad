"""Instance deploy and teardown: validation, then the triggers' hooks, one instance at a time.

No database transaction is open while PagerDuty is called: each deploy reads what it
needs, talks to PagerDuty, then stores the result in one short transaction (on SQLite a
write transaction held across slow PagerDuty calls stalled every other writer, intake
included). Two deploys of one instance never overlap (``DeployLocks``), so concurrent
redeploys cannot both create a subscription for one flow.

On deploy the triggers' deploy hooks run with the subscriptions the flows need, so
PagerDuty holds exactly one per flow; whatever an owned URL no longer needs (a
removed flow) goes. The signing secrets PagerDuty
returns are stored sealed in ``webhook_subscriptions``. If the instance cannot be
stored afterwards, what the hooks created is deleted again. On teardown each
trigger's teardown hook deletes everything delivering to the instance, across pages.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from pagerduty_connector.component.contracts import Trigger
from pagerduty_connector.component.errors import DeployError, InputError, did_you_mean
from pagerduty_connector.component.registry import TRIGGERS
from pagerduty_connector.runtime import schedules
from pagerduty_connector.runtime.flows import Flow, actions_of, validate_flow
from pagerduty_connector.runtime.outbound import CREDENTIAL_TYPES
from pagerduty_connector.runtime.steps import walk
from pagerduty_connector.runtime.store import (
    ConnectionRow,
    InstanceRow,
    Store,
    SubscriptionRow,
    select,
)
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
        if schedules.is_scheduled(flow):  # DBOS keeps its schedule; PagerDuty holds nothing
            continue
        trigger = TRIGGERS[flow["trigger"]["type"]]
        hook = getattr(trigger.deploy, "__func__", trigger.deploy)
        grouped.setdefault(hook, (trigger, []))[1].append(flow)
    return list(grouped.values())


def leftover(held: list[Any]) -> list[tuple[Trigger, list[dict[str, Any]]]]:
    """With no flow on a webhook trigger left, the webhook hook still runs (for no flows)
    while the instance holds subscriptions, so they are removed."""
    return [(next(iter(TRIGGERS.values())), [])] if held else []


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


def credentials_of(flow: Flow) -> list[tuple[str, str]]:
    """(step name, connection name) of every http step with a credential."""
    return [
        (step.name, step.http.credential)
        for step in walk(flow.steps)
        if step.KEY == "http" and step.http.credential
    ]


async def check_credentials(engine: Engine, flows: list[Flow]) -> None:
    """Every http step's credential is a stored connection of an http type (never a
    PagerDuty one: its key goes to PagerDuty only); ``InputError`` naming the step."""
    async with engine.store.session() as db:
        rows = (await db.execute(select(ConnectionRow.name, ConnectionRow.type))).all()
    types = dict(rows)
    for flow in flows:
        for step, name in credentials_of(flow):
            owner = f"{flow.name}.{step}"
            if name not in types:
                hint = did_you_mean(name, [n for n, t in types.items() if t in CREDENTIAL_TYPES])
                raise InputError(owner, "credential", f"no connection '{name}'{hint}")
            if types[name] not in CREDENTIAL_TYPES:
                raise InputError(
                    owner,
                    "credential",
                    f"'{name}' is a {types[name]} connection; an http step takes one of type "
                    f"{', '.join(CREDENTIAL_TYPES)} (PagerDuty keys go to PagerDuty only)",
                )


def scopes_needed(engine: Engine, flows: list[Flow]) -> dict[str, str]:
    """Where each OAuth scope is needed: every step's action and every flow's trigger."""
    needs: dict[str, str] = {}
    for flow in flows:
        trigger = engine.manifest.trigger(flow.trigger.type)
        if trigger is not None and trigger.scope:
            needs[f"flow '{flow.name}' trigger"] = trigger.scope
        for name, action in actions_of(flow):
            scope = getattr(engine.manifest.runnable(action), "scope", None)
            if scope:
                needs[f"flow '{flow.name}' step '{name}'"] = scope
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
    """A flow on a webhook trigger, or with a PagerDuty action, needs a connection (a
    scheduled flow of http steps alone does not)."""
    if instance.connection_id:
        return
    webhooks = [f["name"] for f in instance.flows if not schedules.is_scheduled(f)]
    if webhooks:
        names = ", ".join(f"'{n}'" for n in webhooks)
        raise InputError(
            instance.id,
            "connection",
            f"flows {names} subscribe to PagerDuty webhooks, which needs a connection",
        )
    acting = next((f["name"] for f in instance.flows if actions_of(Flow.model_validate(f))), None)
    if acting:
        raise InputError(
            instance.id, "connection", f"flow '{acting}' calls PagerDuty, which needs a connection"
        )


class DeployLocks:
    """One deploy or teardown per instance at a time: in this process with an asyncio lock
    per instance, and across processes sharing a PostgreSQL database with a session-level
    advisory lock (it blocks no writer; SQLite is served by one process)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, instance_id: str) -> AsyncIterator[None]:
        """Hold the instance's lock for the block."""
        lock = self._locks.setdefault(instance_id, asyncio.Lock())
        async with lock:
            if self.store.is_sqlite:
                yield
                return
            key = int.from_bytes(
                hashlib.sha256(instance_id.encode()).digest()[:8], "big", signed=True
            )
            async with self.store.engine.connect() as connection:
                await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                await connection.commit()
                try:
                    yield
                finally:
                    await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    await connection.commit()


async def _connection_of(engine: Engine, db: AsyncSession, instance: InstanceRow) -> ConnectionRow:
    connection = await db.get(ConnectionRow, instance.connection_id)
    if connection is None:
        raise InputError(instance.id, "connection", "the connection was deleted meanwhile")
    return connection


async def sync_triggers(
    engine: Engine, connection: ConnectionRow, instance: InstanceRow, held: list[Held]
) -> SyncResult:
    """Run each trigger's deploy hook for its flows (PagerDuty only, no database).

    If a later hook fails, what the earlier ones created is deleted before the error
    is raised.
    """
    owned = owned_by(engine, instance.id)
    urls = {
        engine.webhook_url(instance.id, f["name"])
        for f in instance.flows
        if not schedules.is_scheduled(f)
    }
    # Each hook removes only what no flow of the instance wants any more.
    unwanted = lambda url: owned(url) and url not in urls  # noqa: E731
    total = SyncResult()
    async with engine.client(engine.connection_config(connection)) as client:
        for trigger, flows in by_hook(instance.flows) or leftover(held):
            desired = [subscription_of(engine, instance.id, f) for f in flows]
            try:
                result = await trigger.deploy(client, desired, held, unwanted)
            except DeployError:
                await undo_created(client, total.created)
                raise
            total.held += result.held
            total.created += result.created
            total.log += result.log
    return total


async def deploy(engine: Engine, instance: InstanceRow) -> list[str]:
    """Deploy ``instance`` (a detached row with every field to store) and store it.

    Read, PagerDuty, write: each database step is its own short transaction. If the
    instance cannot be stored afterwards, the subscriptions the deploy created are
    deleted again. The caller holds the instance's ``DeployLocks`` lock.
    """
    require_connection(instance)
    if instance.connection_id is None:  # scheduled flows of http steps: nothing at PagerDuty
        async with engine.store.session() as db:
            if await held_subscriptions(engine, db, instance.id):
                raise InputError(
                    instance.id,
                    "connection",
                    "is needed to remove the webhook subscriptions its earlier flows hold",
                )
            await db.merge(instance)
            await db.execute(
                delete(SubscriptionRow).where(SubscriptionRow.instance_id == instance.id)
            )
            await db.commit()
        await engine.intake.announce(instance.id)
        return await schedules.sync(engine, instance.id)
    async with engine.store.session() as db:
        connection = await _connection_of(engine, db, instance)
        held = await held_subscriptions(engine, db, instance.id)
    result = await sync_triggers(engine, connection, instance, held)
    try:
        async with engine.store.session() as db:
            await db.merge(instance)
            await replace_held(engine, db, instance.id, result.held)
            await db.commit()
    except Exception:
        async with engine.client(engine.connection_config(connection)) as client:
            await undo_created(client, result.created)
        raise
    await engine.intake.announce(instance.id)
    # Stored first: a crash before this leaves the schedules to the sync at start.
    return result.log + await schedules.sync(engine, instance.id)


async def teardown(engine: Engine, instance: InstanceRow) -> list[str]:
    """Run each trigger's teardown hook (no transaction open), then forget the
    subscriptions; return the ids removed. The caller holds the instance's lock."""
    deleted: list[str] = []
    if instance.connection_id:
        async with engine.store.session() as db:
            connection = await _connection_of(engine, db, instance)
        owned = owned_by(engine, instance.id)
        async with engine.client(engine.connection_config(connection)) as client:
            async with engine.store.session() as db:
                held = await held_subscriptions(engine, db, instance.id)
            for trigger, _ in by_hook(instance.flows) or leftover(held):
                deleted += await trigger.teardown(client, owned)
    return deleted
