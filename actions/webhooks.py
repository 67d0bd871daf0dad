"""``deleteAllInstanceWebhooks``: remove every subscription pointing at the instance."""

from __future__ import annotations

from typing import Any

from pagerduty_connector.component.context import StepContext
from pagerduty_connector.component.errors import InputError
from pagerduty_connector.component.inputs import CleanedInputs
from pagerduty_connector.component.registry import action
from pagerduty_connector.triggers.subscriptions import delete_subscriptions_for_urls

KEY = "deleteAllInstanceWebhooks"


@action(KEY)
async def delete_all_instance_webhooks(ctx: StepContext, inputs: CleanedInputs) -> dict[str, Any]:
    """Delete subscriptions whose URL is one of the instance's (all pages scanned)."""
    urls = {*(inputs.get("webhookUrls") or []), *ctx.webhook_urls.values()}
    if not urls:
        raise InputError(
            KEY,
            "webhookUrls",
            "no webhook URLs to match: run the step inside a deployed instance, "
            "or list the URLs in this input",
        )
    deleted = await delete_subscriptions_for_urls(ctx.client, urls)
    return {"data": {"data": "Action successfully completed.", "deleted": deleted}}
