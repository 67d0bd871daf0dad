"""The spec checker used by every test must reject what PagerDuty would reject."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from pagerduty_connector.component.manifest import load_manifest
from tests.support.openapi import request_examples, template_for, validate_request

HEADERS = {
    "Accept": "application/vnd.pagerduty+json;version=2",
    "Content-Type": "application/json",
    "Authorization": "Token token=x",
    "From": "a@example.com",
}


def rest(method: str, path: str, headers: dict[str, str] = HEADERS, **kw: Any) -> httpx2.Request:
    return httpx2.Request(method, "https://api.pagerduty.com" + path, headers=headers, **kw)


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
        httpx2.Request(
            "POST",
            "https://events.pagerduty.com/v2/enqueue",
            json={"event_action": "trigger", "payload": {"summary": "s"}},
        ),
    ],
    ids=["double-wrapped-note", "missing-from", "bad-enum", "bad-integer", "no-key"],
)
def test_invalid_requests_are_rejected(request_: httpx2.Request) -> None:
    with pytest.raises(Exception, match=r"(?i)invalid|missing|error"):
        validate_request(request_)


pytest_plugins = ["pytester"]


def test_the_pd_fixture_fails_a_test_whose_request_breaks_the_spec(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest("from tests.conftest import *  # noqa: F403")
    pytester.makepyfile(
        """
        import httpx2

        async def test_sends_a_double_wrapped_note(pd):
            pd.post("https://api.pagerduty.com/incidents/P1/notes").respond(201, json={})
            headers = {
                "Accept": "application/vnd.pagerduty+json;version=2",
                "Authorization": "Token token=x",
                "From": "a@example.com",
            }
            async with httpx2.AsyncClient() as client:
                await client.post(
                    "https://api.pagerduty.com/incidents/P1/notes",
                    headers=headers,
                    json={"note": {"note": "x"}},
                )
        """
    )
    result = pytester.runpytest_inprocess(
        "-p",
        "asyncio",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*InvalidRequestBody*"])


def _declared_operations() -> list[tuple[str, str, str]]:
    operations = []
    for action in load_manifest().actions:
        request = action.request
        if request is None or request.base != "rest":
            continue
        concrete = request.path
        for name in request.path_params:
            concrete = concrete.replace("{" + name + "}", "P1")
        template = template_for(concrete)
        assert template is not None, action.key
        operations.append((request.method, template, concrete))
    return operations


def test_spec_request_examples_need_exactly_these_patches() -> None:
    """The published document rejects its own request examples; the patched one does not."""
    rejected_by_published = []
    for method, template, concrete in _declared_operations():
        for example in request_examples(method, template):
            request_ = rest(method, concrete, json=example)
            validate_request(request_)
            try:
                validate_request(request_, fix=False)
            except Exception:
                rejected_by_published.append((method, template))
    assert ("POST", "/incidents") in rejected_by_published  # readOnly refs, details string
    assert ("POST", "/users") in rejected_by_published


def test_literal_pattern_defect() -> None:
    request_ = rest("GET", "/change_events", params=[("since", "2020-07-17T07:42:58Z")])
    validate_request(request_)
    with pytest.raises(Exception, match=r"(?i)parameter"):
        validate_request(request_, fix=False)
