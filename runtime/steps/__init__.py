"""Step kinds: what a flow's steps can be, each one module here plus its schema.

A step is a mapping with a ``name`` (a word; later steps refer to its output as
``steps.<name>``), an optional ``when`` (a Jinja expression: the step is skipped, with
the reason, when it is false) and ``onError`` (``stop``, the default, or ``continue``),
and exactly one key that says what it is: ``action`` (an action or data source of the
component), ``if`` and ``switch`` (branches of nested steps), ``forEach`` (nested steps
for each item of a list), ``wait`` (a durable pause), ``http`` (a request to a service
other than PagerDuty), ``set`` (variables for later steps) or ``state`` (a key/value
store of the instance, across runs). Each kind is a ``StepModel`` registered with
``@kind``: its pydantic model is its schema (exported in the component document), its
``check`` runs at deploy and its ``run`` at run time, through the ``Runner`` below,
which records every step (and the steps of the branch not taken, as skipped).

Effects that must survive a crash (an action's request, a wait, an HTTP request, a
state change) go through the ``Services`` of the run: in a durable run each is a
checkpoint of the workflow (``runtime/durable.py``), so it is never done twice.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, Union

from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from pagerduty_connector.component.errors import ComponentError, InputError, did_you_mean
from pagerduty_connector.component.redact import redact
from pagerduty_connector.runtime import templates

if TYPE_CHECKING:
    from pagerduty_connector.component.manifest import Manifest

NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
Scope = dict[str, Any]
# Known keys of some data, nested; None where nothing more is known.
Shape = dict[str, Any] | None
Record = dict[str, Any]


class StepModel(BaseModel):
    """What every step has; a kind adds the key that marks it and its own fields."""

    model_config = ConfigDict(extra="forbid")
    KEY: ClassVar[str]
    # What the kind is for, in the component document and the console.
    SUMMARY: ClassVar[str] = ""
    # Whether steps after this one may use its nested steps' outputs (a branch's: they
    # are the run's; a loop item's are not, the loop's own output lists them).
    EXPORTS_NESTED: ClassVar[bool] = True
    # The fields that hold nested steps (``own`` leaves them out).
    NESTED_FIELDS: ClassVar[frozenset[str]] = frozenset()
    name: str = Field(pattern=NAME, description="A word; later steps use steps.<name>.")
    when: str | None = Field(
        default=None, description="A Jinja expression; the step is skipped when it is false."
    )
    onError: Literal["stop", "continue"] = Field(
        default="stop",
        description="On failure: stop the run (failed), or go on (it ends succeeded_with_errors).",
    )

    def nested(self) -> list[tuple[str, list[StepModel]]]:
        """The kind's groups of nested steps, by label (a branch, a loop's body)."""
        return []

    def own(self) -> dict[str, Any]:
        """The step's definition without its nested steps (what a retry on the current
        flow compares: the steps before the failed one must be as they were)."""
        return self.model_dump(exclude=set(self.NESTED_FIELDS))

    def check(self, checker: Checker, seen: list[str]) -> None:
        """Deploy-time checks of the kind's own fields (``seen``: steps that run before)."""

    async def run(self, runner: Runner, scope: Scope, record: Record) -> Any:
        """Do the step; return its output (``steps.<name>``) or raise to fail it."""
        raise NotImplementedError

    def describe(self, record: Record) -> None:
        """Add what the record of this step shows besides name and kind."""


KINDS: dict[str, type[StepModel]] = {}


def kind(model: type[StepModel]) -> type[StepModel]:
    """Register a step kind under its ``KEY``."""
    if model.KEY in KINDS and KINDS[model.KEY] is not model:
        raise ValueError(f"step kind '{model.KEY}' is defined twice")
    KINDS[model.KEY] = model
    return model


def kind_of(value: Any) -> str | None:
    """Which kind a step is: its model's, or the one key of ``KINDS`` a mapping has."""
    if isinstance(value, StepModel):
        return value.KEY
    if isinstance(value, dict):
        present = [key for key in KINDS if key in value]
        return present[0] if len(present) == 1 else None
    return None


class Services(Protocol):
    """What steps need from the run that executes them."""

    manifest: Manifest

    async def action(self, step: Any, inputs: dict[str, Any], record: Record) -> Any:
        """Run an action or data source (retried, each attempt kept in ``record``)."""
        ...

    def now(self) -> datetime:
        """The run's clock (see ``runtime/templates.py``)."""
        ...

    async def wait(self, seconds: float, record: Record) -> None:
        """Pause the run for ``seconds`` (durably: a restart does not shorten it)."""
        ...

    async def http(self, request: dict[str, Any], record: Record) -> Any:
        """Send an HTTP request to a service other than PagerDuty."""
        ...

    async def state(self, operation: dict[str, Any]) -> Any:
        """Get, set, increment or delete a value of the instance's key/value store."""
        ...

    def lanes(self, runner: Runner, loop: Any) -> Lanes:
        """How the items of a loop that runs several at once are started: in a durable
        run each is a workflow of its own (``runtime/durable.py``), else a task."""
        ...


# What one item of a loop gives back: ``status`` (``succeeded``/``failed``), the
# ``records`` of its steps, the ``outputs`` by step name, and ``swallowed``, the failures
# that ``onError: continue`` let it go past.
ItemResult = dict[str, Any]


class Lanes(Protocol):
    """Starts the items of one loop that runs several at once."""

    async def start(self, index: int, scope: Scope) -> Callable[[], Awaitable[ItemResult]]:
        """Start item ``index`` with its own ``scope``; what awaits its result."""
        ...


async def run_item(
    flow_name: str, services: Services, steps: list[StepModel], scope: Scope
) -> ItemResult:
    """Run a loop item's steps in a runner of their own (an item runs beside others)."""
    runner = Runner(flow_name, services)
    status, records = await runner.run_steps(steps, scope)
    outputs = outputs_of(steps, scope)
    return {"status": status, "records": records, "outputs": outputs, "swallowed": runner.swallowed}


def outputs_of(steps: list[StepModel], scope: Scope) -> dict[str, Any]:
    """A loop item's output: what each of its steps that ran gave, by name."""
    return {s.name: scope["steps"][s.name] for s in steps if s.name in scope["steps"]}


class LocalLanes:
    """Items as tasks of this process (a run with no durable engine: tests, try-outs)."""

    def __init__(self, runner: Runner, loop: Any) -> None:
        self.runner, self.loop = runner, loop

    async def start(self, index: int, scope: Scope) -> Callable[[], Awaitable[ItemResult]]:
        """The item as a task; awaiting it gives its result."""
        task = asyncio.ensure_future(
            run_item(self.runner.flow_name, self.runner.services, self.loop.steps, scope)
        )

        async def result() -> ItemResult:
            return await task

        return result


class StepStopped(ComponentError):
    """A nested step failed and stopped its group: the step holding it fails too."""


class Runner:
    """Runs steps in order and records each: status, inputs, output, timing, and why a
    step did not run. One per run (or per loop item)."""

    def __init__(self, flow_name: str, services: Services) -> None:
        self.flow_name, self.services = flow_name, services
        self.swallowed = 0  # failures that onError: continue let the run go past

    def owner(self, step: StepModel) -> str:
        """How errors name a step: ``flow.step``."""
        return f"{self.flow_name}.{step.name}"

    def render(self, step: StepModel, key: str, value: Any, scope: Scope) -> Any:
        """A field of ``step`` rendered; ``TemplateFailed`` naming it on failure."""
        return templates.render_input(self.owner(step), key, value, scope)

    async def run_steps(self, steps: list[StepModel], scope: Scope) -> tuple[str, list[Record]]:
        """Run ``steps``; ``("failed", records)`` once one fails with ``onError: stop``,
        else ``("succeeded", records)``."""
        records: list[Record] = []
        for step in steps:
            record: Record = {"name": step.name, "kind": step.KEY}
            step.describe(record)
            started = time.perf_counter()
            try:
                if step.when and not self.render(step, "when", "{{" + step.when + "}}", scope):
                    record.update(status="skipped", reason=f"its when ({step.when}) was false")
                    records.append(record)
                    continue
                output = await step.run(self, scope, record)
                scope["steps"][step.name] = output
                record["status"] = "succeeded"
            except (ComponentError, TemplateError, TypeError, ValueError) as exc:
                record.update(status="failed", error=redact(f"{type(exc).__name__}: {exc}"))
            record["durationMs"] = round((time.perf_counter() - started) * 1000, 2)
            records.append(record)
            if record["status"] == "failed":
                if step.onError == "stop":
                    return "failed", records
                self.swallowed += 1
        return "succeeded", records


def skipped(steps: list[StepModel], reason: str) -> list[Record]:
    """Records of steps that did not run, and why (a branch not taken)."""
    return [{"name": s.name, "kind": s.KEY, "status": "skipped", "reason": reason} for s in steps]


def walk(steps: list[StepModel]) -> Iterator[StepModel]:
    """Every step, nested ones included, in order."""
    for step in steps:
        yield step
        for _, group in step.nested():
            yield from walk(group)


class Checker:
    """Deploy-time checks of a flow's steps: each kind's own, templates compiled,
    functions and filters known, and every ``steps.x`` one that runs before."""

    def __init__(self, flow_name: str, manifest: Manifest, trigger: Shape | None = None) -> None:
        self.flow_name, self.manifest = flow_name, manifest
        self.warnings: list[str] = []
        # What is known of the data templates read: the trigger's output, and each
        # action step's (by name), as nested keys (None: not known below).
        self.trigger = trigger
        self.outputs: dict[str, Shape] = {}

    def owner(self, step: StepModel) -> str:
        """How errors name a step: ``flow.step``."""
        return f"{self.flow_name}.{step.name}"

    def template(
        self, step: StepModel, key: str, value: Any, seen: list[str], *, owner: str | None = None
    ) -> None:
        """Compile the templates in ``value`` and check the steps they refer to."""
        owner = owner or self.owner(step)
        templates.check(owner, key, value)
        for _, text in templates.strings(value):
            for ref in templates.step_references(text):
                if ref not in seen:
                    raise InputError(
                        owner, key, f"refers to step '{ref}', which does not run before"
                    )
        self.paths(owner, key, value)

    def paths(self, owner: str, key: str, value: Any) -> None:
        """Check the paths the templates in ``value`` read from the trigger and from
        action steps against what is known of their data."""
        for _, text in templates.strings(value):
            for root, path in templates.attribute_paths(text):
                if root == "trigger":
                    self._known(owner, key, "trigger", path, self.trigger)
                elif root == "steps" and len(path) > 1 and path[0] in self.outputs:
                    self._known(owner, key, f"steps.{path[0]}", path[1:], self.outputs[path[0]])

    def _known(self, owner: str, key: str, base: str, path: list[str], shape: Shape) -> None:
        """Refuse a path into data of a known shape that has no such key (a typo such as
        ``trigger.event.dta.id``), naming the nearest key."""
        where = base
        for part in path:
            if not isinstance(shape, dict):
                return
            if part not in shape:
                hint = did_you_mean(part, list(shape))
                raise InputError(
                    owner, key, f"'{where}' has no '{part}'{hint} (it has: {', '.join(shape)})"
                )
            shape, where = shape[part], f"{where}.{part}"

    def learn(self, step: StepModel) -> None:
        """Know an action step's output from its manifest example (PagerDuty's documented
        answer): its top keys and those of its ``data``, never deeper."""
        action_key = getattr(step, "action", None)
        action = next((a for a in self.manifest.actions if a.key == action_key), None)
        example = action.examplePayload if action else None
        if not isinstance(example, dict) or not example:
            return
        self.outputs[step.name] = {
            k: (keys_of(v) if k == "data" else None) for k, v in example.items()
        }

    def steps(self, steps: list[StepModel], seen: list[str]) -> list[str]:
        """Check ``steps`` in order; the names known after them."""
        seen = list(seen)
        for step in steps:
            if step.when:
                self.template(step, "when", "{{" + step.when + "}}", seen)
            step.check(self, seen)
            if step.KEY == "action":
                self.learn(step)
            seen.append(step.name)
            if step.EXPORTS_NESTED:
                seen += [inner.name for inner in walk([step]) if inner is not step]
        return seen


def keys_of(example: Any) -> Shape:
    """The keys of an example mapping (None below them); None for anything else."""
    return dict.fromkeys(example) if isinstance(example, dict) and example else None


def two_levels(example: Any) -> Shape:
    """The keys of an example mapping and those of the mappings in it, never deeper."""
    if not isinstance(example, dict) or not example:
        return None
    return {k: keys_of(v) for k, v in example.items()}


def shape_union(shapes: list[Shape]) -> Shape:
    """What any of ``shapes`` may hold: a key known to one is known; where one of them
    does not know what is below a key, nothing is known below it."""
    if not shapes or any(shape is None for shape in shapes):
        return None
    merged: dict[str, Any] = {}
    for shape in shapes:
        assert shape is not None
        for key, below in shape.items():
            merged[key] = shape_union([merged[key], below]) if key in merged else below
    return merged


def load_kinds() -> None:
    """Import every kind module of this package, so each registers."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def step_type() -> Any:
    """The pydantic type of one step: the union of every kind, told apart by its key."""
    load_kinds()
    members = tuple(Annotated[model, Tag(key)] for key, model in KINDS.items())
    return Annotated[
        Union[members],  # noqa: UP007 (a union built at run time)
        Discriminator(
            kind_of,
            custom_error_type="step_kind",
            custom_error_message=f"a step needs exactly one of: {', '.join(KINDS)}",
        ),
    ]


def rebuild(step: Any) -> None:
    """Resolve the nested-step fields of every kind (``list[AnyStep]``) to ``step``."""
    for model in KINDS.values():
        model.model_rebuild(_types_namespace={"AnyStep": step})
