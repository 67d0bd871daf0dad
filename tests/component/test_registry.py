"""The registry: code implementations tied to the manifest, and their contracts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pagerduty_connector.component import registry
from pagerduty_connector.component.contracts import Trigger, contract_problems
from pagerduty_connector.component.errors import ManifestError
from pagerduty_connector.component.manifest import load_manifest, parse_manifest
from pagerduty_connector.component.registry import check_implementations
from pagerduty_connector.triggers.webhook import WebhookTrigger
from tests.support.manifests import action_of, raw_manifest


@pytest.fixture
def clean_registry() -> Iterator[None]:
    tables = (registry.ACTIONS, registry.TRIGGERS, registry.DATASOURCE_KINDS)
    saved = [dict(table) for table in tables]
    yield
    for table, kept in zip(tables, saved, strict=True):
        table.clear()
        table.update(kept)


def test_code_action_without_implementation_fails_fast(clean_registry: None) -> None:
    data = raw_manifest()
    del action_of(data, "getIncident")["request"]
    with pytest.raises(ManifestError, match=r"action 'getIncident' declares no request and has no"):
        check_implementations(parse_manifest(data))


def test_undeclared_implementations_fail_fast(clean_registry: None) -> None:
    async def stray(ctx: Any, inputs: Any) -> dict[str, Any]:
        return {}

    registry.action("listEverything")(stray)
    with pytest.raises(ManifestError, match="action 'listEverything' is not declared"):
        check_implementations(load_manifest())


def test_trigger_without_implementation_fails_fast(clean_registry: None) -> None:
    check_implementations(load_manifest())  # loads every implementation module first
    del registry.TRIGGERS["serviceTrigger"]
    registry.load_implementations()  # already imported: does not re-register
    with pytest.raises(ManifestError, match="trigger 'serviceTrigger' has no implementation"):
        check_implementations(load_manifest())


class Unsigned:
    """A trigger someone wrote without ``verify``: it would accept unsigned deliveries."""

    key = "serviceTrigger"
    inner = WebhookTrigger("serviceTrigger", "service")
    check, subscription, deploy = inner.check, inner.subscription, inner.deploy
    teardown, output, skip_reason = inner.teardown, inner.output, inner.skip_reason


def test_a_trigger_without_verify_fails_at_startup(clean_registry: None) -> None:
    check_implementations(load_manifest())
    registry.TRIGGERS["serviceTrigger"] = Unsigned()  # type: ignore[assignment]
    with pytest.raises(ManifestError, match="trigger 'serviceTrigger' has no method 'verify'"):
        check_implementations(load_manifest())


def test_an_action_that_is_not_async_or_takes_other_parameters_fails(
    clean_registry: None,
) -> None:
    check_implementations(load_manifest())

    def blocking(ctx: Any, inputs: Any) -> dict[str, Any]:
        return {}

    async def other(context: Any, values: Any, extra: Any) -> dict[str, Any]:
        return {}

    registry.ACTIONS["sendEvent"] = blocking  # type: ignore[assignment]
    registry.ACTIONS["sendChangeEvent"] = other  # type: ignore[assignment]
    with pytest.raises(ManifestError) as info:
        check_implementations(load_manifest())
    assert "action 'sendEvent' '__call__' must be async" in str(info.value)
    assert (
        "action 'sendChangeEvent' '__call__' takes (context, values, extra), "
        "the contract says (ctx, inputs)"
    ) in str(info.value)


def test_every_registered_implementation_fulfils_its_contract() -> None:
    check_implementations(load_manifest())
    assert {key: contract_problems(t, Trigger) for key, t in registry.TRIGGERS.items()} == {
        "incidentsTrigger": [],
        "serviceTrigger": [],
    }


def test_a_sync_method_where_the_contract_is_async_is_named() -> None:
    class SyncDeploy(WebhookTrigger):
        def deploy(self, client: Any, desired: Any, held: Any, owned: Any) -> Any:  # type: ignore[override]
            return None

    problems = contract_problems(SyncDeploy("k", "incident"), Trigger)
    assert problems == ["'deploy' must be async"]
