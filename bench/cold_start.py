"""Benchmark: how long ``pdc`` takes to start, against importing what the runtime needs.

Each sample is a new process, timed from launch to exit:

- ``pdc actions`` and ``pdc describe createIncidentNote`` (output to a pipe, as a
  script reads it; ``--tty`` also runs them under a pseudo-terminal, as a person
  sees them);
- the baseline ``python -c "import httpx2, starlette, pydantic"`` in the same venv.

Runs are interleaved and the medians compared; the target is ours <= 1.5x the
baseline. Bytecode caches are allowed (an installed wheel has them), and one
unmeasured run of each warms them and the manifest cache first.

Run from the repository root: ``python -m bench.cold_start [--runs 21] [--tty]``.
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TARGET = 1.5


def sample(command: list[str], env: dict[str, str], tty: bool) -> float:
    """Seconds from launch to exit of one process."""
    started = time.perf_counter()
    if tty:
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(command[0], command, env)
        while True:
            try:
                if not os.read(fd, 65536):
                    break
            except OSError:
                break
        os.waitpid(pid, 0)
    else:
        subprocess.run(command, env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    """Measure and print ours against the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--tty", action="store_true", help="also run under a pseudo-terminal")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as cache:
        env.update(PDC_CACHE_DIR=cache, COLUMNS="120")
        cases = {
            "baseline: import httpx2, starlette, pydantic": (
                [str(BIN / "python"), "-c", "import httpx2, starlette, pydantic"],
                False,
            ),
            "pdc actions": ([str(BIN / "pdc"), "actions"], False),
            "pdc describe createIncidentNote": (
                [str(BIN / "pdc"), "describe", "createIncidentNote"],
                False,
            ),
        }
        if args.tty:
            cases["pdc actions (terminal)"] = ([str(BIN / "pdc"), "actions"], True)
        for command, tty in cases.values():
            sample(command, env, tty)  # warm bytecode and manifest caches
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, (command, tty) in cases.items():
                times[name].append(sample(command, env, tty))
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians[next(iter(cases))]
    print(f"{'command':48} {'median ms':>10} {'ratio':>7}")
    for name, median in medians.items():
        print(f"{name:48} {median * 1000:10.0f} {median / base:7.2f}")
    worst = max(m / base for name, m in medians.items() if name.startswith("pdc"))
    verdict = "met" if worst <= TARGET else "NOT met"
    print(f"\ntarget: every pdc command <= {TARGET}x the baseline: {verdict} (worst {worst:.2f}x)")


if __name__ == "__main__":
    main()
