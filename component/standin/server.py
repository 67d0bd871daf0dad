"""The stand-in PagerDuty server on 127.0.0.1 (``pdc mock``), for trying things by hand,
the quickstart, the process tests and the benchmarks.

It answers ``GET /incidents`` (offset pagination over generated incidents),
``GET /incidents/{id}``, ``POST /incidents/{id}/notes``, ``GET /abilities`` and
the ``/webhook_subscriptions`` API (``subscriptions.FakeSubscriptions``), optionally
after a delay (``hold=(method, path, seconds)`` holds only the first such request,
to catch a runtime mid-step; ``slow=(method, path suffix, seconds)`` every request
whose path ends so), and records the method and path of every request.
``GET /_mock/requests?since=N`` (not PagerDuty's) lists the requests from the N-th on:
method, path, when it arrived (Unix seconds) and its JSON body, so a person sees what a
flow sent and a benchmark times when each delivery's side effect arrived; ``echo``, if
given, is called with each request's one-line summary (``pdc mock`` prints them).
``GET /_mock/secrets`` (not PagerDuty's) lists the signing secret of every
subscription it created by delivery URL, so a person or a benchmark can sign
deliveries the way PagerDuty would; ``POST /_mock/hold`` with ``{"method", "path",
"seconds"}`` holds the next such request (a slow PagerDuty, on demand).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.component.standin.world import PagerDutyWorld

SECRETS_PATH = "/_mock/secrets"
HOLD_PATH = "/_mock/hold"
REQUESTS_PATH = "/_mock/requests"
FAIL_PATH = "/_mock/fail"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summary(entry: dict[str, Any], width: int = 160) -> str:
    """A logged request on one line: method, path and its JSON body, cut at ``width``."""
    line = f"{entry['method']} {entry['path']}"
    if entry.get("body") is not None:
        line += " " + json.dumps(entry["body"], ensure_ascii=False)
    return line if len(line) <= width else line[: width - 1] + "…"


class LocalPagerDuty(ThreadingHTTPServer):
    """The server; ``requests`` lists ``(method, path)`` in arrival order."""

    daemon_threads = True
    # Clients open several connections at once; the default backlog of 5 drops SYNs
    # past it, and the client's retransmission a second later looks like a slow page.
    request_queue_size = 128

    def __init__(
        self,
        count: int = 0,
        delay: float = 0.0,
        hold: tuple[str, str, float] | None = None,
        port: int = 0,
        slow: tuple[str, str, float] | None = None,
        echo: Callable[[str], None] | None = None,
        autocreate: bool = True,
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.world = PagerDutyWorld(count, autocreate=autocreate)
        self.delay = delay
        self.hold = hold
        self.slow = slow
        self.echo = echo
        self.requests: list[tuple[str, str]] = []
        # What ``GET /_mock/requests`` lists: each request with its time and body.
        self.log: list[dict[str, Any]] = []
        # Encoded list pages of the account as it is (its version), so answers are instant.
        self.pages: dict[tuple[int, str], bytes] = {}
        self.failures: list[dict[str, Any]] = []  # ``POST /_mock/fail``: answers to force
        self.subscriptions = FakeSubscriptions()
        self._lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self._hold_next: dict[tuple[str, str], float] = {}
        self._seen: set[tuple[str, str]] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve a connection on a thread of its own, kept in ``open`` until it closes."""
        with self._lock:
            self.open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Close a connection, and forget it."""
        with self._lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def go_away(self) -> None:
        """Stop as a PagerDuty that went away does: no new connection is taken, and
        the open ones (kept alive by clients) are cut, not served on."""
        self.shutdown()
        self.server_close()
        with self._lock:
            cut = list(self.open)
        for connection in cut:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone before its answer (a killed runtime, a timed-out request) is
        not the stand-in's error: nothing is printed for it; anything else is."""
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        """Base URL to point ``PAGERDUTY_API_URL`` at."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, method: str, path: str, body: Any = None) -> int:
        """Remember a request (holding it if it is the first one ``hold`` names); return how
        many came before it."""
        entry = {"method": method, "path": path, "at": time.time(), "body": body}
        with self._lock:
            self.requests.append((method, path))
            self.log.append(entry)
            before = len(self.requests) - 1
            # A set, not a count of the list: a benchmark sends tens of thousands.
            first = (method, path) not in self._seen
            self._seen.add((method, path))
            wait = self._hold_next.pop((method, path), 0.0)
        if self.echo is not None:
            self.echo(summary(entry))
        if self.hold and self.hold[:2] == (method, path) and first:
            wait = self.hold[2]
        if self.slow and self.slow[0] == method and path.endswith(self.slow[1]):
            wait = max(wait, self.slow[2])
        time.sleep(wait)
        return before

    def hold_next(self, method: str, path: str, seconds: float) -> None:
        """Hold the next ``method path`` request for ``seconds`` before answering it."""
        with self._lock:
            self._hold_next[(method.upper(), path)] = seconds


class _Handler(BaseHTTPRequestHandler):
    server: LocalPagerDuty
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, the body
    # waits for the client's delayed ACK (~40 ms) and every "instant" answer is slow.
    disable_nagle_algorithm = True

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (
            b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        )
        time.sleep(self.server.delay)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _subscriptions(self, method: str) -> bool:
        """Serve ``/webhook_subscriptions`` from the fake; ``False`` for other paths."""
        parts = urlsplit(self.path)
        if not parts.path.startswith("/webhook_subscriptions"):
            return False
        body = self._json() if method in ("POST", "PUT") else None
        self.server.record(method, parts.path, body)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.server._lock:
            status, answer = self.server.subscriptions.handle(method, parts.path, query, body)
        self._send(status, answer)
        return True

    def do_PUT(self) -> None:
        if not self._subscriptions("PUT"):
            self._account("PUT")

    def do_DELETE(self) -> None:
        if not self._subscriptions("DELETE"):
            self._account("DELETE")

    def do_GET(self) -> None:
        if self._subscriptions("GET"):
            return
        parts = urlsplit(self.path)
        if parts.path == SECRETS_PATH:
            subs = self.server.subscriptions
            urls = {i: s["delivery_method"]["url"] for i, s in subs.subscriptions.items()}
            return self._send(200, {urls[i]: secret for i, secret in subs.secrets.items()})
        if parts.path == REQUESTS_PATH:
            since = int(parse_qs(parts.query).get("since", ["0"])[-1] or 0)
            with self.server._lock:
                listed = self.server.log[max(since, 0) :]
                total = len(self.server.log)
            return self._send(200, {"requests": listed, "next": total})
        if parts.path == "/abilities":
            self.server.record("GET", parts.path)
            return self._send(200, {"abilities": ["teams"]})
        return self._account("GET")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == HOLD_PATH:
            asked = self._json()
            self.server.hold_next(asked["method"], asked["path"], float(asked["seconds"]))
            return self._send(204, None)
        if parts.path == FAIL_PATH:
            asked = self._json()
            with self.server._lock:
                self.server.failures.append(
                    {
                        "method": str(asked["method"]).upper(),
                        "path": str(asked["path"]),
                        "status": int(asked.get("status", 500)),
                        "times": int(asked.get("times", 1)),
                    }
                )
            return self._send(204, None)
        if self._subscriptions("POST"):
            return
        self._account("POST")

    def _account(self, method: str) -> None:
        """Answer from the account (``world.py``), after a forced failure if one is due."""
        parts = urlsplit(self.path)
        body = self._json() if method in ("POST", "PUT") else None
        self.server.record(method, parts.path, body)
        forced = self._forced(method, parts.path)
        if forced:
            return self._send(*forced)
        world = self.server.world
        with self.server._lock:
            if method == "GET" and parts.path == "/incidents":
                # The list the paging benchmarks read by the thousand: encoded once per
                # version of the account and query.
                key = (world.version, parts.query)
                page = self.server.pages.get(key)
                if page is None:
                    _, listed = world.handle("GET", parts.path, parse_qs(parts.query), None, None)
                    page = self.server.pages[key] = json.dumps(listed).encode()
                status, answer = 200, page
            else:
                status, answer = world.handle(
                    method, parts.path, parse_qs(parts.query), body, self.headers.get("From")
                )
        self._send(status, answer)

    def _forced(self, method: str, path: str) -> tuple[int, Any, dict[str, str]] | None:
        """The failure ``POST /_mock/fail`` asked for this request, if one is due (a 429
        comes with ``ratelimit-reset: 1``, as PagerDuty's does)."""
        with self.server._lock:
            due = next(
                (
                    f
                    for f in self.server.failures
                    if f["method"] == method and path.endswith(f["path"])
                ),
                None,
            )
            if due is None:
                return None
            due["times"] -= 1
            if due["times"] <= 0:
                self.server.failures.remove(due)
        limited = due["status"] == 429
        message = "Rate Limit Exceeded" if limited else "Failure injected"
        headers = {"ratelimit-reset": "1"} if limited else {}
        return due["status"], {"error": {"message": message, "code": 2020}}, headers

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def running(**options: Any) -> Iterator[LocalPagerDuty]:
    """Run a ``LocalPagerDuty`` in a background thread for the duration of the block."""
    server = LocalPagerDuty(**options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def serve(port_queue: Any, count: int, delay: float) -> None:
    """Process entry point: serve ``count`` incidents, ``delay`` seconds per answer."""
    server = LocalPagerDuty(count=count, delay=delay)
    port_queue.put(server.server_address[1])
    server.serve_forever()
