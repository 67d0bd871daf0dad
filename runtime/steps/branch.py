"""``if`` and ``switch``: run one group of nested steps, chosen at run time. The steps of
the groups not taken are recorded as skipped, with the reason."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from pagerduty_connector.runtime.steps import (
    Checker,
    Record,
    Runner,
    Scope,
    StepModel,
    StepStopped,
    kind,
    skipped,
)

# Keys that are Python words (if, else) are written as such in flows and stored so.
_ALIASED = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


async def _run_group(
    runner: Runner,
    scope: Scope,
    record: Record,
    chosen: tuple[str, list[StepModel]],
    others: list[tuple[str, list[StepModel]]],
    why: str,
) -> None:
    """Run the chosen group; record its steps, then the others' as skipped."""
    label, steps = chosen
    status, records = await runner.run_steps(steps, scope)
    for other, group in others:
        records += skipped(group, f"in {other}, not taken: {why}")
    record["steps"] = records
    if status == "failed":
        raise StepStopped(f"a step in {label} failed")


@kind
class IfStep(StepModel):
    """``if`` a Jinja expression is true, the ``then`` steps run, else the ``else`` ones."""

    model_config = _ALIASED
    KEY: ClassVar[str] = "if"
    NESTED_FIELDS: ClassVar[frozenset[str]] = frozenset({"then", "otherwise"})
    SUMMARY: ClassVar[str] = "Run the then steps when an expression is true, else the else steps."
    condition: str = Field(alias="if", description="A Jinja expression, e.g. priority == 'P1'.")
    then: list[AnyStep] = Field(min_length=1)  # type: ignore[name-defined]  # noqa: F821
    otherwise: list[AnyStep] = Field(  # type: ignore[name-defined]  # noqa: F821
        default_factory=list, alias="else"
    )

    def nested(self) -> list[tuple[str, list[StepModel]]]:
        """The two branches."""
        return [("then", self.then), ("else", self.otherwise)]

    def check(self, checker: Checker, seen: list[str]) -> None:
        """The condition, and each branch as steps that follow ``seen``."""
        checker.template(self, "if", "{{" + self.condition + "}}", seen)
        for _, group in self.nested():
            checker.steps(group, seen)

    async def run(self, runner: Runner, scope: Scope, record: Record) -> Any:
        """Decide, run the branch, record both; the output names the branch taken."""
        taken = bool(runner.render(self, "if", "{{" + self.condition + "}}", scope))
        branch = "then" if taken else "else"
        record["branch"] = branch
        groups = dict(self.nested())
        other = "else" if taken else "then"
        why = f"{self.condition} was {str(taken).lower()}"
        await _run_group(
            runner,
            scope,
            record,
            (f"its {branch} branch", groups[branch]),
            [(f"its {other} branch", groups[other])],
            why,
        )
        return {"branch": branch}


@kind
class SwitchStep(StepModel):
    """The steps of the case whose name is the rendered ``switch`` value, else of
    ``default``."""

    KEY: ClassVar[str] = "switch"
    NESTED_FIELDS: ClassVar[frozenset[str]] = frozenset({"cases", "default"})
    SUMMARY: ClassVar[str] = "Run the steps of the case named by a value (or the default ones)."
    switch: str = Field(description="A template, e.g. {{ trigger.event.data.priority.summary }}.")
    cases: dict[str, list[AnyStep]] = Field(min_length=1)  # type: ignore[name-defined]  # noqa: F821
    default: list[AnyStep] = Field(default_factory=list)  # type: ignore[name-defined]  # noqa: F821

    def nested(self) -> list[tuple[str, list[StepModel]]]:
        """Every case, then the default."""
        return [*self.cases.items(), ("default", self.default)]

    def check(self, checker: Checker, seen: list[str]) -> None:
        """The value's template, and each case as steps that follow ``seen``."""
        checker.template(self, "switch", self.switch, seen)
        for _, group in self.nested():
            checker.steps(group, seen)

    async def run(self, runner: Runner, scope: Scope, record: Record) -> Any:
        """Pick the case, run it, record every case; the output names the case."""
        value = runner.render(self, "switch", self.switch, scope)
        text = "" if value is None else str(value)
        case = text if text in self.cases else "default"
        record["case"] = case
        groups = self.nested()
        chosen = next(group for group in groups if group[0] == case)
        others = [(f"case {label!r}", group) for label, group in groups if label != case]
        await _run_group(
            runner, scope, record, (f"case {case!r}", chosen[1]), others, f"the value was {text!r}"
        )
        return {"case": case, "value": value}
