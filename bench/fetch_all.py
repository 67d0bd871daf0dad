"""Benchmark: our fetch-all against ``pagerduty.RestApiV2Client.iter_all``.

Both read every incident from the same local server (a separate process on
127.0.0.1 that pages like PagerDuty) in the same run; wall time and peak Python
memory (tracemalloc) are printed side by side with the ratio.

    (a) 2 000 incidents, each page answered after 500 ms, our default request
        budget (960/min) in force; target: ours >= 5x faster.
    (b) 10 000 incidents, pages answered at once, budget lifted; target: ours no
        slower and using no more memory.

Each side runs once unmeasured, then ``runs`` times; medians are printed.
Run: ``python bench/fetch_all.py`` (needs ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from component.client import ClientSettings, PagerDutyClient
from component.pagination import fetch_all
from connections import ConnectionConfig

TOKEN = "bench-token"


def _incident(n: int) -> dict[str, Any]:
    ref = {"type": "service_reference", "summary": "Checkout API"}
    return {
        "id": f"Q{n:012d}",
        "type": "incident",
        "summary": f"[#{n}] Disk is {n % 100}% full on db-{n % 7}",
        "title": f"Disk is {n % 100}% full on db-{n % 7}",
        "incident_number": n,
        "status": "triggered",
        "urgency": "high",
        "created_at": "2026-11-24T10:00:00Z",
        "service": {"id": f"PS{n % 50:05d}", **ref},
        "assignments": [{"at": "2026-11-24T10:00:00Z", "assignee": {"id": "PU00001"}}],
        "html_url": f"https://acme.pagerduty.com/incidents/Q{n:012d}",
    }


def serve(port_queue: Any, count: int, delay: float) -> None:
    """Serve ``GET /incidents`` with offset pagination, ``delay`` seconds per page."""
    incidents = [_incident(n) for n in range(count)]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            limit = int(query.get("limit", ["25"])[0])
            offset = int(query.get("offset", ["0"])[0])
            page = incidents[offset : offset + limit]
            body = json.dumps(
                {
                    "incidents": page,
                    "limit": limit,
                    "offset": offset,
                    "more": offset + len(page) < count,
                    "total": count if query.get("total") == ["true"] else None,
                }
            ).encode()
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_queue.put(server.server_address[1])
    server.serve_forever()


class Meter:
    """Wall time and peak traced memory of the measured region only.

    Clients are built before the region opens, so both sides are measured on the
    fetch itself and not on imports, SSL contexts or event-loop start-up.
    """

    def __enter__(self) -> Meter:
        tracemalloc.start()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()


def ours(url: str, per_minute: float | None) -> tuple[float, float, int]:
    async def go() -> tuple[float, float, int]:
        settings = ClientSettings(api_url=url, requests_per_minute=per_minute)
        async with PagerDutyClient(ConnectionConfig("apiKey", TOKEN), settings) as client:
            with Meter() as meter:
                page = await fetch_all(client, "/incidents", "incidents")
            return meter.seconds, meter.peak_mib, len(page.items)

    return asyncio.run(go())


def baseline(url: str) -> tuple[float, float, int]:
    import pagerduty

    client = pagerduty.RestApiV2Client(TOKEN)
    # The library's `url` setter insists on https://; both clients talk plain HTTP to
    # the same loopback server here, so the stored base URL is set directly.
    client._url = url
    with Meter() as meter:
        items = list(client.iter_all("incidents", page_size=100))
    client.close()
    return meter.seconds, meter.peak_mib, len(items)


def scenario(name: str, count: int, delay: float, per_minute: float | None, runs: int) -> dict:
    queue: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(queue, count, delay), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{queue.get(timeout=30)}"
    try:
        # One unmeasured run each first: one-off allocations (caches filled on first
        # use) would otherwise count against whichever side runs first.
        ours(url, per_minute)
        baseline(url)
        ours_runs = [ours(url, per_minute) for _ in range(runs)]
        base_runs = [baseline(url) for _ in range(runs)]
    finally:
        server.terminate()
        server.join()
    for label, results in (("ours", ours_runs), ("pagerduty.iter_all", base_runs)):
        if any(items != count for _, _, items in results):
            raise SystemExit(f"{name}: {label} read {results[0][2]} items, expected {count}")
    o_time = statistics.median(r[0] for r in ours_runs)
    b_time = statistics.median(r[0] for r in base_runs)
    o_mem = statistics.median(r[1] for r in ours_runs)
    b_mem = statistics.median(r[1] for r in base_runs)
    return {
        "scenario": name,
        "ours_s": o_time,
        "base_s": b_time,
        "speedup": b_time / o_time,
        "ours_mib": o_mem,
        "base_mib": b_mem,
        "mem_ratio": o_mem / b_mem,
    }


def main() -> None:
    """Run both scenarios and print the comparison."""
    rows = [
        scenario("(a) 2000 incidents, 500 ms/page, 960 req/min", 2_000, 0.5, 960.0, runs=1),
        scenario("(b) 10000 incidents, instant pages, no budget", 10_000, 0.0, None, runs=3),
    ]
    header = (
        f"{'scenario':48} {'ours s':>8} {'iter_all s':>10} {'speedup':>8} "
        f"{'ours MiB':>9} {'iter_all MiB':>12} {'mem ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['scenario']:48} {r['ours_s']:8.2f} {r['base_s']:10.2f} {r['speedup']:7.1f}x "
            f"{r['ours_mib']:9.1f} {r['base_mib']:12.1f} {r['mem_ratio']:9.2f}"
        )
    a, b = rows
    print()
    print(f"target (a) speedup >= 5.0x: {'met' if a['speedup'] >= 5 else 'NOT met'}")
    ok_b = b["speedup"] >= 1.0 and b["mem_ratio"] <= 1.0
    print(f"target (b) no slower, no more memory: {'met' if ok_b else 'NOT met'}")


if __name__ == "__main__":
    main()
