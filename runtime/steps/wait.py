"""``wait``: pause the run for a while, or until a time, durably: a restart, a deploy or
another replica taking over does not shorten the wait nor run what was before it again.
Meanwhile the execution shows as ``waiting``."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pagerduty_connector.component.errors import InputError
from pagerduty_connector.runtime.steps import Checker, Record, Runner, Scope, StepModel, kind
from pagerduty_connector.runtime.templates import duration_seconds, parse_time

# The longest wait a step may ask for: eight weeks.
LONGEST = 8 * 7 * 86400.0


class WaitFor(BaseModel):
    """How long: ``for`` a duration (``600``, ``'10m'``, ``'2h'``, ``'PT1H'``), or
    ``until`` a time (ISO 8601); either may be a template."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)
    duration: Any = Field(default=None, alias="for")
    until: Any = None

    @model_validator(mode="after")
    def _one(self) -> WaitFor:
        if (self.duration is None) == (self.until is None):
            raise ValueError("wait needs exactly one of 'for' (a duration) or 'until' (a time)")
        return self


@kind
class WaitStep(StepModel):
    """``wait: {for: 10m}`` or ``wait: {until: "{{ ... }}"}``."""

    KEY: ClassVar[str] = "wait"
    SUMMARY: ClassVar[str] = (
        "Pause the run for a duration or until a time (durably, up to 8 weeks)."
    )
    wait: WaitFor

    def check(self, checker: Checker, seen: list[str]) -> None:
        """Templates sound; a literal duration or time readable and within bounds."""
        owner = checker.owner(self)
        for key, value in (("for", self.wait.duration), ("until", self.wait.until)):
            if value is None:
                continue
            checker.template(self, key, value, seen)
            if isinstance(value, str) and "{" in value:
                continue
            seconds = None
            try:
                if key == "for":
                    seconds = duration_seconds(value)
                else:
                    parse_time(value)
            except ValueError as exc:
                problem = (
                    str(exc)
                    if key == "for"
                    else f"{value!r} is not a time (ISO 8601, e.g. 2026-12-04T10:00:00Z)"
                )
                raise InputError(owner, key, problem) from None
            if seconds is not None and not 0 <= seconds <= LONGEST:
                raise InputError(owner, key, "must be between 0 and 8 weeks")

    async def run(self, runner: Runner, scope: Scope, record: Record) -> Any:
        """Work out how long from the run's clock, and wait that long."""
        services = runner.services
        if self.wait.duration is not None:
            seconds = duration_seconds(runner.render(self, "for", self.wait.duration, scope))
        else:
            moment = parse_time(runner.render(self, "until", self.wait.until, scope))
            seconds = (moment - parse_time(services.now())).total_seconds()
        seconds = min(max(seconds, 0.0), LONGEST)
        until = parse_time(services.now()).add(seconds=seconds).isoformat()
        record.update(seconds=round(seconds, 3), until=until)
        await services.wait(seconds, record)
        return {"until": until, "seconds": seconds}
