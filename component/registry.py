"""Code implementations of manifest entries, and the startup check that ties them.

Plain REST actions and picklist data sources need no code: the manifest declares
them and the generic requester runs them. Actions with behaviour of their own
register with ``@action("key")``; triggers with ``@trigger("key")``. At startup
``check_implementations`` fails fast, naming the key, when a declared entry has
no implementation, an implementation is not declared, or an implementation does
not fulfil its contract (``component/contracts.py``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, TypeVar

from pagerduty_connector.component.contracts import (
    ActionImpl,
    DataSourceKind,
    Trigger,
    contract_problems,
)
from pagerduty_connector.component.errors import ManifestError
from pagerduty_connector.component.manifest import Manifest

IMPLEMENTATION_PACKAGES = tuple(
    f"pagerduty_connector.{name}" for name in ("actions", "triggers", "datasources")
)

ACTIONS: dict[str, ActionImpl] = {}
TRIGGERS: dict[str, Trigger] = {}
DATASOURCE_KINDS: dict[str, DataSourceKind] = {}

F = TypeVar("F", bound=ActionImpl)
T = TypeVar("T")


def _register(table: dict[str, Any], kind: str, key: str, impl: Any) -> None:
    if key in table and table[key] is not impl:
        raise ManifestError(f"{kind} '{key}' is implemented twice")
    table[key] = impl


def action(key: str) -> Callable[[F], F]:
    """Register the coroutine implementing action ``key``."""

    def decorate(fn: F) -> F:
        _register(ACTIONS, "action", key, fn)
        return fn

    return decorate


def trigger(key: str) -> Callable[[T], T]:
    """Register the object implementing trigger ``key``."""

    def decorate(obj: T) -> T:
        _register(TRIGGERS, "trigger", key, obj)
        return obj

    return decorate


def datasource_kind(kind: str) -> Callable[[T], T]:
    """Register the coroutine that runs every data source of ``kind`` (e.g. picklist)."""

    def decorate(fn: T) -> T:
        _register(DATASOURCE_KINDS, "data source kind", kind, fn)
        return fn

    return decorate


def load_implementations() -> None:
    """Import every module of the implementation packages so they register."""
    for package_name in IMPLEMENTATION_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{info.name}")


def check_implementations(manifest: Manifest) -> None:
    """Raise ``ManifestError`` listing every mismatch between manifest and code."""
    load_implementations()
    problems: list[str] = []
    declared_actions = {a.key: a for a in manifest.actions}
    for key, act in declared_actions.items():
        if act.request is None and key not in ACTIONS:
            problems.append(
                f"action '{key}' declares no request and has no implementation: "
                f"declare its request in manifest.yaml or add @action('{key}') under actions/"
            )
        if act.request is not None and key in ACTIONS:
            problems.append(
                f"action '{key}' has both a declared request and a code implementation; keep one"
            )
    for key in sorted(set(ACTIONS) - set(declared_actions)):
        problems.append(f"implementation of action '{key}' is not declared in manifest.yaml")
    declared_triggers = {t.key for t in manifest.triggers}
    for key in sorted(declared_triggers - set(TRIGGERS)):
        problems.append(f"trigger '{key}' has no implementation: add @trigger('{key}')")
    for key in sorted(set(TRIGGERS) - declared_triggers):
        problems.append(f"implementation of trigger '{key}' is not declared in manifest.yaml")
    for ds in manifest.dataSources:
        if ds.type not in DATASOURCE_KINDS:
            problems.append(f"data source '{ds.key}' is a {ds.type}, which nothing implements")
    for kind, table, protocol in (
        ("action", ACTIONS, ActionImpl),
        ("trigger", TRIGGERS, Trigger),
        ("data source kind", DATASOURCE_KINDS, DataSourceKind),
    ):
        for key, impl in sorted(table.items()):
            problems += [f"{kind} '{key}' {p}" for p in contract_problems(impl, protocol)]
    if problems:
        raise ManifestError("manifest and implementations disagree:\n  " + "\n  ".join(problems))
