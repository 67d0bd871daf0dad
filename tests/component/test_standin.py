"""The stand-in PagerDuty (``pdc mock``): holding the next request on demand, its request log."""

from __future__ import annotations

import time

import httpx2

from pagerduty_connector.component.standin.server import HOLD_PATH, REQUESTS_PATH, running


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


def test_the_request_log_lists_each_request_with_its_time_and_body() -> None:
    with running() as pagerduty, httpx2.Client(base_url=pagerduty.url) as client:
        before = time.time()
        client.get("/incidents/Q1")
        note = {"note": {"content": "seen"}}
        assert client.post("/incidents/Q1/notes", json=note).status_code == 201
        listed = client.get(REQUESTS_PATH).json()
        later = client.get(REQUESTS_PATH, params={"since": listed["next"] - 1}).json()
    assert [(r["method"], r["path"], r["body"]) for r in listed["requests"]] == [
        ("GET", "/incidents/Q1", None),
        ("POST", "/incidents/Q1/notes", note),
    ]
    assert all(before <= r["at"] <= time.time() for r in listed["requests"])
    assert listed["next"] == 2  # the log's own reads are not in it
    assert [r["path"] for r in later["requests"]] == ["/incidents/Q1/notes"]


def test_each_request_is_echoed_on_one_line() -> None:
    lines: list[str] = []
    with running(echo=lines.append) as pagerduty, httpx2.Client(base_url=pagerduty.url) as c:
        c.get("/incidents/Q1")
        c.post("/incidents/Q1/notes", json={"note": {"content": "Investigating: " + "x" * 300}})
    assert lines[0] == "GET /incidents/Q1"
    assert lines[1].startswith('POST /incidents/Q1/notes {"note": {"content": "Investigating: x')
    assert len(lines[1]) == 160 and lines[1].endswith("…") and "\n" not in lines[1]
