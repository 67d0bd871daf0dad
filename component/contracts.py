"""The typed contracts code implementations fulfil, checked when the component loads.

A plain REST action or picklist data source needs no code; the rest register an
object that fulfils one of these protocols:

- ``ActionImpl``: ``async (ctx, inputs) -> result`` for actions with behaviour of their
  own (``@action``);
- ``DataSourceKind``: ``async (ctx, source, inputs) -> result`` runs every data source
  of one kind (``@datasource_kind``);
- ``Trigger``: checks its inputs, deploys and tears down what PagerDuty must hold for
  it (webhook subscriptions), verifies deliveries and turns them into its output
  (``@trigger``).

``contract_problems`` compares an implementation with its protocol member by member
(present, callable, ``async`` where the protocol is, and the same parameters), so a
trigger without ``verify`` fails at startup instead of accepting unsigned deliveries.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pagerduty_connector.component.client import PagerDutyClient
    from pagerduty_connector.component.context import StepContext
    from pagerduty_connector.component.inputs import CleanedInputs
    from pagerduty_connector.component.manifest import DataSource
    from pagerduty_connector.triggers.subscriptions import Desired, Held, SyncResult, UrlFilter


class ActionImpl(Protocol):
    """An action with behaviour of its own."""

    async def __call__(self, ctx: StepContext, inputs: CleanedInputs) -> dict[str, Any]:
        """Run the action with cleaned inputs; return ``{"data": ...}``."""
        ...


class DataSourceKind(Protocol):
    """Runs every data source of one kind (e.g. picklist)."""

    async def __call__(
        self, ctx: StepContext, source: DataSource, inputs: CleanedInputs
    ) -> dict[str, Any]:
        """Run one data source; return ``{"result": ...}``."""
        ...


class Trigger(Protocol):
    """A webhook trigger: its deploy and teardown hooks, verification and output."""

    key: str

    def check(self, owner: str, inputs: CleanedInputs) -> None:
        """Rules the manifest cannot declare; raise ``InputError`` naming ``owner``."""
        ...

    def subscription(self, flow: str, url: str, inputs: Mapping[str, Any]) -> Desired:
        """What PagerDuty must hold so a flow with these inputs receives deliveries at ``url``."""
        ...

    async def deploy(
        self, client: PagerDutyClient, desired: list[Desired], held: list[Held], owned: UrlFilter
    ) -> SyncResult:
        """Deploy hook: make PagerDuty hold exactly ``desired``; drop what ``owned`` no longer
        needs; undo what it created if any part fails."""
        ...

    async def teardown(self, client: PagerDutyClient, owned: UrlFilter) -> list[str]:
        """Teardown hook: delete everything delivering to an ``owned`` URL; return the ids."""
        ...

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Iterable[str]) -> None:
        """Raise ``SignatureError`` unless the delivery is genuine."""
        ...

    def output(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """The trigger's output for a delivery; ``InputError`` when it is not one."""
        ...

    def skip_reason(self, output: dict[str, Any], inputs: Mapping[str, Any]) -> str | None:
        """Why a delivery runs no steps (a ping, an event not selected), or ``None``."""
        ...


def _members(protocol: type) -> dict[str, Any]:
    names = [n for n in vars(protocol) if not n.startswith("_") or n == "__call__"]
    return {n: vars(protocol)[n] for n in names if callable(vars(protocol)[n])}


def _parameters(function: Any) -> list[str]:
    return [p.name for p in inspect.signature(function).parameters.values() if p.name != "self"]


def contract_problems(implementation: Any, protocol: type) -> list[str]:
    """How ``implementation`` falls short of ``protocol`` (empty when it fulfils it)."""
    problems = [
        f"has no attribute '{name}'"
        for name in getattr(protocol, "__annotations__", {})
        if not hasattr(implementation, name)
    ]
    for name, wanted in _members(protocol).items():
        target = implementation if name == "__call__" else getattr(implementation, name, None)
        if not callable(target):
            problems.append(f"has no method '{name}'")
            continue
        actual = target if inspect.isfunction(target) or inspect.ismethod(target) else None
        actual = actual or getattr(target, "__call__", target)  # noqa: B004
        if inspect.iscoroutinefunction(wanted) != inspect.iscoroutinefunction(actual):
            kind = "async" if inspect.iscoroutinefunction(wanted) else "a plain function"
            problems.append(f"'{name}' must be {kind}")
        if _parameters(wanted) != _parameters(actual):
            problems.append(
                f"'{name}' takes ({', '.join(_parameters(actual))}), "
                f"the contract says ({', '.join(_parameters(wanted))})"
            )
    return problems
