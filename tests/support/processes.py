"""Helpers for tests that run our commands as real processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2


def wait_until(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy (HTTP errors count as not yet)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except httpx2.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished(api: httpx2.Client, execution_id: str, what: str = "the execution to finish") -> Any:
    """The execution's record once it has succeeded or failed."""
    return wait_until(
        lambda: (
            (record := api.get(f"/api/executions/{execution_id}").json())["status"]
            in ("succeeded", "failed")
            and record
        ),
        30,
        what,
    )
