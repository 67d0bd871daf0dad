"""Benchmark: signed webhook intake under uvicorn against a bare Starlette endpoint.

Both servers are started the same way (uvicorn, one process, no access log) on
127.0.0.1 in the same run. The runtime deploys an instance against a local
PagerDuty stand-in, so its deliveries carry real ``X-PagerDuty-Signature``
headers under the secret that deploy received. What it measures:

* throughput: ``wrk`` (one thread, 32 connections, unique ``X-Webhook-Id`` per
  request) posting ``incident.triggered`` to the runtime's intake flow (verify +
  record + 202; the flow selects another event, so no run is queued) and to the
  bare endpoint, interleaved; requests per second and their ratio (target >= 0.5);
  last, the same to the flow with a step (``queued``: the record and its run's
  enqueue commit together), against the same bare figures;
* latency: an open-loop generator at a fixed 200 requests per second, timing
  each answer from its scheduled send time, after 2 s of the same not counted (a
  process's first seconds are slower); p50 and p99 (target p99 < 100 ms),
  for the same intake path, and, for information, for a flow that also runs its
  step (``getIncident`` against the local stand-in) for every delivery;
* during a slow deploy: while another instance's deploy waits 6 s on PagerDuty
  (the stand-in holds its ``POST /webhook_subscriptions``), deliveries to the
  deployed instance at 50 per second; p99 and worst (target < 100 ms).

The stand-in PagerDuty runs in its own process so that it does not compete with
the load generator for this process's interpreter.

Needs ``wrk`` (Debian: ``apt-get install wrk``). Run from the repository root:
``python -m bench.webhook_intake``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from typing import Any

import httpx2
from cryptography.fernet import Fernet

from pagerduty_connector.component.standin.server import (
    HOLD_PATH,
    SECRETS_PATH,
    free_port,
    serve,
)
from pagerduty_connector.triggers.signature import sign

ADMIN = "bench-admin-token"
EVENT = {
    "event": {
        "id": "01DEN0M0L0OCDNR0CDEVP4SRGH",
        "event_type": "incident.triggered",
        "resource_type": "incident",
        "occurred_at": "2026-11-24T10:30:00.000Z",
        "agent": None,
        "client": None,
        "data": {"id": "Q1P5", "type": "incident", "title": "Server is on fire"},
    }
}
LUA = """
wrk.method = "POST"
wrk.body = {body}
local counter = 0
request = function()
  counter = counter + 1
  local headers = {{
    ["Content-Type"] = "application/json",
    ["X-PagerDuty-Signature"] = "{signature}",
    ["X-Webhook-Id"] = "{prefix}-" .. counter,
  }}
  return wrk.format(nil, nil, headers, nil)
end
"""


PHASES = ("throughput", "latency", "deploy", "full", "queued")


def _flow(name: str, events: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {
            "type": "incidentsTrigger",
            "inputs": {
                "events": events,
                "webhookDescription": "bench",
                "filterType": "account_reference",
            },
        },
        "steps": [
            {
                "name": "incident",
                "action": "getIncident",
                "inputs": {"id": "{{ trigger.event.data.id }}"},
            }
        ],
    }


def _serve(kind: str, port: int) -> None:
    """Child process: run the runtime or the bare endpoint under uvicorn."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    if kind == "runtime":
        from pagerduty_connector.runtime.app import create_app
        from pagerduty_connector.runtime.settings import load_settings

        app = create_app(load_settings())
    else:

        async def accept(request: Request) -> JSONResponse:
            await request.body()
            return JSONResponse({"status": "received"}, status_code=202)

        app = Starlette(routes=[Route("/webhooks/{instance}/{flow}", accept, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _start(kind: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "bench.webhook_intake", "--serve", kind, "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx2.post(f"{base}/webhooks/none/none", content=b"{}", timeout=1)
            return process, base
        except httpx2.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the {kind} server did not start")


def _wrk(url: str, body: bytes, signature: str, seconds: int, connections: int) -> float:
    script = LUA.format(
        body=json.dumps(body.decode()), signature=signature, prefix=uuid.uuid4().hex
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", handle.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(handle.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{errors.group(1)} requests to {url} were refused:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


async def _fixed_rate(
    url: str, body: bytes, signature: str, rate: int = 200, seconds: int = 10, warm_up: int = 0
) -> list[float]:
    """Seconds from each request's scheduled time to its answer, at ``rate`` per second,
    after ``warm_up`` seconds at that rate that are not counted."""
    latencies: list[float] = []
    # Shorter than uvicorn's 5 s keep-alive, so no request races a server-side close.
    limits = httpx2.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=2)
    async with httpx2.AsyncClient(limits=limits, timeout=30) as client:

        async def one(n: int, due: float) -> None:
            headers = {
                "Content-Type": "application/json",
                "X-PagerDuty-Signature": signature,
                "X-Webhook-Id": f"rate-{uuid.uuid4().hex}-{n}",
            }
            answer = await client.post(url, content=body, headers=headers)
            if n >= rate * warm_up:
                latencies.append(time.perf_counter() - due)
            if answer.status_code != 202:
                raise SystemExit(f"{url} answered {answer.status_code}: {answer.text}")

        start = time.perf_counter() + 0.1
        tasks = []
        for n in range(rate * (warm_up + seconds)):
            due = start + n / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(n, due)))
        await asyncio.gather(*tasks)
    return latencies


def _during_slow_deploy(
    api: httpx2.Client, pagerduty_url: str, url: str, body: bytes, signature: str
) -> list[float]:
    """Latencies of deliveries at 50/s while another instance's deploy is held 6 s."""
    hold = {"method": "POST", "path": "/webhook_subscriptions", "seconds": 6}
    httpx2.post(f"{pagerduty_url}{HOLD_PATH}", json=hold).raise_for_status()
    slow = _flow("slow", ["incident.triggered"])
    deploying = threading.Thread(
        target=lambda: api.post(
            "/api/instances", json={"name": "other", "connection": "ops", "flows": [slow]}
        ).raise_for_status()
    )
    deploying.start()
    time.sleep(0.5)  # the deploy is now waiting on PagerDuty
    latencies = asyncio.run(_fixed_rate(url, body, signature, rate=50, seconds=4))
    assert deploying.is_alive(), "the deploy was not slow: the measurement would not count"
    deploying.join()
    return latencies


def _drained(api: httpx2.Client, total: int, began: float) -> tuple[int, int, float]:
    """Wait (up to 5 minutes) for the runs of flow ``full`` to finish: how many
    succeeded, of how many, and when the last finished, in seconds after ``began``."""
    deadline = time.monotonic() + 300
    while True:
        stats = api.get("/api/instances/bench/flows/full/stats", params={"hours": 2}).json()
        counts: dict[str, int] = {}
        for hour in stats["hours"]:
            for status, count in hour.items():
                if status != "hour":
                    counts[status] = counts.get(status, 0) + count
        finished = counts.get("succeeded", 0) + counts.get("failed", 0)
        if finished >= total or time.monotonic() > deadline:
            return counts.get("succeeded", 0), total, time.perf_counter() - began
        time.sleep(0.5)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    """Start both servers, deploy, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=["runtime", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved wrk runs per server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--flow-workers",
        type=int,
        default=1,
        help="PDC_FLOW_WORKERS: processes that run the flows (0: the serving process)",
    )
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the runtime's store (PostgreSQL is started from the machine's binaries)",
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated, of {', '.join(PHASES)} (default: all)",
    )
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if phases - set(PHASES):
        parser.error(f"--phases: unknown {', '.join(sorted(phases - set(PHASES)))}")
    if args.serve:
        _serve(args.serve, args.port)
        return
    if phases & {"throughput", "queued"} and shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for the throughput half: apt-get install wrk")

    ports: Any = multiprocessing.Queue()
    pagerduty = multiprocessing.Process(target=serve, args=(ports, 0, 0.0), daemon=True)
    pagerduty.start()
    pagerduty_url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    with ExitStack() as stack:
        stack.callback(pagerduty.terminate)
        data = stack.enter_context(tempfile.TemporaryDirectory())
        env = {
            **os.environ,
            "PDC_DATA_DIR": data,
            "PDC_ADMIN_TOKEN": ADMIN,
            "PDC_SECRET_KEY": Fernet.generate_key().decode(),
            "PAGERDUTY_API_URL": pagerduty_url,
            "PAGERDUTY_REQUESTS_PER_MINUTE": "0",
            "PDC_FLOW_CONCURRENCY": "32",
            "PDC_FLOW_WORKERS": str(args.flow_workers),
        }
        if args.database == "postgresql":
            from tests.support.postgres import postgres_server

            env["PDC_DATABASE_URL"] = stack.enter_context(postgres_server(fsync=True))
        runtime, runtime_base = _start("runtime", {**env, "PDC_PUBLIC_URL": "http://127.0.0.1"})
        bare, bare_base = _start("bare", env)
        try:
            api = httpx2.Client(
                base_url=runtime_base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
            )
            api.post(
                "/api/connections",
                json={"name": "ops", "type": "pagerduty-api-key", "config": {"apiKey": "u+bench"}},
            ).raise_for_status()
            flows = [_flow("intake", ["incident.resolved"]), _flow("full", ["incident.triggered"])]
            api.post(
                "/api/instances", json={"name": "bench", "connection": "ops", "flows": flows}
            ).raise_for_status()
            held = httpx2.get(f"{pagerduty_url}{SECRETS_PATH}").json()
            secrets = {url.rsplit("/", 1)[-1]: secret for url, secret in held.items()}
            body = json.dumps(EVENT).encode()

            signed = {flow: sign(body, secret) for flow, secret in secrets.items()}
            runtime_url = f"{runtime_base}/webhooks/bench"
            bare_url = f"{bare_base}/webhooks/bench/intake"

            def wrk(url: str, signature: str) -> float:
                return _wrk(url, body, signature, args.seconds, args.connections)

            rates: dict[str, list[float]] = {"runtime": [], "bare": [], "queued": []}
            for _ in range(args.rounds if phases & {"throughput", "queued"} else 0):
                rates["bare"].append(wrk(bare_url, "v1=00"))
                if "throughput" in phases:
                    rates["runtime"].append(wrk(f"{runtime_url}/intake", signed["intake"]))

            latency: dict[str, list[float]] = {}
            if "latency" in phases:
                latency["intake"] = asyncio.run(
                    _fixed_rate(f"{runtime_url}/intake", body, signed["intake"], warm_up=2)
                )
                latency["bare"] = asyncio.run(_fixed_rate(bare_url, body, "v1=00", warm_up=2))
            if "deploy" in phases:  # before the runs of "full", which would still be going on
                latency["deploying"] = _during_slow_deploy(
                    api, pagerduty_url, f"{runtime_url}/intake", body, signed["intake"]
                )
            if "full" in phases:
                began = time.perf_counter()
                latency["full"] = asyncio.run(
                    _fixed_rate(f"{runtime_url}/full", body, signed["full"])
                )
                drained = _drained(api, len(latency["full"]), began)
            # Last: the runs these deliveries queue are still going on when the bench ends.
            for _ in range(args.rounds if "queued" in phases else 0):
                rates["queued"].append(wrk(f"{runtime_url}/full", signed["full"]))
        finally:
            for process in (runtime, bare):
                process.terminate()
                process.wait(timeout=30)

    def ms(name: str, q: float) -> str:
        return f"{_percentile(latency[name], q):.1f}" if name in latency else "-"

    rows: list[tuple[str, str, str, float | None]] = []
    baseline = statistics.median(rates["bare"]) if rates["bare"] else 0.0
    for key, label in (("runtime", "record+202"), ("queued", "record+queue+202")):
        if rates[key]:
            ours = statistics.median(rates[key])
            ratio = ours / baseline
            rows.append((f"req/s (median), {label}", f"{ours:.0f}", f"{baseline:.0f}", ratio))
    rows += [
        ("p50 ms at 200/s", ms("intake", 0.5), ms("bare", 0.5), None),
        ("p99 ms at 200/s", ms("intake", 0.99), ms("bare", 0.99), None),
        ("p99 ms, another deploy slow", ms("deploying", 0.99), "", None),
        ("worst ms, another deploy slow", ms("deploying", 1.0), "", None),
        ("p50 ms at 200/s, step running", ms("full", 0.5), "", None),
        ("p99 ms at 200/s, step running", ms("full", 0.99), "", None),
    ]
    print(
        f"webhook intake ({args.database}, {args.flow_workers} flow workers), "
        f"wrk: 1 thread, {args.connections} connections, "
        f"{args.seconds} s x {args.rounds} runs each, interleaved"
    )
    print(f"{'':32}{'runtime':>14}{'bare':>14}{'ratio':>8}")
    for label, left, right, ratio in rows:
        print(f"{label:32}{left:>14}{right:>14}{'' if ratio is None else f'{ratio:.2f}':>8}")
    for key in ("runtime", "queued"):
        for n, (left, right) in enumerate(zip(rates[key], rates["bare"], strict=False)):
            label = f"  {'queued ' if key == 'queued' else ''}run {n + 1}"
            print(f"{label:32}{left:>14.0f}{right:>14.0f}{left / right:>8.2f}")
    if "full" in latency:
        done, total, seconds = drained
        print(
            f"runs of the flow with a step: {done} of {total} succeeded, the last "
            f"{seconds:.1f} s after the first delivery ({done / seconds:.0f} runs/s)"
        )
    print("targets: ratio >= 0.5, p99 < 100 ms; during another instance's slow deploy < 100 ms")


if __name__ == "__main__":
    main()
