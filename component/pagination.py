"""Fetch every page of a PagerDuty list endpoint (classic offset pagination).

The first page asks for ``total``. When PagerDuty reports it, the remaining
pages are requested concurrently (bounded by the client's page concurrency and
request budget); otherwise pages are read one after another, advancing
``offset`` by the items received. Either way reading stops when ``more`` is
false or a page is empty, and never goes past PagerDuty's ``offset + limit <=
10000`` cap: hitting it adds a warning instead of truncating silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from pagerduty_connector.component.client import PagerDutyClient
from pagerduty_connector.component.errors import PagerDutyError

PAGE_SIZE = 100
MAX_RECORDS = 10_000  # PagerDuty rejects offset + limit > 10000

Progress = Callable[[int, int | None], None]


@dataclass
class PageResult:
    """Every item read, de-duplicated by ``id``, and any warnings."""

    items: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    total: int | None = None
    requests: int = 0


def _cap_warning(path: str, fetched: int, total: int | None) -> str:
    of_total = f" of {total}" if total is not None else ""
    return (
        f"GET {path}: PagerDuty returns at most {MAX_RECORDS} records through offset "
        f"pagination; {fetched}{of_total} were fetched. Narrow the query (for example "
        "since/until or filters) to read the rest."
    )


class _Pager:
    def __init__(
        self,
        client: PagerDutyClient,
        path: str,
        collection: str,
        params: list[tuple[str, Any]],
        progress: Progress | None,
    ) -> None:
        self.client = client
        self.path = path
        self.collection = collection
        self.params = [(k, v) for k, v in params if k not in ("limit", "offset", "total")]
        self.progress = progress
        self.result = PageResult()
        self.fetched = 0

    async def page(self, offset: int, total: bool = False) -> tuple[list[Any], bool, int | None]:
        """One page: its items, PagerDuty's ``more`` and, when asked, ``total``."""
        params = [*self.params, ("limit", PAGE_SIZE), ("offset", offset)]
        if total:
            params.append(("total", True))
        body = await self.client.request_json("GET", self.path, params=params)
        self.result.requests += 1
        if not isinstance(body, dict) or not isinstance(body.get(self.collection), list):
            raise PagerDutyError(
                f"expected a '{self.collection}' array in the response",
                method="GET",
                path=self.path,
            )
        items = body[self.collection]
        self.fetched += len(items)
        if self.progress:
            self.progress(self.fetched, self.result.total)
        reported = body.get("total")
        return items, bool(body.get("more")), reported if isinstance(reported, int) else None

    async def run(self) -> PageResult:
        """Every page: the first with ``total``, the rest concurrently, then ``more``."""
        items, more, total = await self.page(0, total=True)
        self.result.total = total
        pages: list[list[Any]] = [items]
        offset = len(items)
        if more and items and total is not None:
            offsets = list(range(PAGE_SIZE, min(total, MAX_RECORDS), PAGE_SIZE))
            if offsets:
                fetched = await self._concurrent(offsets)
                pages += [page_items for page_items, _ in fetched]
                items, more = fetched[-1]
                del fetched  # the pages are in ``pages`` now; _flatten frees them one by one
                offset = offsets[-1] + len(items)
        # The total is a snapshot: keep reading while the last page still says "more".
        while more and items and offset + PAGE_SIZE <= MAX_RECORDS:
            items, more, _ = await self.page(offset)
            pages.append(items)
            offset += len(items)
        self.result.items = _unique_by_id(_flatten(pages))
        if (more and items) or (total is not None and total > MAX_RECORDS):
            self.result.warnings.append(_cap_warning(self.path, len(self.result.items), total))
        return self.result

    async def _concurrent(self, offsets: list[int]) -> list[tuple[list[Any], bool]]:
        """The pages at ``offsets``, in order, read by ``page_concurrency`` workers.

        A few workers share one iterator instead of one task per page: finished tasks
        would keep their pages alive until the caller is done, and a failure cancels
        the pages still being read.
        """
        slots: list[tuple[list[Any], bool]] = [([], False)] * len(offsets)
        pending = iter(enumerate(offsets))

        async def worker() -> None:
            for index, offset in pending:
                items, more, _ = await self.page(offset)
                slots[index] = (items, more)

        workers = min(max(self.client.settings.page_concurrency, 1), len(offsets))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return slots


def _item_id(item: Any) -> Any:
    return item.get("id") if isinstance(item, dict) else None


def _flatten(pages: list[list[Any]]) -> list[Any]:
    """The pages' items in one list, emptying ``pages`` as it goes.

    The list is allocated at its final size and each page is dropped once copied:
    a growing list would briefly hold its old and new buffers at once, which is the
    peak of a fetch of thousands of items.
    """
    items: list[Any] = [None] * sum(len(page) for page in pages)
    position = 0
    pages.reverse()
    while pages:
        page = pages.pop()
        items[position : position + len(page)] = page
        position += len(page)
    return items


def _unique_by_id(items: list[Any]) -> list[Any]:
    """``items`` without repeats of an ``id`` (pages shift while they are read).

    Repeats are found by sorting the ids rather than hashing all of them: a sorted
    list of references costs a fraction of a set over every id, and only the ids
    that really repeat are then tracked while filtering.
    """
    ids: list[Any] = [None] * len(items)
    count = 0
    for item in items:
        key = _item_id(item)
        if key is not None:
            ids[count] = str(key)
            count += 1
    del ids[count:]
    ids.sort()
    repeated = {a for a, b in pairwise(ids) if a == b}
    del ids
    if not repeated:
        return items
    seen: set[str] = set()
    unique: list[Any] = []
    for item in items:
        key = _item_id(item)
        if key is not None and str(key) in repeated:
            if str(key) in seen:
                continue
            seen.add(str(key))
        unique.append(item)
    return unique


async def fetch_all(
    client: PagerDutyClient,
    path: str,
    collection: str,
    params: list[tuple[str, Any]] | None = None,
    progress: Progress | None = None,
) -> PageResult:
    """Read every page of ``path`` and return the items of ``collection``."""
    return await _Pager(client, path, collection, params or [], progress).run()
