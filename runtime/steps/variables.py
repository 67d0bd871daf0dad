"""``set``: named values for later steps, as ``vars.<name>`` (a count, a message built
once, a time computed at this point of the run)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, field_validator

from pagerduty_connector.component.redact import redact_data
from pagerduty_connector.runtime.steps import NAME, Checker, Record, Runner, Scope, StepModel, kind


@kind
class SetStep(StepModel):
    """``set: {name: value, ...}``: each value (templated) becomes ``vars.<name>``."""

    KEY: ClassVar[str] = "set"
    SUMMARY: ClassVar[str] = "Set named values (vars.<name>) for the steps after it."
    set: dict[str, Any] = Field(min_length=1, description="Names (words) and their values.")

    @field_validator("set")
    @classmethod
    def _words(cls, values: dict[str, Any]) -> dict[str, Any]:

        bad = next((name for name in values if not re.match(NAME, name)), None)
        if bad is not None:
            raise ValueError(f"variable name {bad!r} is not a word (letters, digits, _)")
        return values

    def check(self, checker: Checker, seen: list[str]) -> None:
        """Each value's templates."""
        for name, value in self.set.items():
            checker.template(self, name, value, seen)

    async def run(self, runner: Runner, scope: Scope, record: Record) -> Any:
        """Render each value in order (a later one may use an earlier: vars.<name>)."""
        values: dict[str, Any] = {}
        for name, value in self.set.items():
            values[name] = runner.render(self, name, value, scope)
            scope["vars"][name] = values[name]
        record["values"] = redact_data(values)
        return values
