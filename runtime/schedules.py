"""The schedule trigger: a flow that runs on a cron schedule, in a time zone, instead of
on a PagerDuty webhook (``trigger: {type: schedule, inputs: {cron: "0 9 * * 1-5",
timezone: Europe/Paris}}``).

Each flow's schedule is a DBOS schedule (``DBOS.create_schedule``) named
``pdc:<instance>:<flow>``, kept in the database every replica shares. Every replica's
DBOS scheduler wakes at each tick and enqueues the tick's workflow under one id per
tick, so the tick runs once however many replicas there are; a replica that dies with
a tick in hand has it recovered like any workflow. The tick records an execution (its
trigger output is ``scheduledAt`` and the schedule) keyed by the tick's time, so even a
tick run twice starts one run. No webhook subscription is created for such a flow.

``sync`` makes the schedules match the instances (after a deploy, redeploy, enable,
disable or teardown, and at start, which also mends what a crash between storing an
instance and scheduling it left behind).
"""

from __future__ import annotations

import json
import zoneinfo
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from croniter import croniter
from dbos import DBOS

from pagerduty_connector.component.errors import InputError, did_you_mean
from pagerduty_connector.component.redact import get_logger

if TYPE_CHECKING:
    from pagerduty_connector.runtime.engine import Engine

log = get_logger("schedules")

SCHEDULE = "schedule"
PREFIX = "pdc:"
TICK_WORKFLOW = "pdc.tick"


# The schedule trigger's inputs, as a JSON Schema (the component document's).
SCHEDULE_INPUTS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["cron"],
    "properties": {
        "cron": {
            "type": "string",
            "title": "Cron",
            "description": "minute hour day month weekday (six fields: seconds first)",
            "examples": ["0 9 * * 1-5"],
        },
        "timezone": {
            "type": "string",
            "title": "Time zone",
            "description": "An IANA time zone; UTC if not given.",
            "default": "UTC",
            "examples": ["Europe/Paris"],
        },
    },
}


def is_scheduled(flow: dict[str, Any]) -> bool:
    """Whether the flow (as stored) runs on a schedule rather than on a webhook."""
    return bool(flow["trigger"]["type"] == SCHEDULE)


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check(owner: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The schedule trigger's inputs, cleaned: ``cron`` (five fields, or six with
    seconds first) and ``timezone`` (an IANA name, default UTC); ``InputError`` naming
    what is wrong (and the nearest time zone)."""
    unknown = sorted(set(inputs) - {"cron", "timezone"})
    if unknown:
        hint = did_you_mean(unknown[0], ["cron", "timezone"])
        raise InputError(owner, unknown[0], f"unknown input{hint} (known: cron, timezone)")
    cron = inputs.get("cron")
    if not isinstance(cron, str) or not cron.strip():
        raise InputError(owner, "cron", 'is required: a cron expression such as "0 9 * * 1-5"')
    cron = " ".join(cron.split())
    if len(cron.split()) not in (5, 6) or not croniter.is_valid(cron, second_at_beginning=True):
        raise InputError(
            owner,
            "cron",
            f"{cron!r} is not a cron expression (minute hour day month weekday, "
            'e.g. "0 9 * * 1-5"; six fields put seconds first)',
        )
    zone = inputs.get("timezone") or "UTC"
    if not isinstance(zone, str) or zone not in _zones():
        hint = did_you_mean(str(zone), sorted(_zones()))
        raise InputError(owner, "timezone", f"{zone!r} is not an IANA time zone{hint}")
    return {"cron": cron, "timezone": zone}


def next_runs(inputs: dict[str, Any], count: int = 3, after: datetime | None = None) -> list[str]:
    """The next ``count`` times the schedule fires (ISO 8601, in its time zone)."""
    zone = zoneinfo.ZoneInfo(inputs.get("timezone") or "UTC")
    start = (after or datetime.now(UTC)).astimezone(zone)
    it = croniter(inputs["cron"], start, second_at_beginning=True)
    return [it.get_next(datetime).isoformat() for _ in range(count)]


def name_of(instance_id: str, flow: str) -> str:
    """The DBOS schedule of an instance's flow."""
    return f"{PREFIX}{instance_id}:{flow}"


def wanted(instances: list[Any]) -> dict[str, dict[str, Any]]:
    """The schedules the instances need, by name: their enabled instances' scheduled
    flows (a disabled instance keeps none, so it records no skipped tick each time)."""
    return {
        name_of(row.id, flow["name"]): {
            "instance": row.id,
            "flow": flow["name"],
            **flow["trigger"]["inputs"],
        }
        for row in instances
        if row.enabled
        for flow in row.flows
        if is_scheduled(flow)
    }


async def sync(engine: Engine, instance_id: str | None = None) -> list[str]:
    """Create, replace and delete DBOS schedules so they match the stored instances
    (one instance, or all of them); return what changed, for the deploy log."""
    from pagerduty_connector.runtime.store import InstanceRow, select

    async with engine.store.session() as db:
        query = select(InstanceRow)
        if instance_id is not None:
            query = query.where(InstanceRow.id == instance_id)
        rows = (await db.execute(query)).scalars().all()
    want = wanted(list(rows))
    prefix = PREFIX if instance_id is None else name_of(instance_id, "")
    have = {
        s["schedule_name"]: s
        for s in await DBOS.list_schedules_async(schedule_name_prefix=prefix)
        if s["workflow_name"] == TICK_WORKFLOW
    }
    changes: list[str] = []

    def same(name: str) -> bool:
        # A schedule's instance and flow are in its name; what else it holds, in fields.
        return bool(
            have[name]["schedule"] == want[name]["cron"]
            and have[name]["cron_timezone"] == want[name]["timezone"]
        )

    for name in have:
        if name not in want or not same(name):
            await DBOS.delete_schedule_async(name)
            if name not in want:
                changes.append(f"schedule {name} removed")
    for name, context in want.items():
        if name in have and same(name):
            continue
        await DBOS.create_schedule_async(
            schedule_name=name,
            workflow_fn=tick,
            schedule=context["cron"],
            context=context,
            cron_timezone=context["timezone"],
        )
        changes.append(
            f"schedule {name}: {context['cron']} ({context['timezone']}), "
            f"next {next_runs(context, 1)[0]}"
        )
    return changes


def tick_output(inputs: dict[str, Any], scheduled_at: datetime) -> dict[str, Any]:
    """What a tick gives its run as ``trigger``: ``scheduledAt`` (ISO 8601, in the
    schedule's time zone) and the ``schedule`` (cron, timezone)."""
    zone = inputs.get("timezone") or "UTC"
    return {
        "scheduledAt": scheduled_at.astimezone(zoneinfo.ZoneInfo(zone)).isoformat(),
        "schedule": {"cron": inputs["cron"], "timezone": zone},
    }


@DBOS.workflow(name=TICK_WORKFLOW)
async def tick(scheduled_at: datetime, context: dict[str, Any]) -> str:
    """One tick of a flow's schedule: record its execution (queued like a delivery's).
    The tick's time is the execution's event id, so a tick run again starts nothing."""
    from pagerduty_connector.runtime.durable import current
    from pagerduty_connector.runtime.routes.webhooks import record

    engine = current()
    instance, flow_name = context["instance"], context["flow"]
    target = await engine.intake.refresh(instance)
    flow = target.flows.get(flow_name) if target else None
    if target is None or flow is None or not is_scheduled(flow):
        log.info("schedule %s fired for a flow that is gone", name_of(instance, flow_name))
        return "gone"
    if not target.enabled:
        # Disabled (its schedule is deleted; every replica's scheduler notices within
        # its poll): a tick meanwhile records nothing, not a skipped run per tick.
        return "disabled"
    output = tick_output(context, scheduled_at)
    when = output["scheduledAt"]
    body = json.dumps(output).encode()
    headers = {"x-pdc-schedule": name_of(instance, flow_name)}
    status, _ = await record(engine, target, flow, body, headers, output, event_id=f"tick:{when}")
    return "recorded" if status == 202 else "duplicate"
