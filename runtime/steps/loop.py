"""``forEach``: run nested steps once for each item of a list, in order; each item's
steps are checkpointed like any step, and their outputs are collected in order."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.redact import redact_data
from pagerduty_connector.runtime.steps import (
    NAME,
    Checker,
    Record,
    Runner,
    Scope,
    StepModel,
    StepStopped,
    kind,
)

# The most items a loop takes: a list longer than this is a mistake (a whole account's
# incidents), not a flow.
MOST_ITEMS = 1000


@kind
class ForEachStep(StepModel):
    """``forEach: "{{ steps.alerts.data.alerts }}"`` with ``steps`` to run for each item;
    inside, the item is ``item`` (or the name ``as`` gives) and its position ``index``.
    After the loop, ``steps.<name>`` is the list of each item's outputs (by step name).
    An item whose steps fail stops the loop, or with ``onError: continue`` the loop
    goes on with the next item and the run ends ``succeeded_with_errors``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)
    KEY: ClassVar[str] = "forEach"
    SUMMARY: ClassVar[str] = "Run nested steps for each item of a list, in order."
    EXPORTS_NESTED: ClassVar[bool] = False
    NESTED_FIELDS: ClassVar[frozenset[str]] = frozenset({"steps"})
    forEach: str = Field(description="A template that renders to a list.")
    steps: list[AnyStep] = Field(min_length=1)  # type: ignore[name-defined]  # noqa: F821
    item_name: str = Field(default="item", alias="as", pattern=NAME)

    def nested(self) -> list[tuple[str, list[StepModel]]]:
        """The loop's body."""
        return [("the loop's steps", self.steps)]

    def check(self, checker: Checker, seen: list[str]) -> None:
        """The list's template; the body as steps that follow ``seen``, with the item."""
        checker.template(self, "forEach", self.forEach, seen)
        if self.item_name in ("trigger", "steps", "vars", "now", "index"):
            raise InputError(checker.owner(self), "as", f"{self.item_name!r} is taken")
        checker.steps(self.steps, seen)

    async def run(self, runner: Runner, scope: Scope, record: Record) -> Any:
        """Each item in turn, in a scope of its own; the outputs in order."""
        items = runner.render(self, "forEach", self.forEach, scope)
        if isinstance(items, dict):
            items = list(items.values())
        if not isinstance(items, list):
            raise InputError(
                runner.owner(self), "forEach", f"rendered a {type(items).__name__}, not a list"
            )
        if len(items) > MOST_ITEMS:
            raise InputError(
                runner.owner(self), "forEach", f"rendered {len(items)} items; at most {MOST_ITEMS}"
            )
        record["count"] = len(items)
        record["items"] = []
        outputs: list[dict[str, Any]] = []
        failed = 0
        for index, item in enumerate(items):
            inner = {**scope, "steps": dict(scope["steps"]), self.item_name: item, "index": index}
            status, records = await runner.run_steps(self.steps, inner)
            record["items"].append(records)
            outputs.append(
                {s.name: inner["steps"][s.name] for s in self.steps if s.name in inner["steps"]}
            )
            if status == "failed":
                failed += 1
                if self.onError == "stop":
                    raise StepStopped(f"item {index} of {len(items)} failed")
        if failed:
            runner.swallowed += 1
            record["failedItems"] = failed
        record["result"] = redact_data(outputs)
        return outputs
