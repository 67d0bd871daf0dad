"""fetchAll and data sources: every page, the 10 000 cap, de-duplication, concurrency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest
import respx

from pagerduty_connector.component.client import ClientSettings
from pagerduty_connector.component.errors import PagerDutyError
from pagerduty_connector.component.pagination import fetch_all
from tests.conftest import REST, FakeClock, MakeCtx
from tests.support.paging import PagedList


def incidents(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"P{i:05d}", "title": f"incident {i}"} for i in range(start, start + n)]


async def test_fetch_all_reads_every_page(pd: respx.MockRouter, run: Callable[..., Any]) -> None:
    server = PagedList("incidents", incidents(250))
    pd.get(f"{REST}/incidents").mock(side_effect=server)
    result = await run("listIncidents", {"fetchAll": True, "limit": "5", "statuses": "triggered"})
    assert result == {"data": {"incidents": incidents(250)}}
    assert sorted(server.offsets) == [0, 100, 200]
    assert set(server.limits) == {100}
    requests = pd.calls
    assert all(("statuses[]", "triggered") in c.request.url.params.multi_items() for c in requests)


async def test_fetch_all_off_honours_limit_offset_total(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    server = PagedList("services", incidents(250))
    pd.get(f"{REST}/services").mock(side_effect=server)
    result = await run("listServices", {"fetchAll": "false", "limit": "10", "offset": "20"})
    assert server.offsets == [20] and server.limits == [10]
    assert len(result["data"]["services"]) == 10 and result["data"]["more"] is True
    call = pd.calls.last.request
    assert ("total", "true") not in call.url.params.multi_items()


async def test_without_total_offset_advances_by_items_received(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    server = PagedList("users", incidents(130), report_total=False, page_cap=40)
    pd.get(f"{REST}/users").mock(side_effect=server)
    result = await run("listUsers", {"fetchAll": True})
    assert server.offsets == [0, 40, 80, 120]
    assert len(result["data"]["users"]) == 130


async def test_cap_at_ten_thousand_records_warns(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    server = PagedList("incidents", incidents(12_000))
    pd.get(f"{REST}/incidents").mock(side_effect=server)
    result = await run("listIncidents", {"fetchAll": True})
    assert len(result["data"]["incidents"]) == 10_000
    assert max(server.offsets) == 9_900 and len(server.offsets) == 100
    assert result["warnings"] == [
        "GET /incidents: PagerDuty returns at most 10000 records through offset pagination; "
        "10000 of 12000 were fetched. Narrow the query (for example since/until or filters) "
        "to read the rest."
    ]


async def test_cap_applies_without_a_total_too(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    server = PagedList("notifications", incidents(10_500), report_total=False)
    pd.get(f"{REST}/notifications").mock(side_effect=server)
    result = await run(
        "listNotifications",
        {"fetchAll": True, "since": "2024-01-01T00:00:00Z", "until": "2024-02-01T00:00:00Z"},
    )
    assert max(server.offsets) == 9_900
    assert len(result["data"]["notifications"]) == 10_000
    assert "10000 were fetched" in result["warnings"][0]


async def test_empty_page_stops_even_when_more_is_claimed(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    server = PagedList("priorities", incidents(150), report_total=False, always_more=True)
    pd.get(f"{REST}/priorities").mock(side_effect=server)
    result = await run("listPriorities", {"fetchAll": True})
    assert server.offsets == [0, 100, 150]
    assert len(result["data"]["priorities"]) == 150
    assert "warnings" not in result


async def test_items_repeated_across_pages_are_deduplicated(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    shifted = incidents(100) + incidents(50, start=90)  # a page shifted while reading
    pd.get(f"{REST}/incidents").mock(side_effect=PagedList("incidents", shifted))
    result = await run("listIncidents", {"fetchAll": True})
    ids = [i["id"] for i in result["data"]["incidents"]]
    assert ids == [f"P{i:05d}" for i in range(140)]


async def test_total_growing_while_reading_is_followed(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    server = PagedList("incidents", incidents(350), claimed_total=210)
    pd.get(f"{REST}/incidents").mock(side_effect=server)
    result = await run("listIncidents", {"fetchAll": True})
    assert len(result["data"]["incidents"]) == 350
    assert sorted(server.offsets) == [0, 100, 200, 300]


async def test_pages_run_concurrently_within_the_bound(
    pd: respx.MockRouter, make_ctx: MakeCtx
) -> None:
    server = PagedList("incidents", incidents(2_000))
    pd.get(f"{REST}/incidents").mock(side_effect=server)
    ctx = make_ctx(settings=ClientSettings(page_concurrency=4, requests_per_minute=None))
    page = await fetch_all(ctx.client, "/incidents", "incidents")
    assert len(page.items) == 2_000 and page.requests == 20
    assert server.max_in_flight == 4


async def test_a_failing_page_fails_the_fetch_with_its_error_and_stops_the_rest(
    pd: respx.MockRouter, make_ctx: MakeCtx
) -> None:
    server = PagedList("incidents", incidents(2_000))

    async def failing(request: httpx2.Request) -> httpx2.Response:
        if request.url.params.get("offset") == "300":
            return httpx2.Response(403, json={"error": {"message": "Forbidden", "code": 2010}})
        return await server(request)

    pd.get(f"{REST}/incidents").mock(side_effect=failing)
    ctx = make_ctx(settings=ClientSettings(page_concurrency=2, requests_per_minute=None))
    with pytest.raises(PagerDutyError) as info:
        await fetch_all(ctx.client, "/incidents", "incidents")
    assert info.value.status == 403 and info.value.code == 2010
    # Workers stop at the failure: the pages after it are never asked for.
    assert max(server.offsets) <= 400 and len(server.offsets) < 20


async def test_fetch_all_respects_the_request_budget(
    pd: respx.MockRouter, make_ctx: MakeCtx, clock: FakeClock
) -> None:
    pd.get(f"{REST}/incidents").mock(side_effect=PagedList("incidents", incidents(500)))
    ctx = make_ctx(settings=ClientSettings(requests_per_minute=600, burst=2))
    page = await fetch_all(ctx.client, "/incidents", "incidents")
    assert page.requests == 5
    assert sum(clock.sleeps) == pytest.approx(0.3)  # 5 requests, burst 2, then 10 per second


async def test_progress_reports_items_and_total(pd: respx.MockRouter, make_ctx: MakeCtx) -> None:
    pd.get(f"{REST}/incidents").mock(side_effect=PagedList("incidents", incidents(230)))
    seen: list[tuple[int, int | None]] = []
    ctx = make_ctx()
    ctx.progress = lambda done, total: seen.append((done, total))
    await fetch_all(ctx.client, "/incidents", "incidents", progress=ctx.progress)
    assert seen[0] == (100, None) and seen[-1] == (230, 230) and len(seen) == 3


@pytest.mark.parametrize(
    ("key", "path", "collection", "label"),
    [
        ("selectIncident", "/incidents", "incidents", "title"),
        ("selectService", "/services", "services", "summary"),
        ("selectTemplate", "/templates", "templates", "name"),
        ("selectUser", "/users", "users", "name"),
    ],
)
async def test_data_sources_return_every_page_sorted(
    key: str,
    path: str,
    collection: str,
    label: str,
    pd: respx.MockRouter,
    run: Callable[..., Any],
) -> None:
    items = [{"id": f"X{i:03d}", label: f"item {(i * 37) % 240:03d}"} for i in range(240)]
    server = PagedList(collection, items)
    pd.get(REST + path).mock(side_effect=server)
    result = await run(key, {})
    options = result["result"]
    assert len(options) == 240 and len(server.offsets) == 3
    assert [o["label"] for o in options] == sorted(o["label"] for o in options)
    assert {o["key"] for o in options} == {i["id"] for i in items}
    first = next(o for o in options if o["key"] == "X001")
    assert first == {"label": "item 037", "key": "X001"}
