"""``action``: run one of the component's actions or data sources with templated inputs."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from pagerduty_connector.component.errors import InputError, did_you_mean
from pagerduty_connector.component.inputs import check_known, clean_inputs
from pagerduty_connector.component.manifest import InputType
from pagerduty_connector.component.redact import MASK, redact_data
from pagerduty_connector.runtime.steps import Checker, Record, Runner, Scope, StepModel, kind
from pagerduty_connector.runtime.templates import contains_template


@kind
class ActionStep(StepModel):
    """An action or data source of the component (``pdc actions`` lists them), its
    inputs templated over the trigger, earlier steps and variables."""

    KEY: ClassVar[str] = "action"
    SUMMARY: ClassVar[str] = "Run an action or data source of the component."
    action: str = Field(description="The action or data source key, e.g. getIncident.")
    inputs: dict[str, Any] = Field(default_factory=dict, description="Its inputs, templated.")

    def describe(self, record: Record) -> None:
        """The record names the action."""
        record["action"] = self.action

    def check(self, checker: Checker, seen: list[str]) -> None:
        """A known action, known inputs, static values valid, templates sound. The
        connection is the instance's: a step cannot choose another."""
        owner = checker.owner(self)
        manifest = checker.manifest
        try:
            item = manifest.runnable(self.action)
        except KeyError:
            hint = did_you_mean(self.action, manifest.runnable_keys())
            raise InputError(
                owner, "action", f"unknown action '{self.action}'{hint} (pdc actions lists them)"
            ) from None
        connection = next((i.key for i in item.inputs if i.type is InputType.CONNECTION), None)
        if connection and connection in self.inputs:
            raise InputError(
                owner,
                connection,
                "a step uses its instance's connection: set `connection` on the instance, "
                "not on a step",
            )
        # Every key, templated or not, is an input of the action: a misspelt templated
        # one is named, not reported as the input it was meant to be missing.
        check_known(f"{owner} ({self.action})", item.inputs, self.inputs)
        templated = {k for k, v in self.inputs.items() if contains_template(v)}
        static = {k: v for k, v in self.inputs.items() if k not in templated}
        declared = [i for i in item.inputs if i.key not in templated]
        checker.warnings += clean_inputs(f"{owner} ({self.action})", declared, static).warnings
        for key in templated:
            checker.template(self, key, self.inputs[key], seen)

    async def run(self, runner: Runner, scope: Scope, record: Record) -> Any:
        """Render the inputs, run the action (the run retries it), keep its result."""
        inputs = {k: runner.render(self, k, v, scope) for k, v in self.inputs.items()}
        item = runner.services.manifest.runnable(self.action)
        secret = {i.key for i in item.inputs if i.type is InputType.PASSWORD}
        record["inputs"] = {k: MASK if k in secret else redact_data(v) for k, v in inputs.items()}
        result = await runner.services.action(self, inputs, record)
        record["result"] = redact_data(result)
        return result
