"""Benchmark: ``getIncident`` as a runtime step against a bare ``httpx2.AsyncClient`` GET.

Both send ``GET /incidents/{id}`` to the same local server (a separate process
on 127.0.0.1, answering at once, so our own overhead is not hidden behind
network latency) in the same run, over one kept-alive connection each. The step
goes through everything a flow step does: input cleaning, the generic
requester, the client's headers, budget and retry loop, and result shaping.
Target: median step time / median bare time <= 1.10.

Run from the repository root: ``python -m bench.step_overhead``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from typing import Any

import httpx2

from pagerduty_connector.component.client import ClientSettings, PagerDutyClient
from pagerduty_connector.component.context import StepContext
from pagerduty_connector.component.manifest import load_manifest
from pagerduty_connector.component.registry import check_implementations
from pagerduty_connector.component.requester import run_step
from pagerduty_connector.component.standin.server import serve
from pagerduty_connector.connections import ConnectionConfig

CALLS = 2_000
WARMUP = 200


async def _timed(call: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def measure(url: str) -> tuple[list[float], list[float]]:
    """Per-call seconds for the runtime step and for the bare GET, interleaved in blocks."""
    manifest = load_manifest()
    check_implementations(manifest)
    settings = ClientSettings(api_url=url, requests_per_minute=None)
    headers = {
        "Authorization": "Token token=bench",
        "Accept": "application/vnd.pagerduty+json;version=2",
        "Content-Type": "application/json",
    }
    async with (
        PagerDutyClient(ConnectionConfig("apiKey", "bench"), settings) as client,
        httpx2.AsyncClient(base_url=url, headers=headers) as bare,
    ):
        ctx = StepContext(manifest=manifest, client=client)

        async def step() -> None:
            await run_step(ctx, "getIncident", {"id": "Q1P5"})

        async def plain() -> None:
            response = await bare.get("/incidents/Q1P5")
            response.raise_for_status()
            response.json()

        await _timed(step, WARMUP)
        await _timed(plain, WARMUP)
        ours: list[float] = []
        base: list[float] = []
        for _ in range(10):  # alternate blocks so drift affects both sides alike
            ours += await _timed(step, CALLS // 10)
            base += await _timed(plain, CALLS // 10)
    return ours, base


def main() -> None:
    """Start the server, measure both sides and print the comparison."""
    queue: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(queue, 0, 0.0), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{queue.get(timeout=30)}"
        ours, base = asyncio.run(measure(url))
    finally:
        server.terminate()
        server.join()
    o, b = statistics.median(ours), statistics.median(base)
    o99 = statistics.quantiles(ours, n=100)[98]
    b99 = statistics.quantiles(base, n=100)[98]
    print(f"{'':28} {'median ms':>10} {'p99 ms':>8}")
    print(f"{'getIncident runtime step':28} {o * 1000:10.3f} {o99 * 1000:8.3f}")
    print(f"{'bare httpx2.AsyncClient GET':28} {b * 1000:10.3f} {b99 * 1000:8.3f}")
    print(f"ratio (median): {o / b:.3f}  target <= 1.10: {'met' if o / b <= 1.10 else 'NOT met'}")


if __name__ == "__main__":
    main()
