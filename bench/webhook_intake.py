"""Benchmark: signed webhook intake under uvicorn against a bare Starlette endpoint.

Both servers are started the same way (uvicorn, one process, no access log,
asyncio's event loop as under ``pdc serve``) on 127.0.0.1 in the same run. The
runtime deploys an instance against a local PagerDuty stand-in, so its
deliveries carry real ``X-PagerDuty-Signature`` headers under the secret that
deploy received. The runtime serves as
``PDC_ROLE=web`` (verify, record, enqueue, answer) and its flows run in separate
``pdc serve --role worker`` processes, started only for the phase that runs
flows: on a machine of a few cores, runs going on at the same time would measure
how fast flows run (tens of milliseconds of CPU each, a hundred times a bare
request), not intake. What it measures:

* throughput: ``wrk`` (one thread, 32 connections, each request an event of its
  own with its own ``X-Webhook-Id``), after 2 s of each not counted, interleaved:
  the bare endpoint; the runtime's ``intake`` flow (verify + record + 202; the
  flow selects another event, so no run is queued); and its ``full`` flow
  (``queued``: the record and its run's enqueue commit together). Requests per
  second and their ratio to bare (target >= 0.5);
* latency: an open-loop generator at a fixed 200 requests per second, timing
  each answer from its scheduled send time, after 2 s of the same not counted;
  p50 and p99 (target p99 < 100 ms) for the same two flows and bare;
* during a slow deploy: while another instance's deploy waits 6 s on PagerDuty
  (the stand-in holds its ``POST /webhook_subscriptions``), deliveries to the
  deployed instance at 50 per second; p99 and worst (target < 100 ms);
* full: with ``--flow-workers`` workers running, deliveries at 200/s to the flow
  whose step (``getIncident`` against the stand-in) runs for each: intake's p50
  and p99 while runs go on, for information, and how fast the workers finish
  them (runs/s). This phase goes first, and its runs are finished before the
  others start.

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
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit

import httpx2
from cryptography.fernet import Fernet

from pagerduty_connector.component.standin.server import (
    HOLD_PATH,
    SECRETS_PATH,
    free_port,
    serve,
)
from pagerduty_connector.runtime.cli import LOOP
from pagerduty_connector.runtime.worker import READY, READY_ENV
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
# Each request is an event of its own (the runtime runs a PagerDuty event once per flow,
# whatever its X-Webhook-Id): its id is "<prefix>-<n>", its signature the n-th line of a
# file written beforehand (HMAC is not at hand in wrk's Lua).
LUA = """
wrk.method = "POST"
local head, tail = {head}, {tail}
local signatures = {{}}
for line in io.lines("{signatures}") do signatures[#signatures + 1] = line end
local counter = 0
request = function()
  counter = counter + 1
  local headers = {{
    ["Content-Type"] = "application/json",
    ["X-PagerDuty-Signature"] = signatures[counter] or "v1=00",
    ["X-Webhook-Id"] = "{prefix}-" .. counter,
  }}
  return wrk.format(nil, nil, headers, head .. "{prefix}-" .. counter .. tail)
end
"""
# More requests than any wrk run here sends a second (bare Starlette: 5-9 thousand).
WRK_CEILING = 25_000
_ID = "EVENT-ID"


def event(event_id: str) -> bytes:
    """A delivery's body: ``incident.triggered`` whose event id names the delivery."""
    return json.dumps({"event": {**EVENT["event"], "id": event_id}}).encode()


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


def runtime_env(data: str, pagerduty_url: str, **extra: str) -> dict[str, str]:
    """The environment of a ``pdc serve`` under benchmark: its data in ``data``, a fresh
    key, the stand-in for PagerDuty and no request budget (the stand-in keeps none)."""
    return {
        **os.environ,
        "PDC_DATA_DIR": data,
        "PDC_ADMIN_TOKEN": ADMIN,
        "PDC_SECRET_KEY": Fernet.generate_key().decode(),
        "PAGERDUTY_API_URL": pagerduty_url,
        "PAGERDUTY_REQUESTS_PER_MINUTE": "0",
        **extra,
    }


def _serve(kind: str, port: int) -> None:
    """Child process: run the runtime or the bare endpoint under uvicorn."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    quiet = {"log_level": "warning", "access_log": False}
    if kind == "runtime":
        from pagerduty_connector.runtime.app import create_app
        from pagerduty_connector.runtime.server import uvicorn_config
        from pagerduty_connector.runtime.settings import load_settings

        settings = load_settings()
        # Served as pdc serve serves it (its guard against slow clients included).
        config = uvicorn_config(create_app(settings), settings, "127.0.0.1", port, LOOP, **quiet)
        uvicorn.Server(config).run()
        return

    async def accept(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "received"}, status_code=202)

    app = Starlette(routes=[Route("/webhooks/{instance}/{flow}", accept, methods=["POST"])])
    # Both on the loop ``pdc serve`` runs on (uvicorn would pick uvloop where it is
    # installed, as it is with the dev extras).
    uvicorn.run(app, host="127.0.0.1", port=port, loop=LOOP, **quiet)


def _start(kind: str, env: dict[str, str], port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
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


def _start_workers(count: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` flow workers (``pdc serve --role worker``, as an operator would
    run them beside ``PDC_ROLE=web``) and wait until each says it is ready."""
    workers = []
    for n in range(count):
        read, write = os.pipe()
        command = [sys.executable, "-m", "pagerduty_connector.runtime.cli", "serve"]
        process = subprocess.Popen(
            [*command, "--role", "worker"],
            env={**env, "PDC_EXECUTOR_ID": f"bench-worker-{n}", READY_ENV: str(write)},
            pass_fds=(write,),
        )
        os.close(write)
        workers.append(process)
        with os.fdopen(read, "rb") as said:
            if said.read(len(READY)) != READY:
                _stop(workers)
                raise SystemExit("a flow worker exited before it was ready (its log is above)")
    return workers


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=60)


def _wrk(url: str, secret: str, seconds: int, connections: int) -> float:
    """Requests per second ``wrk`` sustained for ``seconds``, each an event of its own
    signed under ``secret``."""
    prefix = uuid.uuid4().hex
    head, tail = event(_ID).decode().split(_ID)
    ceiling = WRK_CEILING * seconds
    with ExitStack() as stack:
        signatures = stack.enter_context(tempfile.NamedTemporaryFile("w", suffix=".txt"))
        # Signed as the script sends them: the same head and tail around each id.
        signatures.writelines(
            sign(f"{head}{prefix}-{n}{tail}".encode(), secret) + "\n" for n in range(1, ceiling + 1)
        )
        signatures.flush()
        script = stack.enter_context(tempfile.NamedTemporaryFile("w", suffix=".lua"))
        script.write(
            LUA.format(
                head=json.dumps(head),
                tail=json.dumps(tail),
                signatures=signatures.name,
                prefix=prefix,
            )
        )
        script.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{errors.group(1)} requests to {url} were refused:\n{out}")
    sent = re.search(r"(\d+) requests in", out)
    assert sent, out
    if int(sent.group(1)) > ceiling:  # past the signed ones: duplicates, or refused
        raise SystemExit(f"wrk sent more than {ceiling} requests; raise WRK_CEILING")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


class _Connections:
    """Keep-alive HTTP/1.1 connections to one server, for the fixed-rate generator.

    Written on asyncio streams rather than an HTTP client library: at 200 requests per
    second httpx2 cost the generator most of a core, on the machine whose cores the
    servers under test need (on 2 cores that alone put PostgreSQL intake's p50 at
    60-100 ms). Here a request is one prepared write and two reads (~0.1 ms). Answers
    are read by their ``Content-Length``, as uvicorn frames both servers' JSON answers;
    a chunked answer is not understood.
    """

    # Shorter than uvicorn's 5 s keep-alive, so no request races a server-side close.
    IDLE_LIMIT = 2.0

    def __init__(self, url: str) -> None:
        parsed = urlsplit(url)
        self.host, self.port, self.path = parsed.hostname or "", parsed.port or 80, parsed.path
        self._idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []

    def request(self, body: bytes, headers: dict[str, str]) -> bytes:
        """A POST of ``body`` to the URL's path, as bytes on the wire."""
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one prepared request on an idle connection (or a new one): the status
        code and body of the answer."""
        while self._idle:
            used, reader, writer = self._idle.pop()
            if time.monotonic() - used < self.IDLE_LIMIT:
                break
            writer.close()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        content = await reader.readexactly(int(length.group(1)) if length else 0)
        self._idle.append((time.monotonic(), reader, writer))
        return int(head[9:12]), content

    def close(self) -> None:
        """Close every idle connection."""
        for _, _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _fixed_rate(
    url: str, secret: str, rate: int = 200, seconds: int = 10, warm_up: int = 0
) -> list[float]:
    """Seconds from each request's scheduled time to its answer, at ``rate`` per second,
    after ``warm_up`` seconds at that rate that are not counted; each request an event of
    its own signed under ``secret``."""
    latencies: list[float] = []
    connections = _Connections(url)
    prefix = uuid.uuid4().hex

    async def one(n: int, due: float) -> None:
        name = f"rate-{prefix}-{n}"
        body = event(name)
        headers = {
            "Content-Type": "application/json",
            "X-PagerDuty-Signature": sign(body, secret),
            "X-Webhook-Id": name,
        }
        request = connections.request(body, headers)
        status, content = await connections.send(request)
        if n >= rate * warm_up:
            latencies.append(time.perf_counter() - due)
        if status != 202:
            raise SystemExit(f"{url} answered {status}: {content.decode(errors='replace')}")

    await open_loop(connections, rate * (warm_up + seconds), rate, one, time.perf_counter)
    return latencies


async def open_loop(
    connections: _Connections,
    count: int,
    rate: float,
    one: Callable[[int, float], Awaitable[None]],
    clock: Callable[[], float],
) -> float:
    """Open loop: start ``one(n, due)`` for each of ``count`` requests, the n-th due at
    ``rate`` per second by ``clock`` whether or not the ones before were answered; then
    close the connections. When the first was due."""
    start = clock() + 0.1
    tasks = []
    try:
        for n in range(count):
            due = start + n / rate
            await asyncio.sleep(max(0.0, due - clock()))
            tasks.append(asyncio.create_task(one(n, due)))
        await asyncio.gather(*tasks)
    finally:
        connections.close()
    return start


def _during_slow_deploy(
    api: httpx2.Client, pagerduty_url: str, url: str, secret: str
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
    latencies = asyncio.run(_fixed_rate(url, secret, rate=50, seconds=4))
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
    parser.add_argument("--seconds", type=int, default=6, help="length of each wrk run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved wrk runs per server (more, shorter runs: a steadier median on a "
        "machine whose speed drifts)",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--flow-workers",
        type=int,
        default=1,
        help="worker processes that run the flows in the full phase (at least 1)",
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
    if args.flow_workers < 1:
        parser.error("--flow-workers: at least 1 (the runtime serves only; workers run flows)")
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
        env = runtime_env(data, pagerduty_url)
        if args.database == "postgresql":
            from tests.support.postgres import postgres_server

            env["PDC_DATABASE_URL"] = stack.enter_context(postgres_server(fsync=True))
        port = free_port()
        web = {**env, "PDC_ROLE": "web", "PDC_PUBLIC_URL": f"http://127.0.0.1:{port}"}
        runtime, runtime_base = _start("runtime", web, port)
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
            runtime_url = f"{runtime_base}/webhooks/bench"
            bare_url = f"{bare_base}/webhooks/bench/intake"
            targets = {
                "bare": (bare_url, "bare checks none"),
                "runtime": (f"{runtime_url}/intake", secrets["intake"]),
                "queued": (f"{runtime_url}/full", secrets["full"]),
            }
            latency: dict[str, list[float]] = {}
            if "full" in phases:  # first, and finished: the others measure intake alone
                workers = _start_workers(args.flow_workers, env)
                try:
                    began = time.perf_counter()
                    url, secret = targets["queued"]
                    latency["full"] = asyncio.run(_fixed_rate(url, secret))
                    drained = _drained(api, len(latency["full"]), began)
                finally:
                    _stop(workers)

            # Which phases need each target's wrk rounds (bare is every ratio's baseline).
            wanted = {
                "bare": {"throughput", "queued"},
                "runtime": {"throughput"},
                "queued": {"queued"},
            }
            measured = [key for key, needed in wanted.items() if phases & needed]
            rates: dict[str, list[float]] = {key: [] for key in ("runtime", "bare", "queued")}
            for key in measured:  # unmeasured warm-up: caches, prepared statements
                _wrk(*targets[key], 2, args.connections)
            for _ in range(args.rounds):
                for key in measured:
                    rates[key].append(_wrk(*targets[key], args.seconds, args.connections))

            if "latency" in phases:
                for key in ("runtime", "queued", "bare"):
                    latency[key] = asyncio.run(_fixed_rate(*targets[key], warm_up=2))
            if "deploy" in phases:
                latency["deploying"] = _during_slow_deploy(api, pagerduty_url, *targets["runtime"])
        finally:
            _stop([runtime, bare])

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
        ("p50 ms at 200/s", ms("runtime", 0.5), ms("bare", 0.5), None),
        ("p99 ms at 200/s", ms("runtime", 0.99), ms("bare", 0.99), None),
        ("p50 ms at 200/s, run queued", ms("queued", 0.5), ms("bare", 0.5), None),
        ("p99 ms at 200/s, run queued", ms("queued", 0.99), ms("bare", 0.99), None),
        ("p99 ms, another deploy slow", ms("deploying", 0.99), "", None),
        ("worst ms, another deploy slow", ms("deploying", 1.0), "", None),
        ("p50 ms at 200/s, runs going on", ms("full", 0.5), "", None),
        ("p99 ms at 200/s, runs going on", ms("full", 0.99), "", None),
    ]
    print(
        f"webhook intake ({args.database}; runtime PDC_ROLE=web, {args.flow_workers} flow "
        f"workers in the full phase), wrk: 1 thread, {args.connections} connections, "
        f"{args.seconds} s x {args.rounds} runs each, interleaved"
    )
    print(f"{'':34}{'runtime':>12}{'bare':>12}{'ratio':>8}")
    for label, left, right, ratio in rows:
        print(f"{label:34}{left:>12}{right:>12}{'' if ratio is None else f'{ratio:.2f}':>8}")
    for key in ("runtime", "queued"):
        for n, (left, right) in enumerate(zip(rates[key], rates["bare"], strict=False)):
            label = f"  {'queued ' if key == 'queued' else ''}run {n + 1}"
            print(f"{label:34}{left:>12.0f}{right:>12.0f}{left / right:>8.2f}")
    if "full" in latency:
        done, total, seconds = drained
        print(
            f"runs of the flow with a step: {done} of {total} succeeded, the last "
            f"{seconds:.1f} s after the first delivery ({done / seconds:.0f} runs/s)"
        )
    print("targets: ratio >= 0.5, p99 < 100 ms; during another instance's slow deploy < 100 ms")


if __name__ == "__main__":
    main()
