"""``forEach``: run nested steps once for each item of a list; each item's steps are
checkpointed like any step, and their outputs are collected in order. By default one
item at a time; with ``concurrency: N``, up to N items at once, each (in a durable run)
a DBOS workflow of its own, so each item's checkpoints are its own whatever the order
in which the items' steps happen to run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.redact import redact_data
from pagerduty_connector.runtime.steps import (
    NAME,
    Checker,
    ItemResult,
    Record,
    Runner,
    Scope,
    StepModel,
    StepStopped,
    kind,
    outputs_of,
    skipped,
)

# The most items a loop takes: a list longer than this is a mistake (a whole account's
# incidents), not a flow.
MOST_ITEMS = 1000
# The most items in flight at once: each holds a workflow and PagerDuty's rate limit is
# per account, so more would only queue at PagerDuty (or meet its 429s).
MOST_IN_FLIGHT = 20


@kind
class ForEachStep(StepModel):
    """``forEach: "{{ steps.alerts.data.alerts }}"`` with ``steps`` to run for each item;
    inside, the item is ``item`` (or the name ``as`` gives) and its position ``index``.
    After the loop, ``steps.<name>`` is the list of each item's outputs (by step name).
    An item whose steps fail stops the loop, or with ``onError: continue`` the loop
    goes on with the next item and the run ends ``succeeded_with_errors``.

    ``concurrency: N`` runs up to N items at once (started and collected in order, a
    new one as the oldest in flight ends). Each item then has its own copy of ``vars``
    (a ``set`` in one is not seen by the others: use ``state`` for a shared counter);
    an item that fails stops the loop from starting more, the ones in flight finish,
    and those never started are recorded as skipped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)
    KEY: ClassVar[str] = "forEach"
    SUMMARY: ClassVar[str] = "Run nested steps for each item of a list, in order."
    EXPORTS_NESTED: ClassVar[bool] = False
    NESTED_FIELDS: ClassVar[frozenset[str]] = frozenset({"steps"})
    forEach: str = Field(description="A template that renders to a list.")
    steps: list[AnyStep] = Field(min_length=1)  # type: ignore[name-defined]  # noqa: F821
    item_name: str = Field(default="item", alias="as", pattern=NAME)
    concurrency: int = Field(
        default=1,
        ge=1,
        le=MOST_IN_FLIGHT,
        description=f"Items in flight at once (1 to {MOST_IN_FLIGHT}; default 1, in turn).",
    )

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
        if self.concurrency > 1:
            return await self._side_by_side(runner, scope, items, record)
        record["items"] = []
        outputs: list[dict[str, Any]] = []
        failed = 0
        for index, item in enumerate(items):
            inner = self._item_scope(scope, item, index)
            status, records = await runner.run_steps(self.steps, inner)
            record["items"].append(records)
            outputs.append(outputs_of(self.steps, inner))
            if status == "failed":
                failed += 1
                if self.onError == "stop":
                    raise StepStopped(f"item {index} of {len(items)} failed")
        return _collected(runner, record, outputs, failed)

    def _item_scope(self, scope: Scope, item: Any, index: int) -> Scope:
        """What an item's steps see: the run's scope with the item and its index, and
        a copy of the outputs (an item's steps are its own, listed in the loop's)."""
        return {**scope, "steps": dict(scope["steps"]), self.item_name: item, "index": index}

    async def _side_by_side(
        self, runner: Runner, scope: Scope, items: list[Any], record: Record
    ) -> list[dict[str, Any]]:
        """Up to ``concurrency`` items at once. Items start in order and their results
        are taken in order, a new item starting as the oldest in flight ends: in a
        durable run that order is what the run replays, so it must not depend on which
        item happens to end first."""
        lanes = runner.services.lanes(runner, self)
        pending: dict[int, Callable[[], Awaitable[ItemResult]]] = {}
        results: list[ItemResult] = []
        started, stopped_at = 0, None
        for index in range(len(items)):
            while (
                stopped_at is None and started < len(items) and started < index + self.concurrency
            ):
                inner = self._item_scope(scope, items[started], started)
                inner["vars"] = dict(scope["vars"])  # beside the others: vars of its own
                pending[started] = await lanes.start(started, inner)
                started += 1
            if index not in pending:
                break
            result = await pending.pop(index)()
            results.append(result)
            if result["status"] == "failed" and self.onError == "stop" and stopped_at is None:
                stopped_at = index
        reason = f"the loop stopped: item {stopped_at} failed"
        record["concurrency"] = self.concurrency
        record["items"] = [r["records"] for r in results] + [
            skipped(self.steps, reason) for _ in range(len(results), len(items))
        ]
        # Where each item ran and the run's checkpoint that took its result: a retry
        # starts again from the first failed item's (``runtime/durable.py``).
        record["lanes"] = [{k: r[k] for k in ("workflow", "checkpoint") if k in r} for r in results]
        runner.swallowed += sum(r.get("swallowed", 0) for r in results)
        failed = sum(r["status"] == "failed" for r in results)
        outputs = [r["outputs"] for r in results]
        if stopped_at is not None:
            raise StepStopped(f"item {stopped_at} of {len(items)} failed")
        return _collected(runner, record, outputs, failed)


def _collected(
    runner: Runner, record: Record, outputs: list[dict[str, Any]], failed: int
) -> list[dict[str, Any]]:
    """A loop's outputs, once every item ran: with items that failed and went on
    (``onError: continue``), the run ends ``succeeded_with_errors``."""
    if failed:
        runner.swallowed += 1
        record["failedItems"] = failed
    record["result"] = redact_data(outputs)
    return outputs
