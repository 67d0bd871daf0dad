"""Benchmark: our fetch-all against ``pagerduty.RestApiV2Client.iter_all``.

Both read every incident from the same local server (a separate process on
127.0.0.1 that pages like PagerDuty) in the same run; wall time and peak Python
memory (tracemalloc) are printed side by side with the ratio.

    (a) 2 000 incidents, each page answered after 500 ms, our default request
        budget (960/min) in force; target: ours >= 5x faster.
    (b) 10 000 incidents, pages answered at once, budget lifted; target: ours no
        slower and using no more memory.

Each side runs once unmeasured, then ``runs`` times for time and ``runs`` times
under tracemalloc for memory; medians are printed.
Run from the repository root: ``python -m bench.fetch_all`` (needs ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
import tracemalloc
from typing import Any

from pagerduty_connector.component.client import ClientSettings, PagerDutyClient
from pagerduty_connector.component.pagination import fetch_all
from pagerduty_connector.component.standin.server import serve
from pagerduty_connector.connections import ConnectionConfig

TOKEN = "bench-token"


class Meter:
    """Wall time, or peak traced memory, of the measured region only.

    Clients are built before the region opens, so both sides are measured on the
    fetch itself and not on imports, SSL contexts or event-loop start-up. Time and
    memory come from separate runs: tracing every allocation slows a CPU-bound
    client far more than one that mostly waits, which would skew the times.
    """

    def __init__(self, trace: bool) -> None:
        self.trace = trace
        self.seconds = 0.0
        self.peak_mib = 0.0

    def __enter__(self) -> Meter:
        if self.trace:
            tracemalloc.start()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        if self.trace:
            self.peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()


def ours(url: str, per_minute: float | None, trace: bool) -> tuple[float, float, int]:
    """Seconds, peak MiB and item count of our fetch-all against ``url``."""

    async def go() -> tuple[float, float, int]:
        settings = ClientSettings(api_url=url, requests_per_minute=per_minute)
        async with PagerDutyClient(ConnectionConfig("apiKey", TOKEN), settings) as client:
            with Meter(trace) as meter:
                page = await fetch_all(client, "/incidents", "incidents")
            return meter.seconds, meter.peak_mib, len(page.items)

    return asyncio.run(go())


def baseline(url: str, trace: bool) -> tuple[float, float, int]:
    """Seconds, peak MiB and item count of ``pagerduty``'s ``iter_all`` against ``url``."""
    import pagerduty

    client = pagerduty.RestApiV2Client(TOKEN)
    # The library's `url` setter insists on https://; both clients talk plain HTTP to
    # the same loopback server here, so the stored base URL is set directly.
    client._url = url
    with Meter(trace) as meter:
        items = list(client.iter_all("incidents", page_size=100))
    client.close()
    return meter.seconds, meter.peak_mib, len(items)


def scenario(name: str, count: int, delay: float, per_minute: float | None, runs: int) -> dict:
    """Serve ``count`` incidents from a separate process and measure both sides there."""
    queue: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(queue, count, delay), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{queue.get(timeout=30)}"
    try:
        # One unmeasured run each first: one-off allocations (caches filled on first
        # use) would otherwise count against whichever side runs first.
        ours(url, per_minute, trace=False)
        baseline(url, trace=False)
        ours_runs, base_runs, ours_mem, base_mem = [], [], [], []
        for _ in range(runs):  # interleaved, so drift on a busy machine hits both sides
            ours_runs.append(ours(url, per_minute, trace=False))
            base_runs.append(baseline(url, trace=False))
        for _ in range(runs):
            ours_mem.append(ours(url, per_minute, trace=True))
            base_mem.append(baseline(url, trace=True))
    finally:
        server.terminate()
        server.join()
    for label, results in (
        ("ours", ours_runs + ours_mem),
        ("pagerduty.iter_all", base_runs + base_mem),
    ):
        if any(items != count for _, _, items in results):
            raise SystemExit(f"{name}: {label} read {results[0][2]} items, expected {count}")
    o_time = statistics.median(r[0] for r in ours_runs)
    b_time = statistics.median(r[0] for r in base_runs)
    o_mem = statistics.median(r[1] for r in ours_mem)
    b_mem = statistics.median(r[1] for r in base_mem)
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
        scenario("(b) 10000 incidents, instant pages, no budget", 10_000, 0.0, None, runs=9),
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
