"""Flows: a trigger plus ordered steps; their validation at deploy and their run.

What a step can be is in ``runtime/steps/`` (one module per kind: action, if, switch,
forEach, wait, http, set, state), templates in ``runtime/templates.py``. A run renders
each step's fields over ``trigger`` (the trigger's output), ``steps`` (earlier steps'
outputs), ``vars`` (values ``set`` steps gave) and ``now()`` (the run's clock).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, model_validator

from pagerduty_connector.component.errors import InputError, did_you_mean
from pagerduty_connector.component.inputs import clean_inputs
from pagerduty_connector.component.manifest import Manifest
from pagerduty_connector.component.registry import TRIGGERS
from pagerduty_connector.runtime import schedules
from pagerduty_connector.runtime import steps as kinds
from pagerduty_connector.runtime.steps import (
    Checker,
    LocalLanes,
    Record,
    Runner,
    StepModel,
    shape_union,
    two_levels,
    walk,
)
from pagerduty_connector.runtime.templates import (
    TemplateFailed,
    check,
    render,
    render_input,
    step_references,
    try_render,
)
from pagerduty_connector.triggers.webhook import EVENT_FIELDS

__all__ = [
    "AnyStep",
    "Flow",
    "FlowTrigger",
    "TemplateFailed",
    "actions_of",
    "changed_before",
    "concurrency_key",
    "render",
    "render_input",
    "run_flow",
    "validate_flow",
    "waits",
]

# One step of any kind, told apart by the key it has (``action``, ``if``, ...).
AnyStep = kinds.step_type()
kinds.rebuild(AnyStep)


class FlowTrigger(BaseModel):
    """The trigger that starts a flow, with its inputs."""

    model_config = ConfigDict(extra="forbid")
    type: str
    inputs: dict[str, Any] = Field(default_factory=dict)


class Flow(BaseModel):
    """A named trigger plus ordered steps."""

    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    trigger: FlowTrigger
    steps: list[SerializeAsAny[AnyStep]] = Field(min_length=1)  # type: ignore[valid-type]
    concurrencyKey: str | None = Field(
        default=None,
        description="Template over the trigger, e.g. '{{ trigger.event.data.id }}': runs with "
        "the same key run one at a time.",
    )

    @model_validator(mode="after")
    def _unique_steps(self) -> Flow:
        names = [s.name for s in walk(self.steps)]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"step name '{duplicate}' is used twice (nested steps included)")
        return self


def validate_flow(flow: Flow, manifest: Manifest) -> list[str]:
    """Check the trigger and every step (each kind's own checks, templates, the steps
    they refer to); raise ``InputError`` naming the flow, step and input.

    The trigger's inputs are replaced by their cleaned values; warnings (values
    sent as they are) are returned.
    """
    warnings = _check_trigger(flow, manifest)
    checker = Checker(flow.name, manifest, trigger_shape(flow, manifest))
    checker.warnings += warnings
    if flow.concurrencyKey is not None:
        check(flow.name, "concurrencyKey", flow.concurrencyKey)
        if step_references(flow.concurrencyKey):
            raise InputError(flow.name, "concurrencyKey", "may use the trigger only, not steps")
        checker.paths(flow.name, "concurrencyKey", flow.concurrencyKey)
    checker.steps(flow.steps, [])
    return checker.warnings


def trigger_shape(flow: Flow, manifest: Manifest) -> dict[str, Any]:
    """What a flow's ``trigger`` holds, as far as deploy can check paths into it: a
    schedule's tick, or a V3 webhook's event fields, and its ``data`` as PagerDuty
    documents it for the event types the flow selects (any of them: the keys of each,
    two levels deep), or unchecked when one of them is not documented."""
    if flow.trigger.type == schedules.SCHEDULE:
        return {"scheduledAt": None, "schedule": {"cron": None, "timezone": None}}
    event: dict[str, Any] = dict.fromkeys(EVENT_FIELDS)
    trigger = manifest.trigger(flow.trigger.type)
    selected = flow.trigger.inputs.get("events") or []
    if trigger is not None and isinstance(selected, list):
        kinds = {e.value: e.data for e in trigger.events}
        names = [kinds.get(value) for value in selected]
        if names and None not in names:
            event["data"] = shape_union(
                [two_levels(trigger.eventData[name]) for name in dict.fromkeys(names)]
            )
    return {"event": event, "headers": None}


def _check_trigger(flow: Flow, manifest: Manifest) -> list[str]:
    """Check the flow's trigger (a webhook trigger of the manifest, or ``schedule``) and
    replace its inputs by their cleaned values; return warnings."""
    owner = f"{flow.name}.trigger ({flow.trigger.type})"
    if flow.trigger.type == schedules.SCHEDULE:
        flow.trigger.inputs = schedules.check(owner, flow.trigger.inputs)
        return []
    trigger = manifest.trigger(flow.trigger.type)
    if trigger is None:
        names = [t.key for t in manifest.triggers] + [schedules.SCHEDULE]
        hint = did_you_mean(flow.trigger.type, names)
        raise InputError(
            flow.name, "trigger.type", f"unknown trigger{hint} (known: {', '.join(names)})"
        )
    cleaned = clean_inputs(owner, trigger.inputs, flow.trigger.inputs)
    TRIGGERS[trigger.key].check(owner, cleaned)
    flow.trigger.inputs = {k: v for k, v in cleaned.items() if v is not None}
    return list(cleaned.warnings)


ActionRunner = Callable[[StepModel, dict[str, Any]], Awaitable[Any]]


class _ActionsOnly:
    """``Services`` for a run that only has an action runner (tests, try-outs): the
    machine's clock; no durable waits, HTTP requests or state."""

    def __init__(self, manifest: Manifest, action: ActionRunner) -> None:
        self.manifest, self._action = manifest, action

    async def action(self, step: Any, inputs: dict[str, Any], record: Record) -> Any:
        return await self._action(step, inputs)

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def wait(self, seconds: float, record: Record) -> None:
        raise InputError("run", "wait", "this run cannot wait (no durable engine)")

    async def http(self, request: dict[str, Any], record: Record) -> Any:
        raise InputError("run", "http", "this run cannot send HTTP requests")

    async def state(self, operation: dict[str, Any]) -> Any:
        raise InputError("run", "state", "this run has no state store")

    def lanes(self, runner: Runner, loop: Any) -> LocalLanes:
        return LocalLanes(runner, loop)


async def run_flow(
    flow: Flow, manifest: Manifest, trigger_output: dict[str, Any], services: Any
) -> tuple[str, list[Record]]:
    """Run the steps in order; the run's status (``succeeded``, ``failed``, or
    ``succeeded_with_errors`` when a step failed with ``onError: continue``) and one
    record per step. ``services`` is a ``steps.Services``, or an action runner alone."""
    if callable(services) and not hasattr(services, "action"):
        services = _ActionsOnly(manifest, services)
    scope: dict[str, Any] = {
        "trigger": trigger_output,
        "steps": {},
        "vars": {},
        "now": services.now,
    }
    runner = Runner(flow.name, services)
    status, records = await runner.run_steps(flow.steps, scope)
    if status == "succeeded" and runner.swallowed:
        status = "succeeded_with_errors"
    return status, records


def actions_of(flow: Flow) -> list[tuple[str, str]]:
    """(step name, action key) of every action step, nested ones included."""
    return [(step.name, step.action) for step in walk(flow.steps) if step.KEY == "action"]


def waits(flow: Flow) -> bool:
    """Whether the flow has a wait step (its runs go to the patient queue)."""
    return any(step.KEY == "wait" for step in walk(flow.steps))


def concurrency_key(flow: dict[str, Any], trigger_output: dict[str, Any]) -> str | None:
    """The flow's ordering key for one delivery (``None`` when it has none, or it renders
    empty or fails)."""
    template = flow.get("concurrencyKey")
    if not template:
        return None
    key = try_render(template, {"trigger": trigger_output, "steps": {}, "vars": {}})
    text = "" if key is None else str(key)
    return text or None


def _records(records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every step record, nested ones (a branch's, each loop item's) included, in order."""
    for record in records:
        yield record
        yield from _records(record.get("steps") or [])
        for item in record.get("items") or []:
            yield from _records(item)


def changed_before(ran: Flow, current: Flow, records: list[dict[str, Any]]) -> str | None:
    """Whether ``current`` can take over a run of ``ran`` that stopped as ``records``
    say: a retry replays the outputs of the steps before the one that failed, by
    position, so those steps (not the ones nested in them) must be as they were; the
    failed step and those after it may change. The first step that differs, or None."""
    flat = list(_records(records))
    failed = next((r["name"] for r in flat if r.get("status") == "failed"), None)
    settled = {r["name"] for r in flat if r.get("status") in ("succeeded", "skipped")}
    before, now = list(walk(ran.steps)), list(walk(current.steps))
    names = [s.name for s in before]
    if failed in names:
        point = names.index(failed)
    else:  # cancelled or stopped between steps: at the first step not settled
        point = next((n for n, name in enumerate(names) if name not in settled), len(names))
    for n, step in enumerate(before[:point]):
        if n >= len(now) or now[n].own() != step.own():
            return step.name
    return None
