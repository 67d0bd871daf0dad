"""Flows: a trigger plus ordered steps, their templates, validation and execution.

Step inputs may reference the trigger's output and earlier steps' results with
Jinja templates rendered in a sandbox, e.g. ``{{ trigger.event.data.id }}`` or
``{{ steps.getIncident.data.incident.title }}``; list items are reached with dot
paths such as ``notifications.0.sentat``. A value that is exactly one expression
keeps its type (an object stays an object); any other text renders to a string.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pagerduty_connector.component.errors import ComponentError, InputError
from pagerduty_connector.component.inputs import clean_inputs
from pagerduty_connector.component.manifest import InputType, Manifest
from pagerduty_connector.component.redact import MASK, redact, redact_data
from pagerduty_connector.component.registry import TRIGGERS


class _DataEnvironment(SandboxedEnvironment):
    """A sandbox where ``a.b`` on a mapping means its key ``b`` before any method.

    Jinja tries attributes first, so ``steps.get`` or ``data.items`` would otherwise
    reach ``dict.get`` / ``dict.items`` instead of the step or field of that name.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Key lookup first for mappings, then the sandbox's attribute rules."""
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_env = _DataEnvironment(undefined=StrictUndefined, autoescape=False)
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)
_STEP_REF = re.compile(r"\bsteps\.([A-Za-z_][A-Za-z0-9_]*)")


class Step(BaseModel):
    """One step: an action or data source with (templated) inputs."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    action: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    when: str | None = Field(default=None, description="Jinja expression; skip when false.")
    onError: Literal["stop", "continue"] = "stop"


class FlowTrigger(BaseModel):
    """The trigger that starts a flow, with its inputs."""

    model_config = ConfigDict(extra="forbid")
    type: str
    inputs: dict[str, Any] = Field(default_factory=dict)


class Flow(BaseModel):
    """A named trigger plus ordered steps."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    trigger: FlowTrigger
    steps: list[Step] = Field(min_length=1)
    concurrencyKey: str | None = Field(
        default=None,
        description="Template over the trigger, e.g. '{{ trigger.event.data.id }}': runs with "
        "the same key run one at a time.",
    )

    @model_validator(mode="after")
    def _unique_steps(self) -> Flow:
        names = [s.name for s in self.steps]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"step name '{duplicate}' is used twice")
        return self


def _is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


@functools.lru_cache(maxsize=4096)
def _compiled(value: str) -> Callable[[dict[str, Any]], Any]:
    """A template string compiled once (every run of a flow renders the same ones):
    a lone expression keeps its type, other text renders to a string."""
    match = _SINGLE.match(value)
    if match:
        expression = _env.compile_expression(match.group("expr"), undefined_to_none=False)

        def evaluate(scope: dict[str, Any]) -> Any:
            result = expression(**scope)
            if isinstance(result, Undefined):
                str(result)  # a StrictUndefined says what is missing, as UndefinedError
            return result

        return evaluate
    template = _env.from_string(value)
    return lambda scope: template.render(**scope)


def _compile(owner: str, key: str, value: Any) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _compile(owner, key, v)
    elif isinstance(value, list):
        for v in value:
            _compile(owner, key, v)
    elif isinstance(value, str) and _is_template(value):
        try:
            _compiled(value)
        except TemplateError as exc:
            raise InputError(owner, key, f"template error: {exc}") from None


def _contains_template(value: Any) -> bool:
    if isinstance(value, str):
        return _is_template(value)
    if isinstance(value, dict):
        return any(_contains_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_template(v) for v in value)
    return False


def validate_flow(flow: Flow, manifest: Manifest) -> list[str]:
    """Check the trigger, every step, its inputs and templates; raise ``InputError``.

    The trigger's inputs are replaced by their cleaned values; warnings (values
    sent as they are) are returned.
    """
    trigger = next((t for t in manifest.triggers if t.key == flow.trigger.type), None)
    if trigger is None:
        known = ", ".join(t.key for t in manifest.triggers)
        raise InputError(flow.name, "trigger.type", f"unknown trigger (known: {known})")
    owner = f"{flow.name}.trigger ({trigger.key})"
    cleaned = clean_inputs(owner, trigger.inputs, flow.trigger.inputs)
    TRIGGERS[trigger.key].check(owner, cleaned)
    if flow.concurrencyKey is not None:
        _compile(flow.name, "concurrencyKey", flow.concurrencyKey)
        if _STEP_REF.search(flow.concurrencyKey):
            raise InputError(flow.name, "concurrencyKey", "may use the trigger only, not steps")
    flow.trigger.inputs = {k: v for k, v in cleaned.items() if v is not None}
    warnings = list(cleaned.warnings)
    seen: list[str] = []
    for step in flow.steps:
        owner = f"{flow.name}.{step.name}"
        try:
            item = manifest.runnable(step.action)
        except KeyError:
            raise InputError(owner, "action", f"unknown action '{step.action}'") from None
        templated = {k for k, v in step.inputs.items() if _contains_template(v)}
        static = {k: v for k, v in step.inputs.items() if k not in templated}
        missing_templated = [i for i in item.inputs if i.key in templated]
        declared = [i for i in item.inputs if i not in missing_templated]
        warnings += clean_inputs(f"{owner} ({step.action})", declared, static).warnings
        for key in templated:
            _compile(owner, key, step.inputs[key])
            for ref in _STEP_REF.findall(str(step.inputs[key])):
                if ref not in seen:
                    raise InputError(
                        owner, key, f"refers to step '{ref}', which does not run before"
                    )
        if step.when:
            _compile(owner, "when", "{{" + step.when + "}}")
        seen.append(step.name)
    return warnings


class TemplateFailed(InputError):
    """A step input's template failed at run time: it refers to something the run does
    not have, or its expression raised. The message names the flow and step, the input
    (and where inside it), the template and Jinja's reason."""


def render(value: Any, scope: dict[str, Any], where: str = "") -> Any:
    """Render templates inside ``value``; a lone expression keeps its type, and one that
    names nothing (``{{ trigger.event.data.nope }}``) raises ``UndefinedError`` rather
    than passing Jinja's ``Undefined`` on. Errors carry ``where`` inside the value."""
    if isinstance(value, dict):
        return {k: render(v, scope, f"{where}.{k}" if where else k) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, scope, f"{where}[{n}]") for n, v in enumerate(value)]
    if not isinstance(value, str) or not _is_template(value):
        return value
    try:
        return _compiled(value)(scope)
    except _RenderFailed:
        raise
    except Exception as exc:  # whatever a template raises (sandbox, range, arithmetic)
        raise _RenderFailed(where, value, exc) from None


class _RenderFailed(Exception):
    """Carries a failed template, and where in an input it was, up to ``render_input``."""

    def __init__(self, where: str, template: str, cause: Exception) -> None:
        self.where, self.template, self.cause = where, template, cause


def render_input(owner: str, key: str, value: Any, scope: dict[str, Any]) -> Any:
    """One step input rendered; ``TemplateFailed`` naming ``owner`` (flow.step), the input,
    where inside it, the template and why."""
    try:
        return render(value, scope)
    except _RenderFailed as failed:
        inside = f" at {failed.where}" if failed.where else ""
        template = failed.template if len(failed.template) <= 120 else failed.template[:117] + "..."
        reason = f"{type(failed.cause).__name__}: {failed.cause}"
        raise TemplateFailed(
            owner, key, f"template {template!r}{inside} failed: {reason}"
        ) from None


def _redacted_inputs(manifest: Manifest, action: str, inputs: dict[str, Any]) -> dict[str, Any]:
    item = manifest.runnable(action)
    secret = {i.key for i in item.inputs if i.type is InputType.PASSWORD}
    return {k: MASK if k in secret else redact_data(v) for k, v in inputs.items()}


StepRunner = Callable[[Step, dict[str, Any]], Awaitable[dict[str, Any]]]


async def run_flow(
    flow: Flow, manifest: Manifest, trigger_output: dict[str, Any], run_step: StepRunner
) -> tuple[str, list[dict[str, Any]]]:
    """Run the steps in order; return the flow status and one record per step."""
    scope: dict[str, Any] = {"trigger": trigger_output, "steps": {}}
    records: list[dict[str, Any]] = []
    status = "succeeded"
    for step in flow.steps:
        record: dict[str, Any] = {"name": step.name, "action": step.action}
        started = time.perf_counter()
        owner = f"{flow.name}.{step.name}"
        try:
            if step.when and not render_input(owner, "when", "{{" + step.when + "}}", scope):
                record["status"] = "skipped"
                records.append(record)
                continue
            inputs = {k: render_input(owner, k, v, scope) for k, v in step.inputs.items()}
            record["inputs"] = _redacted_inputs(manifest, step.action, inputs)
            result = await run_step(step, inputs)
            scope["steps"][step.name] = result
            record.update(status="succeeded", result=redact_data(result))
        except (ComponentError, TemplateError, TypeError, ValueError) as exc:
            record.update(status="failed", error=redact(f"{type(exc).__name__}: {exc}"))
            if step.onError == "stop":
                status = "failed"
        record["durationMs"] = round((time.perf_counter() - started) * 1000, 2)
        records.append(record)
        if status == "failed":
            break
    return status, records


def concurrency_key(flow: dict[str, Any], trigger_output: dict[str, Any]) -> str | None:
    """The flow's ordering key for one delivery (``None`` when it has none, or it renders
    empty)."""
    template = flow.get("concurrencyKey")
    if not template:
        return None
    try:
        key = render(template, {"trigger": trigger_output, "steps": {}})
        text = "" if key is None else str(key)
    except _RenderFailed:
        return None
    return text or None
