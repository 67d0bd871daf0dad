"""``pdc serve``'s HTTP server: uvicorn, with the guards it lacks against slow clients.

uvicorn closes a kept-alive connection that goes quiet between requests, and nothing
else: a client that sends a request head a byte at a time, connects and sends nothing,
or sends a body slowly holds its connection, and a file descriptor, for good. 1 100 such
connections from one client stopped every answer (``/health`` included) of a runtime
whose descriptor limit was 1 024, and asyncio logged a traceback for every ``accept``
it could not make (100 MB in 15 s). So, in this one module (the only one that knows
uvicorn's internals; ``tests/runtime/test_server.py`` fails loudly when they move):

- ``GuardedH11``, given to uvicorn as its HTTP protocol class: a request head must
  arrive within ``PDC_HEADER_TIMEOUT`` seconds of the connection (or of the previous
  answer), whatever trickles in meanwhile; a body within ``PDC_BODY_TIMEOUT`` of its
  head;
- ``ConnectionGuard``: at most ``PDC_MAX_CONNECTIONS`` connections. At the limit the
  connection that has waited longest for a request head is closed to make room (a real
  client sends its head at once, so it is never the one waiting); if none is waiting,
  the newcomer is answered 503 and closed;
- the descriptor limit is raised to its hard limit at start, and the connection limit
  kept below it, so ``accept`` never fails;
- what the guards close is logged in one line per ``SUMMARY_EVERY`` seconds, with counts
  and the busiest client addresses; asyncio's and uvicorn's per-connection complaints
  are throttled the same way; the access log never shows a query's secrets.

Other servers were weighed: Hypercorn's ``read_timeout`` is per read (a byte every few
seconds defeats it) and it bounds no connections; Granian has a header timeout but runs
the app on its own threads and loops, where DBOS must share ours; uvicorn's own
``limit_concurrency`` answers 503 only once a head has been read.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from collections import Counter
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from pagerduty_connector.component.errors import ConfigurationError
from pagerduty_connector.component.redact import MASK, get_logger, redact
from pagerduty_connector.runtime.logs import SUMMARY_EVERY, throttle
from pagerduty_connector.runtime.settings import RuntimeSettings

log = get_logger("server")
# File descriptors kept for everything but client connections: database pools, the
# writer's pipes, DBOS's threads, log files.
RESERVED_DESCRIPTORS = 256
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: 40\r\n\r\ntoo many connections: try again shortly\n"
)
# Query parameters whose values never reach a log.
_SECRET_PARAMETERS = (
    "token",
    "key",
    "secret",
    "password",
    "auth",
    "code",
    "state",
    "link",
    "signature",
    "session",
    "cookie",
    "credential",
)


class ConnectionGuard:
    """The connections of one server: how many are open, which wait for a request head
    (oldest first), and what was closed, for the summary."""

    def __init__(self, limit: int, head_timeout: float, body_timeout: float) -> None:
        self.limit, self.head_timeout, self.body_timeout = limit, head_timeout, body_timeout
        self.open = 0
        self.waiting: dict[GuardedH11, None] = {}
        self.closed: Counter[str] = Counter()
        self.clients: Counter[str] = Counter()
        self._summary: asyncio.TimerHandle | None = None
        self._said = -SUMMARY_EVERY

    def admit(self, connection: GuardedH11) -> bool:
        """Count a new connection; at the limit, close the one that has waited longest
        for a request head, or refuse this one (``False``)."""
        self.open += 1
        if self.open <= self.limit:
            return True
        oldest = next(iter(self.waiting), None)
        if oldest is not None:
            del self.waiting[oldest]
            self.note("closed at the connection limit", oldest)
            oldest.transport.close()
            return True
        self.note("refused at the connection limit", connection)
        connection.transport.write(BUSY)
        connection.transport.close()
        return False

    def wait_for_head(self, connection: GuardedH11, waiting: bool) -> None:
        """Whether ``connection`` is waiting for a request head (the ones that may go)."""
        if waiting:
            self.waiting.setdefault(connection)
        else:
            self.waiting.pop(connection, None)

    def release(self, connection: GuardedH11) -> None:
        """A connection is gone."""
        self.open -= 1
        self.waiting.pop(connection, None)

    def note(self, why: str, connection: GuardedH11) -> None:
        """Count a connection closed by a guard; the first of a quiet period is said at
        once, the rest in one line per ``SUMMARY_EVERY`` seconds."""
        self.closed[why] += 1
        client = connection.client
        self.clients[client[0] if client else "?"] += 1
        if self._summary is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._said + SUMMARY_EVERY - loop.time()
        if wait <= 0:
            self.summarise()
        else:
            self._summary = loop.call_later(wait, self.summarise)

    def summarise(self) -> None:
        """Log what was closed since the last summary, in one line."""
        self._summary = None
        if not self.closed:
            return
        self._said = asyncio.get_running_loop().time()
        reasons = ", ".join(f"{count} {why}" for why, count in self.closed.most_common())
        busiest = ", ".join(f"{ip} ({count})" for ip, count in self.clients.most_common(3))
        log.warning(
            "slow or idle clients: %s; most from %s (%d of %d connections open)",
            reasons,
            busiest,
            min(self.open, self.limit),  # one just evicted is counted until it is gone
            self.limit,
        )
        self.closed.clear()
        self.clients.clear()


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol, with deadlines for a request's head and body and a place
    under the server's ``ConnectionGuard``."""

    guard: ClassVar[ConnectionGuard]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection (or refuse it at the limit); its head is now awaited."""
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        if self.guard.admit(self):
            self._follow()

    def data_received(self, data: bytes) -> None:
        """Let uvicorn read, then follow where the request is."""
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        """An answer is out: a kept-alive connection waits for its next head."""
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self._cancel()
        self.guard.release(self)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Set the deadline for what the connection waits for: a head, a body, or none
        while the app answers."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        self.guard.wait_for_head(self, state is h11.IDLE)
        if state is h11.IDLE:
            if self._phase != "head":  # not reset by each byte: a deadline for the head
                self._arm("head", self.guard.head_timeout)
        elif state is h11.SEND_BODY:
            if self._phase != "body":
                self._arm("body", self.guard.body_timeout)
        else:  # the whole request is in: the app answers
            self._cancel()

    def _arm(self, phase: str, seconds: float) -> None:
        self._cancel()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expire, phase)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, None

    def _expire(self, phase: str) -> None:
        if self._phase != phase or self.transport.is_closing():
            return
        self._deadline, self._phase = None, None
        self.guard.note(f"without a whole request {phase} in time", self)
        self.transport.close()


class MaskedQuery(logging.Filter):
    """The access log's path without secrets: values of query parameters that name one
    (``token``, ``code``, ``state``, ``link``...) masked, registered secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the path argument of uvicorn's access record."""
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], mask_query(args[2]), *args[3:])
        return True


def mask_query(path: str) -> str:
    """``path`` with the values of secret-naming query parameters masked."""
    base, _, query = path.partition("?")
    if query:
        pairs = [
            (name, MASK if any(word in name.lower() for word in _SECRET_PARAMETERS) else value)
            for name, value in parse_qsl(query, keep_blank_values=True)
        ]
        path = f"{base}?{urlencode(pairs, safe='*')}"
    return redact(path)


def descriptors_for(wanted: int) -> tuple[int, int]:
    """Raise this process's descriptor limit to its hard limit; the connections that fit
    under it (at most ``wanted``) and the listen backlog, beside ``RESERVED_DESCRIPTORS``.

    asyncio accepts up to ``backlog`` connections in one turn of the loop, before any of
    them reaches the guard: a burst at the connection limit holds that many descriptors
    more for a moment, so the backlog comes out of the same budget."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    budget = max(soft - RESERVED_DESCRIPTORS, 32)
    backlog = min(max(budget // 4, 16), 2048)
    room = budget - backlog
    if wanted > room:
        log.warning(
            "PDC_MAX_CONNECTIONS=%d does not fit under the descriptor limit (%d); %d are "
            "allowed (raise the limit, e.g. LimitNOFILE= or ulimit -n)",
            wanted,
            soft,
            room,
        )
    return min(wanted, room), backlog


def uvicorn_config(
    app: Any, settings: RuntimeSettings, host: str, port: int, loop: str, **options: Any
) -> Any:
    """uvicorn's configuration for the runtime: the guarded protocol, its deadlines and
    limit, throttled complaints (``options`` override uvicorn's own, e.g. for the
    intake benchmark, which serves the runtime as ``pdc serve`` does, without logs)."""
    import uvicorn

    connections, backlog = descriptors_for(settings.max_connections)
    guard = ConnectionGuard(connections, settings.header_timeout, settings.body_timeout)
    throttle("asyncio", "uvicorn.error")
    return uvicorn.Config(
        app,
        **{
            "host": host,
            "port": port,
            "loop": loop,
            "backlog": backlog,
            "http": type("GuardedH11", (GuardedH11,), {"guard": guard}),
            "log_level": "info",
            "timeout_keep_alive": int(settings.keepalive_timeout),
            # A stop waits this long for open requests (a deploy waiting on PagerDuty),
            # then as long again for the steps in flight.
            "timeout_graceful_shutdown": int(settings.stop_grace),
            **options,
        },
    )


# What to do about each way a bind fails, for the one line a person reads.
_BIND_FIXES = {
    errno.EADDRINUSE: "another process listens there: stop it, or choose another port "
    "with --port or PDC_PORT",
    errno.EACCES: "ports below 1024 need privileges: choose another with --port or PDC_PORT",
    errno.EADDRNOTAVAIL: "that is not an address of this machine: set --host or PDC_HOST",
}


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket the runtime will serve on, bound now: before anything starts or says
    it is ready, a port in use or a wrong host is one line naming the fix."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: unknown host ({getattr(exc, 'strerror', exc)}); "
            "set --host or PDC_HOST to an address of this machine, e.g. 127.0.0.1"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        fix = _BIND_FIXES.get(exc.errno or 0, "check --host and --port")
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}; {fix}") from None
    return sock


def serve(
    app: Any,
    settings: RuntimeSettings,
    host: str,
    port: int,
    loop: str,
    sock: socket.socket | None = None,
) -> None:
    """Run ``app`` under uvicorn with the guards above, until SIGTERM or SIGINT, on
    ``sock`` if given (see ``listening_socket``)."""
    import uvicorn

    config = uvicorn_config(app, settings, host, port, loop)
    # uvicorn set up its loggers as the config was made: the access log's filter goes on.
    logging.getLogger("uvicorn.access").addFilter(MaskedQuery())
    uvicorn.Server(config).run(sockets=[sock] if sock else None)
