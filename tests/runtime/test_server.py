"""``pdc serve`` against slow, idle and hostile clients (``runtime/server.py``): deadlines
for a request's head and body, a bound on connections that slow clients cannot hold,
logs that do not flood, an access log without secrets; and the uvicorn internals the
guard relies on, checked so that a uvicorn that moved them fails here, loudly."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from pagerduty_connector.component.standin.server import free_port, running
from pagerduty_connector.runtime.logs import Throttled
from pagerduty_connector.runtime.server import GuardedH11, mask_query
from pagerduty_connector.triggers.signature import sign
from tests.support.processes import serve_env, wait_until
from tests.support.runtime import EVENT, FLOW, make_connection

ADMIN = "server-admin-token-4455"


def test_the_uvicorn_internals_the_guard_relies_on_are_there() -> None:
    """``GuardedH11`` extends uvicorn's h11 protocol: these are what it overrides and
    reads. A uvicorn that renamed one must fail here rather than serve unguarded."""
    version = uvicorn.__version__
    for method in ("connection_made", "data_received", "on_response_complete", "connection_lost"):
        assert callable(getattr(H11Protocol, method, None)), f"uvicorn {version}: no {method}"
        assert method in GuardedH11.__dict__
    made = inspect.getsource(H11Protocol.connection_made)
    setup = inspect.getsource(H11Protocol.__init__)
    for attribute, where in (
        ("self.transport", made),
        ("self.client", made),
        ("self.conn", setup),
        ("self.loop", setup),
    ):
        assert f"{attribute} =" in where, f"uvicorn {version} no longer sets {attribute}"
    assert "on_response_complete" in inspect.getsource(sys.modules[H11Protocol.__module__])


def test_secrets_in_a_query_never_reach_the_access_log() -> None:
    masked = mask_query("/connections/abc/oauth/start?link=signed.LINK&state=S1&code=C2&x=1")
    assert masked == "/connections/abc/oauth/start?link=***&state=***&code=***&x=1"
    assert mask_query("/api/executions?access_token=t0k3n&limit=5") == (
        "/api/executions?access_token=***&limit=5"
    )
    assert mask_query("/health") == "/health"


def test_a_complaint_repeated_per_connection_is_logged_once_a_period() -> None:
    throttle = Throttled()
    records = [
        logging.LogRecord(
            "asyncio",
            logging.ERROR,
            "",
            0,
            "socket.accept() out of system resource",
            None,
            (OSError, OSError(24, "Too many"), None),
        )
        for _ in range(500)
    ]
    kept = [r for r in records if throttle.filter(r)]
    assert len(kept) == 1 and kept[0].exc_info is not None  # the first, with its traceback
    later = logging.LogRecord(
        "asyncio", logging.ERROR, "", 0, records[0].msg, None, (OSError, OSError(24, ""), None)
    )
    throttle._last[str(later.msg)[:80]] -= 60  # the period has passed
    assert throttle.filter(later)
    assert later.getMessage().endswith("(499 more like this were not logged)")
    assert later.exc_info is None  # a repeat: the same traceback again tells nothing


@pytest.fixture
def few_descriptors(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """``pdc serve`` as a process whose descriptor limit is 1 024 (soft and hard, as
    many hosts leave it), with short deadlines; its URL, log and environment."""
    with running() as pagerduty:
        port = free_port()
        env = {
            **serve_env(tmp_path, port, pagerduty.url, ADMIN),
            "PDC_HEADER_TIMEOUT": "2",
            "PDC_BODY_TIMEOUT": "2",
            "PDC_KEEPALIVE_TIMEOUT": "1",
        }
        log = tmp_path / "server.log"

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

        with log.open("ab") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "pagerduty_connector.runtime.cli", "serve"],
                env=env,
                stdout=out,
                stderr=out,
                preexec_fn=limit,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: httpx2.get(f"{url}/health").is_success, 30, "the server")
            api = httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"})
            make_connection(api)
            deployed = api.post(
                "/api/instances", json={"name": "acme", "connection": "ops", "flows": [FLOW]}
            )
            assert deployed.status_code == 201, deployed.text
            env["SECRET"] = next(iter(pagerduty.subscriptions.secrets.values()))
            yield url, log, env
        finally:
            server.terminate()
            server.wait(timeout=60)


async def _slowloris(port: int, count: int, stop: asyncio.Event) -> dict[str, int]:
    """``count`` connections that send a request head a line every second and never end
    it; how many were opened and how many the server closed."""
    seen = {"opened": 0, "closed": 0, "refused": 0}

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            seen["refused"] += 1
            return
        seen["opened"] += 1
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: pdc\r\n")
            while not stop.is_set():
                await writer.drain()
                if reader.at_eof():
                    raise ConnectionResetError
                await asyncio.sleep(1)
                writer.write(b"X-Slow: 1\r\n")
        except OSError:
            seen["closed"] += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await stop.wait()
    await asyncio.gather(*tasks, return_exceptions=True)
    return seen


def test_1100_slow_connections_leave_deliveries_and_health_answering(
    few_descriptors: tuple[str, Path, dict[str, str]],
) -> None:
    """Measured before: every answer stopped, ``/health`` included, and the log grew
    314 MB in 50 s. Now the slow connections are closed at their deadline, or to make
    room, and real requests are answered meanwhile; the log says so in a few lines."""
    url, log, env = few_descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    port = int(url.rsplit(":", 1)[1])
    size_before = log.stat().st_size
    body = json.dumps(EVENT).encode()
    signature = sign(body, env["SECRET"])

    async def attack_and_probe() -> tuple[dict[str, int], list[float], list[int]]:
        stop = asyncio.Event()
        attack = asyncio.create_task(_slowloris(port, 1100, stop))
        await asyncio.sleep(1.5)  # all of them open and trickling
        waits, deliveries = [], []
        async with httpx2.AsyncClient(base_url=url, timeout=5) as client:
            for n in range(12):
                began = time.monotonic()
                assert (await client.get("/health")).status_code == 200
                waits.append(time.monotonic() - began)
                answer = await client.post(
                    "/webhooks/acme/on-incident",
                    content=body,
                    headers={"X-Webhook-Id": f"w{n}", "X-PagerDuty-Signature": signature},
                )
                deliveries.append(answer.status_code)
                await asyncio.sleep(0.5)
        stop.set()
        return await attack, waits, deliveries

    seen, waits, deliveries = asyncio.run(attack_and_probe())
    assert max(waits) < 1.0, waits
    assert deliveries == [202] + [200] * 11  # one event: recorded once, the rest duplicates
    assert seen["opened"] + seen["refused"] == 1100
    assert seen["closed"] > 1000  # by the head deadline, or to make room
    grown = log.stat().st_size - size_before
    assert grown < 100_000, grown  # a few summary lines and the access log
    text = log.read_text()
    assert "slow or idle clients:" in text  # said at once; the counts follow every 10 s
    lines = text.splitlines()
    bad = [
        n for n, line in enumerate(lines) if "Too many open files" in line or "Traceback" in line
    ]
    # What was logged around the first one (the whole log is thousands of access lines).
    assert not bad, "\n".join(lines[max(bad[0] - 5, 0) : bad[0] + 15])


def test_idle_slow_bodied_and_kept_alive_connections_are_closed_at_their_deadline(
    few_descriptors: tuple[str, Path, dict[str, str]],
) -> None:
    url, _, _ = few_descriptors
    port = int(url.rsplit(":", 1)[1])

    def closed_after(sock: socket.socket) -> float:
        """Seconds until the server closes ``sock``."""
        began = time.monotonic()
        sock.settimeout(10)
        while sock.recv(4096):
            pass
        return time.monotonic() - began

    idle = socket.create_connection(("127.0.0.1", port))  # sends nothing at all
    assert 1.5 < closed_after(idle) < 4
    slow_body = socket.create_connection(("127.0.0.1", port))
    slow_body.sendall(
        b"POST /webhooks/acme/on-incident HTTP/1.1\r\nHost: pdc\r\nContent-Length: 100\r\n"
        b'X-PagerDuty-Signature: v1=00\r\n\r\n{"event":'
    )
    assert 1.5 < closed_after(slow_body) < 4
    kept = socket.create_connection(("127.0.0.1", port))
    kept.sendall(b"GET /health HTTP/1.1\r\nHost: pdc\r\n\r\n")
    assert b"200 OK" in kept.recv(4096)
    assert closed_after(kept) < 3  # PDC_KEEPALIVE_TIMEOUT=1
    executions = httpx2.get(
        f"{url}/api/executions", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()
    assert executions == []  # the cut body was never recorded


def test_a_token_in_a_query_string_never_reaches_the_log(
    few_descriptors: tuple[str, Path, dict[str, str]],
) -> None:
    url, log, _ = few_descriptors
    guessed = "guessed-token-0042"
    httpx2.get(f"{url}/api/executions", params={"token": ADMIN, "access_token": guessed})
    httpx2.get(f"{url}/console/login", params={"code": "oauth-code-77", "state": "s-88"})
    time.sleep(0.5)
    text = log.read_text()
    assert "GET /api/executions?token=***&access_token=*** HTTP/1.1" in text
    for secret in (ADMIN, guessed, "oauth-code-77", "s-88"):
        assert secret not in text
