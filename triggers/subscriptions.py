"""PagerDuty V3 webhook subscription housekeeping shared by triggers and actions.

``sync_subscriptions`` makes PagerDuty hold exactly one subscription per flow of
an instance (created, updated, re-enabled or replaced as needed, and removed for
flows the instance no longer has), undoing what it created when any part fails.
``delete_subscriptions`` removes every subscription an instance owns; teardown
and ``deleteAllInstanceWebhooks`` both use it. Every listing reads all pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pagerduty_connector.component.client import PagerDutyClient
from pagerduty_connector.component.errors import DeployError, PagerDutyError
from pagerduty_connector.component.pagination import fetch_all
from pagerduty_connector.component.redact import get_logger

COLLECTION = "webhook_subscriptions"
log = get_logger("subscriptions")
UrlFilter = Callable[[str], bool]


@dataclass(frozen=True)
class Desired:
    """The subscription one flow needs."""

    flow: str
    url: str
    events: tuple[str, ...]
    description: str
    filter_type: str
    filter_id: str | None = None

    def filter(self) -> dict[str, str]:
        """The ``filter`` object PagerDuty expects (no id for the account filter)."""
        out = {"type": self.filter_type}
        if self.filter_id:
            out["id"] = self.filter_id
        return out

    def create_body(self) -> dict[str, Any]:
        """``POST /webhook_subscriptions`` body."""
        return {
            "webhook_subscription": {
                "type": "webhook_subscription",
                "delivery_method": {"type": "http_delivery_method", "url": self.url},
                "events": list(self.events),
                "description": self.description,
                "filter": self.filter(),
            }
        }

    def differences(self, existing: dict[str, Any]) -> dict[str, Any]:
        """The fields of an update that would bring ``existing`` in line (empty if none)."""
        changes: dict[str, Any] = {}
        if set(existing.get("events") or []) != set(self.events):
            changes["events"] = list(self.events)
        if (existing.get("description") or "") != self.description:
            changes["description"] = self.description
        current = existing.get("filter") or {}
        if current.get("type") != self.filter_type or (
            self.filter_id and current.get("id") != self.filter_id
        ):
            changes["filter"] = self.filter()
        if existing.get("active") is False:
            changes["active"] = True
        return changes


@dataclass(frozen=True)
class Held:
    """A subscription we created, with the signing secret PagerDuty gave us then."""

    flow: str
    subscription_id: str
    url: str
    secret: str


@dataclass
class SyncResult:
    """What a sync left in place, and what it did (for the deploy's answer)."""

    held: list[Held] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


async def list_subscriptions(client: PagerDutyClient) -> list[dict[str, Any]]:
    """Every webhook subscription on the account, across all pages."""
    page = await fetch_all(client, "/webhook_subscriptions", COLLECTION)
    return [s for s in page.items if isinstance(s, dict)]


def delivery_url(subscription: dict[str, Any]) -> str | None:
    """The URL a subscription delivers to, if it is an HTTP delivery method."""
    method = subscription.get("delivery_method") or {}
    return method.get("url") if isinstance(method, dict) else None


def _path(subscription_id: str, suffix: str = "") -> str:
    return f"/webhook_subscriptions/{quote(subscription_id, safe='')}{suffix}"


async def delete_subscription(client: PagerDutyClient, subscription_id: str) -> bool:
    """Delete one subscription; ``False`` when PagerDuty says it is already gone."""
    try:
        await client.request("DELETE", _path(subscription_id))
    except PagerDutyError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def delete_subscriptions(client: PagerDutyClient, owned: UrlFilter) -> list[str]:
    """Delete every subscription whose URL ``owned`` accepts; return the ids removed."""
    deleted: list[str] = []
    for sub in await list_subscriptions(client):
        url, sub_id = delivery_url(sub), str(sub.get("id") or "")
        if url and sub_id and owned(url) and await delete_subscription(client, sub_id):
            deleted.append(sub_id)
    return deleted


async def delete_subscriptions_for_urls(client: PagerDutyClient, urls: Iterable[str]) -> list[str]:
    """Delete every subscription delivering to one of ``urls``; return the ids removed."""
    wanted = set(urls)
    return await delete_subscriptions(client, wanted.__contains__)


async def undo_created(client: PagerDutyClient, created: Iterable[str]) -> list[str]:
    """Best-effort removal of subscriptions a failed deploy created; returns leftovers."""
    leftovers: list[str] = []
    for sub_id in created:
        try:
            await delete_subscription(client, sub_id)
        except PagerDutyError:
            leftovers.append(sub_id)
    return leftovers


async def _create(client: PagerDutyClient, want: Desired, result: SyncResult) -> None:
    answer = await client.request_json("POST", "/webhook_subscriptions", json=want.create_body())
    created = (answer or {}).get("webhook_subscription") or {}
    sub_id = str(created.get("id") or "")
    if sub_id:
        result.created.append(sub_id)
    secret = (created.get("delivery_method") or {}).get("secret")
    if not sub_id or not secret:
        raise DeployError("PagerDuty created the subscription without an id or signing secret")
    result.held.append(Held(want.flow, sub_id, want.url, secret))
    result.log.append(f"{want.flow}: created subscription {sub_id}")


async def _keep(
    client: PagerDutyClient, want: Desired, sub: dict[str, Any], held: Held, result: SyncResult
) -> None:
    changes = want.differences(sub)
    if changes:
        await client.request(
            "PUT", _path(held.subscription_id), json={"webhook_subscription": changes}
        )
        result.log.append(f"{want.flow}: updated {', '.join(sorted(changes))}")
    if (sub.get("delivery_method") or {}).get("temporarily_disabled"):
        await client.request("POST", _path(held.subscription_id, "/enable"))
        result.log.append(f"{want.flow}: re-enabled subscription {held.subscription_id}")
    result.held.append(Held(want.flow, held.subscription_id, want.url, held.secret))


async def sync_subscriptions(
    client: PagerDutyClient, desired: list[Desired], held: list[Held], owned: UrlFilter
) -> SyncResult:
    """Leave exactly one subscription per desired flow, and none for other owned URLs.

    A subscription we hold the secret for is updated in place; one we cannot verify
    (no secret) is deleted and recreated. If anything fails, the subscriptions this
    call created are deleted again and ``DeployError`` says what failed.
    """
    result = SyncResult()
    known = {h.subscription_id: h for h in held}
    step = "listing webhook subscriptions"
    try:
        existing = await list_subscriptions(client)
        wanted_urls = {d.url for d in desired}
        for want in desired:
            step = f"flow '{want.flow}'"
            matches = [s for s in existing if delivery_url(s) == want.url]
            keep = next((s for s in matches if str(s.get("id")) in known), None)
            for extra in matches:
                if extra is not keep:
                    step = f"flow '{want.flow}': deleting subscription {extra.get('id')}"
                    await delete_subscription(client, str(extra.get("id")))
                    result.log.append(f"{want.flow}: deleted unverifiable {extra.get('id')}")
            if keep is None:
                step = f"flow '{want.flow}': creating its webhook subscription"
                await _create(client, want, result)
            else:
                step = f"flow '{want.flow}': updating subscription {keep.get('id')}"
                await _keep(client, want, keep, known[str(keep.get("id"))], result)
        for sub in existing:
            url = delivery_url(sub)
            if url and owned(url) and url not in wanted_urls:
                step = f"deleting subscription {sub.get('id')} of a removed flow"
                await delete_subscription(client, str(sub.get("id")))
                result.log.append(f"deleted {sub.get('id')} ({url}): its flow is gone")
    except (PagerDutyError, DeployError) as exc:
        leftovers = await undo_created(client, result.created)
        undone = len(result.created) - len(leftovers)
        message = f"deploy failed at {step}: {exc}; deleted {undone} subscription(s) it created"
        if leftovers:
            message += f"; could not delete {', '.join(leftovers)}"
        log.warning("%s", message)
        raise DeployError(message) from None
    return result
