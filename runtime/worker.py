"""Flow workers: processes that run flows, so that intake never waits behind them.

A serving process that also runs flows shares its event loop, its interpreter lock and
(on SQLite) its database's write lock with every step, checkpoint and status update;
at 200 deliveries a second with a step each, a delivery waited seconds for its answer.
A worker runs flows only: it launches DBOS with the flow queues and dequeues what the
serving processes record. Runs wait in the database, so any number of serving
processes and workers share one queue, and a worker that dies has its runs recovered
by its own restart (same executor id) or taken over by another process.

``PDC_FLOW_WORKERS=N`` makes ``pdc serve`` start N workers as its children
(``FlowWorkers``): they get its settings, are restarted if one exits, are stopped with
it, and die with it if it is killed. ``pdc serve --role worker`` runs one on its own,
for a separate deployment.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import threading
import time

from pagerduty_connector.component.errors import ComponentError, ConfigurationError
from pagerduty_connector.component.manifest import Manifest, load_manifest
from pagerduty_connector.component.redact import get_logger
from pagerduty_connector.component.registry import check_implementations
from pagerduty_connector.runtime.settings import RuntimeSettings, load_settings

log = get_logger("worker")
# Set by ``FlowWorkers`` in its children: the serving process they belong to, and the
# pipe on which a worker says it is ready.
PARENT_ENV = "PDC_WORKER_PARENT"
READY_ENV = "PDC_WORKER_READY_FD"
READY = b"R"
# How long a serving process waits for its workers to be ready before it gives up.
READY_LIMIT = 120.0
# How long a stopping worker may take, beyond its grace for the steps in flight, before
# it is killed (its runs resume from their checkpoints either way).
STOP_MARGIN = 15.0
RESTART_DELAY = (1.0, 30.0)
# How much lower the scheduling priority of the serving process's own workers is.
NICENESS = 10
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """The runtime's log output (``pdc serve`` and its workers): INFO from our loggers;
    the HTTP client's line per request only at WARNING (one per PagerDuty call would
    drown the rest; the client logs its own retries)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for noisy in ("httpx2", "httpcore2", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def work(
    settings: RuntimeSettings, stop: asyncio.Event, manifest: Manifest | None = None
) -> None:
    """Run this database's queued flows until ``stop`` is set."""
    checked = manifest or load_manifest()
    check_implementations(checked)
    # Imported here: ``pdc serve`` imports this module before it decides whether the
    # metrics are shared between processes, which must be before they are made.
    from pagerduty_connector.runtime.engine import started

    async with started(settings, checked):
        log.info("flow worker %s ready", settings.executor)
        ready = os.environ.pop(READY_ENV, None)
        if ready:
            os.write(int(ready), READY)
            os.close(int(ready))
        await stop.wait()


def settings_env(settings: RuntimeSettings) -> dict[str, str]:
    """``settings`` as the ``PDC_*`` environment that reads back as them."""
    values = settings.model_dump(exclude_none=True)
    return {f"PDC_{name.upper()}": str(value) for name, value in values.items()}


class FlowWorkers:
    """The serving process's flow workers: started with it, restarted when one exits,
    stopped (gracefully, then killed) with it."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self._stopping = False
        self._keepers: list[asyncio.Task[None]] = []
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._ready: list[asyncio.Future[None]] = []

    def environment(self, index: int) -> dict[str, str]:
        """A worker's environment: this process's settings, the worker role, and an
        executor id of its own that stays the same across restarts (the first worker
        has the plain id, so it recovers what this process ran before it had workers)."""
        me = self.settings.executor_id
        return {
            **os.environ,
            **settings_env(self.settings),
            "PDC_ROLE": "worker",
            "PDC_FLOW_WORKERS": "0",
            "PDC_EXECUTOR_ID": me if index == 0 else f"{me}.{index}",
            PARENT_ENV: str(os.getpid()),
        }

    async def start(self) -> None:
        """Start the workers and wait until each is ready (so the serving process answers
        only once its flows run, and no worker's start-up competes with intake);
        ``ConfigurationError`` if one exits or hangs first."""
        loop = asyncio.get_running_loop()
        for index in range(self.settings.flow_workers):
            self._ready.append(loop.create_future())
            self._keepers.append(asyncio.create_task(self._keep(index)))
        try:
            await asyncio.wait_for(asyncio.gather(*self._ready), timeout=READY_LIMIT)
        except (TimeoutError, ConfigurationError) as exc:
            await self.stop()
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(
                f"PDC_FLOW_WORKERS: a flow worker was not ready after {READY_LIMIT:.0f} s"
            ) from None

    def pids(self) -> list[int]:
        """The process ids of the workers running now."""
        return [p.pid for p in self._processes.values() if p.returncode is None]

    async def _keep(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY[0]
        while not self._stopping:
            began = loop.time()
            read, write = os.pipe()
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    __name__,
                    env={**self.environment(index), READY_ENV: str(write)},
                    pass_fds=(write,),
                )
            except BaseException:
                os.close(read)
                raise
            finally:
                os.close(write)
            self._processes[index] = process
            said = await _said(read)
            first = self._ready[index]
            if not first.done():
                if said == READY:
                    first.set_result(None)
                else:
                    first.set_exception(
                        ConfigurationError(
                            f"PDC_FLOW_WORKERS: flow worker {index} exited with "
                            f"{await process.wait()} before it was ready (its log is above)"
                        )
                    )
                    return
            code = await process.wait()
            if self._stopping:
                return
            if loop.time() - began > 60:  # it had been running well: not a start failure
                delay = RESTART_DELAY[0]
            log.error(
                "flow worker %d exited with %s; starting it again in %.0f s", index, code, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY[1])

    async def stop(self) -> None:
        """Stop every worker: SIGTERM (their steps in flight finish, then their runs stop
        at a checkpoint), SIGKILL if one takes ``STOP_MARGIN`` seconds more than its
        grace (``PDC_STOP_GRACE``)."""
        self._stopping = True
        # The keepers first, so none starts a worker after the ones below were signalled.
        for keeper in self._keepers:
            keeper.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        running = [p for p in self._processes.values() if p.returncode is None]
        for process in running:
            process.terminate()
        try:
            limit = self.settings.stop_grace + STOP_MARGIN
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), timeout=limit)
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.warning("flow worker %d did not stop; killing it", process.pid)
                    process.kill()
                    await process.wait()


async def _said(read: int) -> bytes:
    """What a worker wrote on its readiness pipe: ``READY``, or nothing if it exited."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read, "rb", 0)
    )
    try:
        return await reader.read(len(READY))
    finally:
        transport.close()


def _die_with(parent: int) -> None:
    """End this process as soon as ``parent`` is gone, even if it was SIGKILLed: a
    restarted parent starts a worker under the same executor id, and two live
    processes under one id could both run its runs."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    if os.getppid() != parent:  # it died before the death signal was asked for
        os._exit(1)
    threading.Thread(target=watch, name="pdc-parent-watch", daemon=True).start()


async def _run(settings: RuntimeSettings, child: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # A child stops when its parent says so; Ctrl-C in a terminal reaches the whole
    # process group, and the parent answers it by stopping its workers itself.
    if not child:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    await work(settings, stop)


def run(settings: RuntimeSettings) -> None:
    """Run a worker in this process until SIGTERM (or SIGINT when it has no parent)."""
    parent = os.environ.get(PARENT_ENV)
    if parent:
        _die_with(int(parent))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # On the serving process's machine, answering deliveries comes first: runs wait
        # in the queue, a delivery waits in PagerDuty's timeout. At equal niceness, busy
        # workers starved intake (seconds per answer on two cores).
        os.nice(NICENESS)
    asyncio.run(_run(settings, child=bool(parent)))


def main() -> None:
    """Entry point of a worker started by ``FlowWorkers``."""
    configure_logging()
    try:
        settings = load_settings()
    except ComponentError as exc:
        sys.exit(f"flow worker: {exc}")
    run(settings)


if __name__ == "__main__":
    main()
