"""Benchmark: how fast flows run, side by side with n8n and with bare DBOS.

The same two-step flow (read the incident, then post a note quoting the delivery's event
id) runs on each server against one instant stand-in PagerDuty (its own process, not
counted), fed by an open-loop generator at fixed rates (50, 100, 200 deliveries per
second by default, 10 s each). Servers, each started once with its default settings and
kept for every round (rounds interleaved: every rate on every server, then again):

* ``pdc`` -- ``pdc serve`` as the README starts it (SQLite in a fresh folder, or
  ``--database postgresql``): deliveries signed as PagerDuty signs them, verified,
  recorded and run durably. Only PagerDuty's request budget is lifted
  (``PAGERDUTY_REQUESTS_PER_MINUTE=0``): the stand-in has none to respect, and n8n
  keeps no budget.
* ``dbos`` -- the limit as the engine is used: a bare Starlette endpoint that starts a
  DBOS workflow of the same two HTTP steps per delivery (no queue, no verification, no
  record of ours), on the same kind of database.
* ``n8n`` (``--peer n8n``) -- n8n pinned at ``N8N_VERSION``, installed from npm into
  ``~/.cache/pdc-bench`` on first use, in regular mode on SQLite: Webhook (answer on
  receipt) -> HTTP Request GET -> HTTP Request POST.

For each round: deliveries answered per second and the answer's p50/p99 (from each
delivery's scheduled send); executions finished per second and end-to-end p50/p99,
both read at the stand-in (when each delivery's note arrived), so every server is timed
the same way from outside; the drain (last note after the last send); CPU per execution
of the server's process tree (/proc, from the round's first send to its last note); and
the tree's peak resident memory. Each figure is printed with its ratio to n8n's (or, with
no peer, to bare DBOS's), the issue's targets beside them.

Run from the repository root: ``python -m bench.flow_throughput [--peer n8n]
[--database sqlite|postgresql|both] [--rates 50,100,200] [--seconds 10] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from bench.webhook_intake import ADMIN, _Connections, event, open_loop, runtime_env
from pagerduty_connector.component.standin.server import (
    REQUESTS_PATH,
    SECRETS_PATH,
    free_port,
    serve,
)
from pagerduty_connector.triggers.signature import sign
from tests.support.runtime import FLOW as EXAMPLE_FLOW

N8N_VERSION = "2.8.4"
ID = "benchStorm0000001"  # the n8n workflow's id
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pdc-bench"

API_KEY = "u+bench"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# The flow, in our language: what the n8n workflow and the bare DBOS workflow also do:
# the tests' example flow (read the incident, post a note), the note quoting the
# delivery's event id, so each delivery's note is found at the stand-in.
FLOW = copy.deepcopy(EXAMPLE_FLOW) | {"name": "storm"}
FLOW["steps"][1]["inputs"]["note"] = "{{ trigger.event.id }}"


# -- process trees ---------------------------------------------------------------------


def tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    """User and system CPU of the tree (its processes alive now, and the children they
    waited for)."""
    total = 0
    for pid in tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / TICK


def rss_bytes(root: int) -> int:
    """Resident memory of the tree now."""
    total = 0
    for pid in tree(root):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


class PeakMemory:
    """The largest resident size of a process tree, sampled every 0.1 s."""

    def __init__(self, root: int) -> None:
        self.root, self.peak = root, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, rss_bytes(self.root))

    def reset(self) -> None:
        """Start a new peak from now."""
        self.peak = rss_bytes(self.root)

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


# -- the servers -----------------------------------------------------------------------


@dataclass
class Server:
    """One server under test: where deliveries go, how they are signed, its process."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    secret: str | None = None
    memory: PeakMemory | None = None
    metrics_url: str | None = None  # ours: its /metrics, read before and after each round
    rounds: dict[int, list[Round]] = field(default_factory=dict)

    def headers(self, body: bytes, n: int) -> dict[str, str]:
        """A delivery's headers (signed when the server verifies signatures)."""
        headers = {
            "Content-Type": "application/json",
            "X-Webhook-Id": f"bench-{n}-{uuid.uuid4().hex}",
        }
        if self.secret:
            headers["X-PagerDuty-Signature"] = sign(body, self.secret)
        return headers

    def stop(self) -> None:
        """Stop the server and its children."""
        if self.memory:
            self.memory.close()
        for pid in reversed(tree(self.process.pid)):
            with suppress(ProcessLookupError):
                os.kill(pid, 15)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _logged(data: str, name: str) -> dict[str, Any]:
    """A server's output goes to a file in the bench's folder (each server logs as it
    does by default; a terminal would slow the bench, not the server)."""
    out = open(Path(data) / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    return {"stdout": out, "stderr": subprocess.STDOUT}


def _wait_http(url: str, what: str, process: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited at start (code {process.returncode}); see its log")
        try:
            if httpx2.get(url, timeout=1).status_code < 500:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within {seconds:.0f} s")


def start_pdc(pagerduty_url: str, data: str, database_url: str | None) -> Server:
    """``pdc serve`` with default settings, a connection and the flow deployed."""
    port = free_port()
    env = runtime_env(data, pagerduty_url)
    if database_url:
        env["PDC_DATABASE_URL"] = database_url
    command = [sys.executable, "-m", "pagerduty_connector.runtime.cli", "serve"]
    process = subprocess.Popen([*command, "--port", str(port)], env=env, **_logged(data, "pdc"))
    base = f"http://127.0.0.1:{port}"
    _wait_http(f"{base}/ready", "pdc serve", process)
    api = httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    api.post(
        "/api/connections",
        json={
            "name": "ops",
            "type": "pagerduty-api-key",
            "config": {"apiKey": API_KEY, "from": "bench@example.com"},
        },
    ).raise_for_status()
    api.post(
        "/api/instances", json={"name": "bench", "connection": "ops", "flows": [FLOW]}
    ).raise_for_status()
    url = f"{base}/webhooks/bench/storm"
    secret = httpx2.get(f"{pagerduty_url}{SECRETS_PATH}").json()[url]
    return Server("pdc", process, url, secret, metrics_url=f"{base}/metrics")


def start_dbos(pagerduty_url: str, data: str, database_url: str | None) -> Server:
    """The bare DBOS endpoint, in its own process."""
    port = free_port()
    if database_url:  # a database of its own on the same server
        system = database_url.replace("+asyncpg", "+psycopg").rsplit("/", 1)[0] + "/dbos_bare"
    else:
        system = f"sqlite:///{data}/dbos-bare.sqlite"
    command = [sys.executable, "-m", "bench.flow_throughput", "--serve-dbos", str(port)]
    env = {**os.environ, "BENCH_DBOS_URL": system, "PAGERDUTY_API_URL": pagerduty_url}
    process = subprocess.Popen(command, env=env, **_logged(data, "dbos"))
    base = f"http://127.0.0.1:{port}"
    _wait_http(f"{base}/ready", "the bare DBOS server", process)
    return Server("dbos", process, f"{base}/deliveries")


def serve_dbos(port: int) -> None:
    """Child process: deliveries start a DBOS workflow of two HTTP steps, no queue."""
    import uvicorn
    from dbos import DBOS
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    pagerduty = httpx2.AsyncClient(
        base_url=os.environ["PAGERDUTY_API_URL"],
        headers={"Authorization": f"Token token={API_KEY}", "From": "bench@example.com"},
        timeout=10,
    )

    @DBOS.step(name="get")
    async def get(incident_id: str) -> dict[str, Any]:
        answer = await pagerduty.get(f"/incidents/{incident_id}")
        answer.raise_for_status()
        return answer.json()

    @DBOS.step(name="note")
    async def note(incident_id: str, content: str) -> dict[str, Any]:
        body = {"note": {"content": content}}
        answer = await pagerduty.post(f"/incidents/{incident_id}/notes", json=body)
        answer.raise_for_status()
        return answer.json()

    @DBOS.workflow(name="two-steps")
    async def two_steps(incident_id: str, event_id: str) -> None:
        incident = await get(incident_id)
        await note(incident["incident"]["id"], event_id)

    async def deliveries(request: Request) -> JSONResponse:
        delivered = json.loads(await request.body())["event"]
        await DBOS.start_workflow_async(two_steps, delivered["data"]["id"], delivered["id"])
        return JSONResponse({"status": "received"}, status_code=202)

    async def ready(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    DBOS(config={"name": "bench-bare", "system_database_url": os.environ["BENCH_DBOS_URL"]})

    async def lifespan(_app: Any) -> Any:
        DBOS.launch()  # from the running loop: workflows run on it
        yield
        DBOS.destroy()

    routes = [Route("/deliveries", deliveries, methods=["POST"]), Route("/ready", ready)]
    app = Starlette(routes=routes, lifespan=lifespan)
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="asyncio"
    )


def n8n_binary() -> Path:
    """n8n's launcher, installed into the cache folder on first use."""
    folder = CACHE / f"n8n-{N8N_VERSION}"
    binary = folder / "node_modules" / "n8n" / "bin" / "n8n"
    if binary.exists():
        return binary
    if shutil.which("npm") is None:
        raise SystemExit("--peer n8n needs Node.js and npm (Debian: apt-get install nodejs npm)")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"installing n8n {N8N_VERSION} into {folder} (once; a few minutes)", flush=True)
    # n8n names one dependency by a URL off the npm registry (xlsx from cdn.sheetjs.com),
    # which a machine that reaches only the registry cannot fetch: the registry's last
    # xlsx stands in (n8n's spreadsheet nodes, unused here, are all that use it).
    package = {"private": True, "dependencies": {"n8n": N8N_VERSION}}
    (folder / "package.json").write_text(json.dumps({**package, "overrides": {"xlsx": "0.18.5"}}))
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--omit=dev"],
        cwd=folder,
        check=True,
    )
    return binary


def n8n_workflow(pagerduty_url: str) -> dict[str, Any]:
    """Webhook (answering on receipt) -> HTTP GET the incident -> HTTP POST the note."""
    auth = [
        {"name": "Authorization", "value": f"Token token={API_KEY}"},
        {"name": "From", "value": "bench@example.com"},
    ]
    # No "}}" inside the expression: n8n would take it for the expression's end.
    note = '={{ JSON.stringify({ note: { content: $("Webhook").item.json.body.event.id } }) }}'
    return {
        "id": ID,
        "name": "storm",
        "active": True,
        "settings": {"executionOrder": "v1"},
        "connections": {
            "Webhook": {"main": [[{"node": "Get incident", "type": "main", "index": 0}]]},
            "Get incident": {"main": [[{"node": "Add note", "type": "main", "index": 0}]]},
        },
        "nodes": [
            {
                "id": "0b0c3f5e-0000-4000-8000-000000000001",
                "name": "Webhook",
                "type": "n8n-nodes-base.webhook",
                "typeVersion": 2,
                "position": [0, 0],
                "webhookId": "5f1d7c9e-0000-4000-8000-00000000beef",
                "parameters": {
                    "httpMethod": "POST",
                    "path": "storm",
                    "responseMode": "onReceived",
                    "options": {"responseCode": 202},
                },
            },
            {
                "id": "0b0c3f5e-0000-4000-8000-000000000002",
                "name": "Get incident",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [220, 0],
                "parameters": {
                    "url": f"={pagerduty_url}/incidents/{{{{ $json.body.event.data.id }}}}",
                    "sendHeaders": True,
                    "headerParameters": {"parameters": auth},
                    "options": {},
                },
            },
            {
                "id": "0b0c3f5e-0000-4000-8000-000000000003",
                "name": "Add note",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [440, 0],
                "parameters": {
                    "method": "POST",
                    "url": f"={pagerduty_url}/incidents/{{{{ $json.incident.id }}}}/notes",
                    "sendHeaders": True,
                    "headerParameters": {"parameters": auth},
                    "sendBody": True,
                    "specifyBody": "json",
                    "jsonBody": note,
                    "options": {},
                },
            },
        ],
    }


def start_n8n(pagerduty_url: str, data: str) -> Server:
    """n8n with its defaults (regular mode, SQLite), the workflow imported and active."""
    binary = n8n_binary()
    port = free_port()
    folder = Path(data) / "n8n"
    folder.mkdir()
    env = {
        **os.environ,
        "N8N_USER_FOLDER": str(folder),
        "N8N_PORT": str(port),
        # Its task runners' broker listens on a port of its own (5679 by default).
        "N8N_RUNNERS_BROKER_PORT": str(free_port()),
        "N8N_LISTEN_ADDRESS": "127.0.0.1",
        "N8N_DIAGNOSTICS_ENABLED": "false",
        "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
        "N8N_TEMPLATES_ENABLED": "false",
        "N8N_PERSONALIZATION_ENABLED": "false",
        "N8N_SECURE_COOKIE": "false",
        "N8N_LOG_LEVEL": "warn",
        "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "false",
    }
    workflow = folder / "storm.json"
    workflow.write_text(json.dumps(n8n_workflow(pagerduty_url)))
    node = shutil.which("node") or "node"
    for step in (["import:workflow", f"--input={workflow}"], ["publish:workflow", f"--id={ID}"]):
        done = subprocess.run([node, str(binary), *step], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"n8n {step[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
    process = subprocess.Popen([node, str(binary), "start"], env=env, **_logged(data, "n8n"))
    base = f"http://127.0.0.1:{port}"
    _wait_http(f"{base}/healthz/readiness", "n8n", process, seconds=180)
    url = f"{base}/webhook/storm"
    deadline = time.monotonic() + 60
    json_body = {"Content-Type": "application/json"}
    while httpx2.post(url, content=event("warm-up"), headers=json_body, timeout=10).is_error:
        if time.monotonic() > deadline:
            raise SystemExit(f"n8n did not activate the workflow: {url} is not answered")
        time.sleep(0.5)
    return Server("n8n", process, url)


# -- one round -------------------------------------------------------------------------


@dataclass
class Round:
    """What one round at one rate measured on one server."""

    offered: int
    sent: int
    answered: list[float]  # answer latency of each delivery, seconds from its schedule
    refused: int
    answers_per_s: float
    executions: int
    executions_per_s: float
    end_to_end: list[float]
    drain: float
    cpu_per_execution: float  # seconds
    peak_rss: int
    # What /metrics said over the round (ours only): deliveries recorded, runs succeeded.
    scraped: tuple[float, float] | None = None


async def _deliver(server: Server, rate: int, seconds: float, prefix: str) -> tuple[Any, ...]:
    """Open loop: ``rate`` deliveries a second for ``seconds``; each one's schedule, its
    answer latency, how many were refused, and when the last answer came."""
    connections = _Connections(server.url)
    due: dict[str, float] = {}
    answered: list[float] = []
    refused = 0
    last = 0.0

    async def one(n: int, at: float) -> None:
        nonlocal refused, last
        event_id = f"{prefix}-{n}"
        body = event(event_id)
        due[event_id] = at
        try:
            status, _ = await connections.send(connections.request(body, server.headers(body, n)))
        except (OSError, asyncio.IncompleteReadError):
            status = 0
        last = max(last, time.time())
        if 200 <= status < 300:
            answered.append(time.time() - at)
        else:
            refused += 1

    start = await open_loop(connections, int(rate * seconds), rate, one, time.time)
    return start, due, answered, refused, last


def run_round(server: Server, pagerduty_url: str, rate: int, seconds: float) -> Round:
    """Deliver at ``rate``, wait for every delivery's note at the stand-in (or a minute
    of nothing new), and measure."""
    log = httpx2.Client(base_url=pagerduty_url, timeout=30)
    since = log.get(REQUESTS_PATH, params={"since": 1 << 30}).json()["next"]
    prefix = f"{server.name}-{rate}-{uuid.uuid4().hex[:8]}"
    assert server.memory is not None
    server.memory.reset()
    counted = scrape(server)
    cpu = cpu_seconds(server.process.pid)
    start, due, answered, refused, last_answer = asyncio.run(
        _deliver(server, rate, seconds, prefix)
    )
    notes: dict[str, float] = {}
    quiet_since = time.monotonic()
    while len(notes) < len(due) - refused and time.monotonic() - quiet_since < 60:
        time.sleep(0.2)
        page = log.get(REQUESTS_PATH, params={"since": since}).json()
        since = page["next"]
        before = len(notes)
        for request in page["requests"]:
            content = ((request.get("body") or {}).get("note") or {}).get("content", "")
            if request["method"] == "POST" and content in due:
                notes.setdefault(content, request["at"])
        if len(notes) > before:
            quiet_since = time.monotonic()
    cpu = cpu_seconds(server.process.pid) - cpu
    after = scrape(server)
    moved = (after[0] - counted[0], after[1] - counted[1]) if after and counted else None
    finished = max(notes.values(), default=start)
    last_sent = max(due.values())
    return Round(
        offered=rate,
        sent=len(due),
        answered=answered,
        refused=refused,
        answers_per_s=len(answered) / max(last_answer - start, 1e-9),
        executions=len(notes),
        executions_per_s=len(notes) / max(finished - start, 1e-9),
        end_to_end=[at - due[event_id] for event_id, at in notes.items()],
        drain=max(0.0, finished - last_sent),
        cpu_per_execution=cpu / max(len(notes), 1),
        peak_rss=server.memory.peak,
        scraped=moved,
    )


def scrape(server: Server) -> tuple[float, float] | None:
    """From the server's ``/metrics`` (ours only): deliveries answered 202 and runs that
    succeeded, so far."""
    if not server.metrics_url:
        return None
    answer = httpx2.get(server.metrics_url, headers={"Authorization": f"Bearer {ADMIN}"})
    values = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return (
        values.get(("pdc_deliveries_total", (("status", "202"),)), 0.0),
        values.get(("pdc_executions_finished_total", (("status", "succeeded"),)), 0.0),
    )


# -- the report ------------------------------------------------------------------------


def _q(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _median(rounds: list[Round], figure: Any) -> float:
    return statistics.median(figure(r) for r in rounds)


FIGURES: list[tuple[str, Any, str]] = [
    # label, figure of a round, format; all medians over the repeats
    ("deliveries answered /s", lambda r: r.answers_per_s, "{:.0f}"),
    ("answer p50 ms", lambda r: _q(r.answered, 0.5) * 1000, "{:.0f}"),
    ("answer p99 ms", lambda r: _q(r.answered, 0.99) * 1000, "{:.0f}"),
    ("executions finished /s", lambda r: r.executions_per_s, "{:.1f}"),
    ("end-to-end p50 s", lambda r: _q(r.end_to_end, 0.5), "{:.2f}"),
    ("end-to-end p99 s", lambda r: _q(r.end_to_end, 0.99), "{:.2f}"),
    ("drain s", lambda r: r.drain, "{:.1f}"),
    ("CPU per execution ms", lambda r: r.cpu_per_execution * 1000, "{:.1f}"),
    ("peak RSS MiB", lambda r: r.peak_rss / 2**20, "{:.0f}"),
    ("executions / sent", lambda r: r.executions / max(r.sent, 1), "{:.2f}"),
]
# The targets at the highest rate: figure label -> (bound, better when, of what):
# the ratio to the peer, or our own figure (intake's answers while the runs go on).
TARGETS = {
    "answer p99 ms": (100.0, "lower", "pdc"),
    "executions finished /s": (2.0, "higher", "ratio"),
    "CPU per execution ms": (0.5, "lower", "ratio"),
    "end-to-end p99 s": (0.5, "lower", "ratio"),
    "peak RSS MiB": (0.5, "lower", "ratio"),
}


def report(database: str, servers: list[Server], rates: list[int], peer: str) -> bool:
    """Print the table for one database; whether every target was met."""
    names = [s.name for s in servers]
    print(
        f"\n== {database}: medians of {len(servers[0].rounds[rates[0]])} rounds; "
        f"ratio = pdc / {peer}"
    )
    met = True
    for rate in rates:
        print(f"\n-- {rate} deliveries/s offered")
        print(f"{'':26}" + "".join(f"{n:>10}" for n in names) + f"{'ratio':>8}  target")
        by_name = {s.name: s for s in servers}
        for label, figure, fmt in FIGURES:
            values = {n: _median(by_name[n].rounds[rate], figure) for n in names}
            cells = "".join(f"{fmt.format(values[n]):>10}" for n in names)
            ratio = values["pdc"] / values[peer] if values.get(peer) else float("nan")
            target = ""
            if rate == rates[-1] and label in TARGETS and peer == "n8n":
                bound, better, of = TARGETS[label]
                if of == "ratio":  # the bounds: at least 2x, at most 0.5x
                    ok = ratio >= bound if better == "higher" else ratio <= bound
                    said = f"{'>=' if better == 'higher' else '<='} {bound:g}"
                else:  # our own figure, under the bound
                    ok, said = values["pdc"] < bound, f"pdc < {bound:g}"
                met = met and ok
                target = f"{said}: {'met' if ok else 'NOT met'}"
            print(f"{label:26}{cells}{ratio:>8.2f}  {target}")
    return met


def main() -> None:
    """Start the stand-in and the servers, run the rounds interleaved, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve-dbos", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--peer", choices=["n8n"], help="also run n8n (installed on first use)")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--rates", default="50,100,200", help="deliveries per second, each round")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a round's sending")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per rate and server")
    args = parser.parse_args()
    if args.serve_dbos:
        serve_dbos(args.serve_dbos)
        return
    try:
        rates = [int(r) for r in args.rates.split(",")]
    except ValueError:
        parser.error(f"--rates: comma-separated whole numbers, not {args.rates!r}")
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    if args.peer:
        n8n_binary()

    ports: Any = multiprocessing.Queue()
    pagerduty = multiprocessing.Process(target=serve, args=(ports, 0, 0.0), daemon=True)
    pagerduty.start()
    pagerduty_url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    peer = args.peer or "dbos"
    met, judged = True, []
    try:
        for database in databases:
            with ExitStack() as stack:
                data = stack.enter_context(tempfile.TemporaryDirectory(prefix="pdc-bench-"))
                url = None
                if database == "postgresql":
                    from tests.support.postgres import postgres_server

                    url = stack.enter_context(postgres_server(fsync=True))
                servers = [
                    start_pdc(pagerduty_url, data, url),
                    start_dbos(pagerduty_url, data, url),
                ]
                if args.peer and database == "sqlite":  # n8n runs on its default, SQLite
                    servers.append(start_n8n(pagerduty_url, data))
                for server in servers:
                    stack.callback(server.stop)
                    server.memory = PeakMemory(server.process.pid)
                    run_round(server, pagerduty_url, 20, 1)  # warm-up, not counted
                for repeat in range(args.repeats):
                    for rate in rates:
                        for server in servers:
                            done = run_round(server, pagerduty_url, rate, args.seconds)
                            server.rounds.setdefault(rate, []).append(done)
                            said = (
                                f"; /metrics: {done.scraped[0]:.0f} recorded, "
                                f"{done.scraped[1]:.0f} succeeded"
                                if done.scraped
                                else ""
                            )
                            print(
                                f"[{database} {repeat + 1}/{args.repeats}] {server.name:5} "
                                f"{rate}/s: {done.executions}/{done.sent} runs, "
                                f"{done.executions_per_s:.1f}/s, "
                                f"{done.cpu_per_execution * 1000:.1f} ms CPU each{said}",
                                flush=True,
                            )
                this_peer = peer if any(s.name == peer for s in servers) else "dbos"
                met = report(database, servers, rates, this_peer) and met
                if this_peer == "n8n":
                    judged.append(database)
    finally:
        pagerduty.terminate()
    if judged:
        verdict = "all met" if met else "NOT all met"
        print(f"\ntargets at {rates[-1]}/s against n8n ({', '.join(judged)}): {verdict}")
    elif args.peer:
        print("\nno target judged: n8n runs on SQLite only (--database sqlite or both)")


if __name__ == "__main__":
    main()
