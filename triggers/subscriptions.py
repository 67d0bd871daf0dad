"""PagerDuty V3 webhook subscription housekeeping shared by triggers and actions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from component.client import PagerDutyClient
from component.errors import PagerDutyError
from component.pagination import fetch_all

COLLECTION = "webhook_subscriptions"


async def list_subscriptions(client: PagerDutyClient) -> list[dict[str, Any]]:
    """Every webhook subscription on the account, across all pages."""
    page = await fetch_all(client, "/webhook_subscriptions", COLLECTION)
    return [s for s in page.items if isinstance(s, dict)]


def delivery_url(subscription: dict[str, Any]) -> str | None:
    """The URL a subscription delivers to, if it is an HTTP delivery method."""
    method = subscription.get("delivery_method") or {}
    return method.get("url") if isinstance(method, dict) else None


async def delete_subscription(client: PagerDutyClient, subscription_id: str) -> bool:
    """Delete one subscription; ``False`` when PagerDuty says it is already gone."""
    try:
        await client.request("DELETE", f"/webhook_subscriptions/{quote(subscription_id, safe='')}")
    except PagerDutyError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def delete_subscriptions_for_urls(client: PagerDutyClient, urls: Iterable[str]) -> list[str]:
    """Delete every subscription delivering to one of ``urls``; return the ids removed."""
    wanted = set(urls)
    deleted: list[str] = []
    for sub in await list_subscriptions(client):
        sub_id = str(sub.get("id") or "")
        if delivery_url(sub) in wanted and sub_id and await delete_subscription(client, sub_id):
            deleted.append(sub_id)
    return deleted
