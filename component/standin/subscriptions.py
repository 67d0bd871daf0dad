"""A stateful stand-in for PagerDuty's ``/webhook_subscriptions`` API.

Shared by the respx-based tests and the local PagerDuty server: ``handle`` takes
a method, path, query and JSON body and returns ``(status, body)`` the way
PagerDuty does: the signing secret only in the create answer, offset pagination
capped at ``page_size``, 404 for unknown ids. ``fail`` makes chosen calls fail,
to test what a deploy leaves behind when PagerDuty errs half way.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

_ITEM = re.compile(r"^/webhook_subscriptions/(?P<id>[^/]+)(?:/(?P<verb>enable|ping))?$")
Answer = tuple[int, dict[str, Any] | None]


@dataclass
class Failure:
    """Answer ``status`` to the ``nth`` (1-based) call of ``method`` on a matching path."""

    method: str
    path: re.Pattern[str]
    status: int
    nth: int = 1
    seen: int = 0


@dataclass
class FakeSubscriptions:
    """PagerDuty's subscriptions, in memory."""

    page_size: int = 100
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    created: int = 0

    def fail(self, method: str, path: str, status: int = 500, nth: int = 1) -> None:
        """Make the ``nth`` future call of ``method`` on paths matching ``path`` fail."""
        self.failures.append(Failure(method, re.compile(path), status, nth))

    def add(self, url: str, events: list[str] | None = None, **extra: Any) -> str:
        """Put a subscription in place as someone else (or an earlier runtime) made it."""
        status, body = self._create(
            {
                "webhook_subscription": {
                    "delivery_method": {"type": "http_delivery_method", "url": url},
                    "events": events or ["incident.triggered"],
                    "filter": {"type": "account_reference"},
                    "description": "made elsewhere",
                    **extra,
                }
            }
        )
        assert status == 200 and body
        return str(body["webhook_subscription"]["id"])

    def urls(self) -> list[str]:
        """Delivery URLs of every subscription, sorted."""
        return sorted(s["delivery_method"]["url"] for s in self.subscriptions.values())

    def handle(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any] | None
    ) -> Answer:
        """Answer one request the way PagerDuty would."""
        for failure in self.failures:
            if failure.method == method and failure.path.search(path):
                failure.seen += 1
                if failure.seen == failure.nth:
                    return failure.status, {"error": {"code": 2001, "message": "Injected failure"}}
        if path == "/webhook_subscriptions":
            if method == "GET":
                return self._list(query)
            if method == "POST":
                return self._create(body or {})
        match = _ITEM.match(path)
        if match is None:
            return 404, {"error": {"code": 2100, "message": "Not Found"}}
        sub = self.subscriptions.get(match["id"])
        if sub is None:
            return 404, {"error": {"code": 5001, "message": "Webhook subscription not found"}}
        if match["verb"] == "enable" and method == "POST":
            sub["delivery_method"]["temporarily_disabled"] = False
            return 200, {"webhook_subscription": sub}
        if match["verb"] == "ping" and method == "POST":
            return 202, None  # PagerDuty queues a test delivery
        if match["verb"]:
            return 405, {"error": {"code": 2000, "message": "Method not allowed"}}
        if method == "GET":
            return 200, {"webhook_subscription": sub}
        if method == "PUT":
            changes = (body or {}).get("webhook_subscription") or {}
            sub.update({k: v for k, v in changes.items() if k in _UPDATABLE})
            return 200, {"webhook_subscription": sub}
        if method == "DELETE":
            del self.subscriptions[match["id"]]
            self.secrets.pop(match["id"], None)
            return 204, None
        return 405, {"error": {"code": 2000, "message": "Method not allowed"}}

    def _list(self, query: dict[str, str]) -> Answer:
        limit = min(int(query.get("limit", "25")), self.page_size)
        offset = int(query.get("offset", "0"))
        items = list(self.subscriptions.values())
        page = items[offset : offset + limit]
        return 200, {
            "webhook_subscriptions": page,
            "limit": limit,
            "offset": offset,
            "more": offset + len(page) < len(items),
            "total": len(items) if query.get("total") == "true" else None,
        }

    def _create(self, body: dict[str, Any]) -> Answer:
        wanted = body.get("webhook_subscription") or {}
        self.created += 1
        sub_id = f"PSUB{self.created:04d}"
        secret = secrets.token_urlsafe(32)
        self.secrets[sub_id] = secret
        method = wanted.get("delivery_method") or {}
        sub = {
            "id": sub_id,
            "type": "webhook_subscription",
            "active": wanted.get("active", True),
            "delivery_method": {
                "id": f"PDM{self.created:04d}",
                "type": "http_delivery_method",
                "url": method.get("url"),
                "secret": None,
                "temporarily_disabled": False,
                "custom_headers": [],
            },
            "description": wanted.get("description", ""),
            "events": list(wanted.get("events") or []),
            "filter": wanted.get("filter") or {"type": "account_reference"},
        }
        self.subscriptions[sub_id] = sub
        created = {**sub, "delivery_method": {**sub["delivery_method"], "secret": secret}}
        return 200, {"webhook_subscription": created}  # the spec documents 200, not 201


_UPDATABLE = {"events", "description", "filter", "active"}
