"""A PagerDuty list endpoint for respx: offset paging over given items, with probes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2


class PagedList:
    """A PagerDuty list endpoint over ``items`` that records what it was asked."""

    def __init__(
        self,
        collection: str,
        items: list[dict[str, Any]],
        *,
        report_total: bool = True,
        page_cap: int | None = None,
        claimed_total: int | None = None,
        always_more: bool = False,
    ) -> None:
        self.collection = collection
        self.items = items
        self.report_total = report_total
        self.page_cap = page_cap
        self.claimed_total = claimed_total
        self.always_more = always_more
        self.offsets: list[int] = []
        self.limits: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        params = request.url.params
        limit, offset = int(params.get("limit", 25)), int(params.get("offset", 0))
        self.offsets.append(offset)
        self.limits.append(limit)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1
        if offset + limit > 10_000:
            return httpx2.Response(400, json={"error": {"message": "Offset too large"}})
        size = min(limit, self.page_cap or limit)
        page = self.items[offset : offset + size]
        total = self.claimed_total or len(self.items)
        body = {
            self.collection: page,
            "limit": limit,
            "offset": offset,
            "more": self.always_more or offset + len(page) < len(self.items),
            "total": total if self.report_total and params.get("total") == "true" else None,
        }
        return httpx2.Response(200, json=body)
