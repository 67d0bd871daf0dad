"""A stand-in for services other than PagerDuty (Slack, Teams, any webhook) on
127.0.0.1: a real HTTP server that keeps what it was sent, for the http step's tests."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import respx


class Slack(ThreadingHTTPServer):
    """Answers each request as ``answers[path]`` says (status, body, delay), and keeps
    what it was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict[str, Any]] = []
        self.answers: dict[str, list[tuple[int, bytes, float]]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Slack
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.received.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        queued = self.server.answers.get(self.path) or [(200, b"ok", 0.0)]
        status, data, delay = queued.pop(0) if len(queued) > 1 else queued[0]
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: Any) -> None:
        pass


def pass_through(pd: respx.MockRouter) -> None:
    """respx patches every httpcore pool of the process: the step's requests to other
    hosts than PagerDuty go to the network, where the runtime's own guard meets them."""
    pd.route(url__regex=r"^(?!https://api\.pagerduty\.com)").pass_through()
