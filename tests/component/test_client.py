"""The one PagerDuty client: headers, regions, From, retries, budget, errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
import respx

from pagerduty_connector.component.client import ClientSettings, PagerDutyClient, RetryPolicy
from pagerduty_connector.component.errors import ConfigurationError, InputError, PagerDutyError
from pagerduty_connector.connections import ConnectionConfig
from tests.conftest import API_KEY, FROM, REST, FakeClock, MakeCtx

INCIDENT = {"incident": {"id": "PT4KHLK", "title": "Disk full"}}
NOTE = {"note": {"content": "On it"}}


async def test_api_key_and_pagerduty_headers(pd: respx.MockRouter, run: Callable[..., Any]) -> None:
    route = pd.get(f"{REST}/incidents/PT4KHLK").respond(json=INCIDENT)
    assert await run("getIncident", {"id": "PT4KHLK"}) == {"data": INCIDENT}
    sent = route.calls.last.request
    assert sent.headers["Authorization"] == f"Token token={API_KEY}"
    assert sent.headers["Accept"] == "application/vnd.pagerduty+json;version=2"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["From"] == FROM
    assert sent.extensions["timeout"]["read"] == 30.0


async def test_oauth_connection_sends_bearer(pd: respx.MockRouter, run: Callable[..., Any]) -> None:
    route = pd.get(f"{REST}/incidents/PT4KHLK").respond(json=INCIDENT)
    await run("getIncident", {"id": "PT4KHLK"}, kind="oauth2", secret="oauth-access-token-1")
    assert route.calls.last.request.headers["Authorization"] == "Bearer oauth-access-token-1"


async def test_eu_region_uses_eu_hosts(pd: respx.MockRouter, run: Callable[..., Any]) -> None:
    route = pd.get("https://api.eu.pagerduty.com/incidents/PT4KHLK").respond(json=INCIDENT)
    await run("getIncident", {"id": "PT4KHLK"}, region="eu")
    assert route.called
    client = PagerDutyClient(ConnectionConfig("apiKey", API_KEY, None, "eu"))
    assert client.url_for("/enqueue", "events") == "https://events.eu.pagerduty.com/v2/enqueue"
    await client.aclose()


def test_base_urls_overridable_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGERDUTY_API_URL", "http://127.0.0.1:9/api/")
    monkeypatch.setenv("PAGERDUTY_EVENTS_URL", "http://e/v2")
    settings = ClientSettings.from_env()
    client = PagerDutyClient(ConnectionConfig("apiKey", API_KEY), settings)
    assert client.url_for("/incidents") == "http://127.0.0.1:9/api/incidents"
    assert client.url_for("/enqueue", "events") == "http://e/v2/enqueue"


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``PAGERDUTY_*`` variable from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("PAGERDUTY_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_bad_settings_and_connections_are_clear_errors(bare_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="PAGERDUTY_API_TOKEN"):
        ConnectionConfig.from_env()
    bare_env.setenv("PAGERDUTY_API_TOKEN", "k")
    bare_env.setenv("PAGERDUTY_REGION", "apac")
    with pytest.raises(ConfigurationError, match=r"PAGERDUTY_REGION: Input should be 'us' or 'eu'"):
        ConnectionConfig.from_env()
    bare_env.setenv("PAGERDUTY_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match=r"PAGERDUTY_TIMEOUT: Input should be a valid"):
        ClientSettings.from_env()


def test_environment_values_are_read_cleaned(bare_env: pytest.MonkeyPatch) -> None:
    bare_env.setenv("PAGERDUTY_OAUTH_TOKEN", " tok ")
    bare_env.setenv("PAGERDUTY_REGION", " EU ")
    bare_env.setenv("PAGERDUTY_FROM", "lead@example.com")
    bare_env.setenv("PAGERDUTY_REQUESTS_PER_MINUTE", "0")
    bare_env.setenv("PAGERDUTY_API_URL", "")
    connection, settings = ConnectionConfig.from_env(), ClientSettings.from_env()
    assert (connection.kind, connection.secret, connection.region) == ("oauth2", "tok", "eu")
    assert connection.from_email == "lead@example.com"
    assert (settings.requests_per_minute, settings.api_url, settings.timeout) == (None, None, 30)


async def test_step_from_overrides_connection_default(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.post(f"{REST}/incidents/PT4KHLK/notes").respond(201, json=NOTE)
    await run("createIncidentNote", {"id": "PT4KHLK", "note": "On it", "from": "lead@example.com"})
    assert route.calls.last.request.headers["From"] == "lead@example.com"


async def test_missing_from_is_an_input_error_before_sending(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.post(f"{REST}/incidents/PT4KHLK/notes").respond(201, json=NOTE)
    with pytest.raises(InputError, match=r"createIncidentNote: input 'from': PagerDuty requires"):
        await run("createIncidentNote", {"id": "PT4KHLK", "note": "On it"}, from_email=None)
    assert not route.called


async def test_no_from_header_when_none_is_configured(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.get(f"{REST}/incidents/PT4KHLK").respond(json=INCIDENT)
    await run("getIncident", {"id": "PT4KHLK"}, from_email=None)
    assert "From" not in route.calls.last.request.headers


async def test_429_waits_ratelimit_reset(
    pd: respx.MockRouter, run: Callable[..., Any], clock: FakeClock
) -> None:
    route = pd.get(f"{REST}/incidents/PT4KHLK").mock(
        side_effect=[
            httpx2.Response(429, headers={"ratelimit-reset": "7"}, json={"error": {"code": 2020}}),
            httpx2.Response(200, json=INCIDENT),
        ]
    )
    assert await run("getIncident", {"id": "PT4KHLK"}) == {"data": INCIDENT}
    assert route.call_count == 2
    assert clock.sleeps == [7.0]


async def test_429_without_reset_backs_off_exponentially(
    pd: respx.MockRouter, run: Callable[..., Any], clock: FakeClock
) -> None:
    pd.post(f"{REST}/incidents/PT4KHLK/notes").mock(
        side_effect=[httpx2.Response(429), httpx2.Response(429), httpx2.Response(201, json=NOTE)]
    )
    await run("createIncidentNote", {"id": "PT4KHLK", "note": "On it"})
    assert clock.sleeps == [0.5, 1.0]


async def test_5xx_on_get_retried_then_reported(
    pd: respx.MockRouter, run: Callable[..., Any], clock: FakeClock
) -> None:
    route = pd.get(f"{REST}/incidents/PT4KHLK").respond(503, text="unavailable")
    with pytest.raises(PagerDutyError) as info:
        await run("getIncident", {"id": "PT4KHLK"})
    assert route.call_count == 6  # first try + max_retries (5)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert info.value.status == 503


async def test_5xx_on_post_is_not_retried(pd: respx.MockRouter, run: Callable[..., Any]) -> None:
    route = pd.post(f"{REST}/incidents/PT4KHLK/notes").respond(502)
    with pytest.raises(PagerDutyError, match="HTTP 502"):
        await run("createIncidentNote", {"id": "PT4KHLK", "note": "On it"})
    assert route.call_count == 1


async def test_post_retried_when_connection_failed_before_sending(
    pd: respx.MockRouter, run: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    route = pd.post(f"{REST}/incidents/PT4KHLK/notes").mock(
        side_effect=[httpx2.ConnectError("refused"), httpx2.Response(201, json=NOTE)]
    )
    assert await run("createIncidentNote", {"id": "PT4KHLK", "note": "On it"}) == {"data": NOTE}
    assert route.call_count == 2
    # Nobody waits in silence: the retry is a warning that says where, why and how long.
    (said,) = [r for r in caplog.records if "trying again" in r.getMessage()]
    assert said.levelname == "WARNING"
    assert f"could not reach PagerDuty at {REST} (ConnectError: refused)" in said.getMessage()
    assert "(attempt 2 of 6)" in said.getMessage()


async def test_post_not_retried_after_the_request_was_sent(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.post(f"{REST}/incidents/PT4KHLK/notes").mock(side_effect=httpx2.ReadTimeout("slow"))
    with pytest.raises(PagerDutyError, match="no response: could not reach PagerDuty"):
        await run("createIncidentNote", {"id": "PT4KHLK", "note": "On it"})
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("failure", "sent"),
    [
        (httpx2.ConnectError("[Errno 111] Connection refused"), False),
        (httpx2.ConnectTimeout("timed out"), False),
        (httpx2.ReadTimeout("slow"), True),
        (httpx2.RemoteProtocolError("peer closed"), True),
    ],
)
async def test_an_error_says_whether_the_request_may_have_left(
    pd: respx.MockRouter, run: Callable[..., Any], failure: Exception, sent: bool
) -> None:
    pd.post(f"{REST}/incidents/PT4KHLK/notes").mock(side_effect=failure)
    with pytest.raises(PagerDutyError) as caught:
        await run("createIncidentNote", {"id": "PT4KHLK", "note": "On it"})
    assert caught.value.sent is sent
    # The person reading it learns where the runtime was trying to go, and why not.
    assert f"could not reach PagerDuty at {REST} ({type(failure).__name__}: " in str(caught.value)


async def test_retry_budget_bounds_total_wait(
    pd: respx.MockRouter, run: Callable[..., Any], clock: FakeClock
) -> None:
    route = pd.get(f"{REST}/incidents/PT4KHLK").respond(429, headers={"ratelimit-reset": "600"})
    with pytest.raises(PagerDutyError, match=r"retry budget of 120s exhausted"):
        await run("getIncident", {"id": "PT4KHLK"})
    assert route.call_count == 1
    assert clock.sleeps == []


async def test_error_carries_pagerduty_details_and_never_the_token(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    body = {"error": {"message": "Invalid Input Provided", "code": 2001, "errors": ["bad id"]}}
    pd.get(f"{REST}/incidents/NOPE").respond(400, json=body)
    with pytest.raises(PagerDutyError) as info:
        await run("getIncident", {"id": "NOPE"})
    error = info.value
    assert (error.status, error.code, error.message, error.errors) == (
        400,
        2001,
        "Invalid Input Provided",
        ["bad id"],
    )
    assert str(error) == (
        "GET /incidents/NOPE: HTTP 400 (PagerDuty code 2001): Invalid Input Provided [bad id]"
    )
    assert API_KEY not in str(error) and API_KEY not in repr(error.to_dict())


async def test_request_budget_spaces_requests(
    pd: respx.MockRouter, make_ctx: MakeCtx, clock: FakeClock
) -> None:
    pd.get(f"{REST}/incidents/PT4KHLK").respond(json=INCIDENT)
    ctx = make_ctx(settings=ClientSettings(requests_per_minute=60, burst=1))
    for _ in range(3):
        await ctx.client.request_json("GET", "/incidents/PT4KHLK")
    assert clock.sleeps == pytest.approx([1.0, 1.0])


async def test_caller_headers_cannot_replace_the_credentials(
    pd: respx.MockRouter, clock: FakeClock
) -> None:
    route = pd.get(f"{REST}/abilities").respond(json={"abilities": []})
    client = PagerDutyClient(ConnectionConfig("apiKey", API_KEY), clock=clock)
    await client.request("GET", "/abilities", headers={"Authorization": "Token token=other"})
    assert route.calls.last.request.headers["Authorization"] == f"Token token={API_KEY}"
    await client.aclose()


def test_backoff_is_bounded_and_jittered() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=8)
    delays = [policy.backoff(n) for n in range(10)]
    assert all(0.5 <= d <= 8 for d in delays)
    assert max(delays[5:]) <= 8 and min(delays[5:]) >= 4
