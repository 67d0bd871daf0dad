"""The spec checker used by every test must reject what PagerDuty would reject."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.openapi import validate_request

HEADERS = {
    "Accept": "application/vnd.pagerduty+json;version=2",
    "Content-Type": "application/json",
    "Authorization": "Token token=x",
    "From": "a@example.com",
}


def rest(method: str, path: str, headers: dict[str, str] = HEADERS, **kw: Any) -> httpx.Request:
    return httpx.Request(method, "https://api.pagerduty.com" + path, headers=headers, **kw)


def test_a_valid_request_passes() -> None:
    validate_request(rest("POST", "/incidents/P1/notes", json={"note": {"content": "x"}}))


@pytest.mark.parametrize(
    "request_",
    [
        rest("POST", "/incidents/P1/notes", json={"note": {"note": "x"}}),
        rest(
            "POST",
            "/incidents/P1/notes",
            headers={k: v for k, v in HEADERS.items() if k != "From"},
            json={"note": {"content": "x"}},
        ),
        rest("GET", "/incidents", params=[("statuses[]", "bogus")]),
        rest("GET", "/incidents", params=[("limit", "abc")]),
        httpx.Request(
            "POST",
            "https://events.pagerduty.com/v2/enqueue",
            json={"event_action": "trigger", "payload": {"summary": "s"}},
        ),
    ],
    ids=["double-wrapped-note", "missing-from", "bad-enum", "bad-integer", "no-key"],
)
def test_invalid_requests_are_rejected(request_: httpx.Request) -> None:
    with pytest.raises(Exception, match=r"(?i)invalid|missing|error"):
        validate_request(request_)
