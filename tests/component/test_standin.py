"""The stand-in PagerDuty (``pdc mock``): holding the next request on demand."""

from __future__ import annotations

import time

import httpx2

from pagerduty_connector.component.standin.server import HOLD_PATH, running


def test_the_next_request_named_is_held_once() -> None:
    with running() as pagerduty, httpx2.Client(base_url=pagerduty.url) as client:
        asked = client.post(HOLD_PATH, json={"method": "get", "path": "/abilities", "seconds": 0.4})
        assert asked.status_code == 204
        started = time.monotonic()
        assert client.get("/abilities").status_code == 200
        held = time.monotonic() - started
        started = time.monotonic()
        assert client.get("/abilities").status_code == 200
        after = time.monotonic() - started
    assert held >= 0.4 > after
    assert pagerduty.requests == [("GET", "/abilities")] * 2  # the control call is not one
