"""``state``: the instance's key/value store, across runs and replicas: ``get`` (with a
``default``), ``set`` (a ``value``, an optional ``ttl``), ``increment`` (``by``, atomic,
``ttl``) and ``delete``. What flows remember: the status an incident had last time, how
many incidents a service opened in the last five minutes."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.redact import redact_data
from pagerduty_connector.runtime.state import OPERATIONS
from pagerduty_connector.runtime.steps import Checker, Record, Runner, Scope, StepModel, kind
from pagerduty_connector.runtime.templates import duration_seconds


class StateOperation(BaseModel):
    """Exactly one of ``get``, ``set``, ``increment``, ``delete`` (naming the key, a
    template), with ``value`` (set), ``by`` (increment, default 1), ``ttl`` (set and
    increment: ``'5m'``, ``'1d'``) and ``default`` (get)."""

    model_config = ConfigDict(extra="forbid")
    get: str | None = None
    set: str | None = None
    increment: str | None = None
    delete: str | None = None
    value: Any = None
    by: Any = 1
    ttl: Any = None
    default: Any = None

    @model_validator(mode="after")
    def _one(self) -> StateOperation:
        named = [op for op in OPERATIONS if getattr(self, op) is not None]
        if len(named) != 1:
            raise ValueError(f"state needs exactly one of: {', '.join(OPERATIONS)}")
        if self.value is not None and named[0] != "set":
            raise ValueError("'value' goes with set")
        return self

    @property
    def op(self) -> str:
        """The operation asked for."""
        return next(op for op in OPERATIONS if getattr(self, op) is not None)


@kind
class StateStep(StepModel):
    """``state: {increment: "opened/{{ trigger.event.data.service.id }}", ttl: 5m}``."""

    KEY: ClassVar[str] = "state"
    SUMMARY: ClassVar[str] = "Get, set (with a ttl), increment or delete a value kept across runs."
    state: StateOperation = Field(description="The operation and its key.")

    def check(self, checker: Checker, seen: list[str]) -> None:
        """Templates sound; a literal ttl readable."""
        op = self.state
        for key in (op.op, "value", "by", "ttl", "default"):
            value = getattr(op, key)
            if value is not None:
                checker.template(self, key, value, seen)
        if isinstance(op.ttl, str | int | float) and "{" not in str(op.ttl):
            try:
                duration_seconds(op.ttl)
            except ValueError as exc:
                raise InputError(checker.owner(self), "ttl", str(exc)) from None

    async def run(self, runner: Runner, scope: Scope, record: Record) -> Any:
        """Render the operation, do it (one checkpoint), keep its result."""
        op = self.state
        key = runner.render(self, op.op, getattr(op, op.op), scope)
        if not isinstance(key, str) or not 0 < len(key) <= 200:
            raise InputError(
                runner.owner(self), op.op, "the key must be text of 1 to 200 characters"
            )
        ttl = runner.render(self, "ttl", op.ttl, scope)
        operation = {
            "op": op.op,
            "key": key,
            "value": runner.render(self, "value", op.value, scope),
            "by": runner.render(self, "by", op.by, scope),
            "ttl": duration_seconds(ttl) if ttl not in (None, "") else None,
            "default": runner.render(self, "default", op.default, scope),
        }
        record["operation"] = redact_data({k: v for k, v in operation.items() if v is not None})
        result = await runner.services.state(operation)
        record["result"] = redact_data(result)
        return result
