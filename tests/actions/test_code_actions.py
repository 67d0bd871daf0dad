"""Actions with behaviour of their own: rawRequest, the Events API, webhook cleanup."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
import respx

from pagerduty_connector.component.errors import InputError, PagerDutyError
from pagerduty_connector.component.manifest import Manifest
from tests.conftest import API_KEY, EVENTS, REST, FakeClock
from tests.support.examples import examples
from tests.support.paging import PagedList

LIST = {"incidents": [], "limit": 25, "offset": 0, "more": False, "total": None}


# --- rawRequest -------------------------------------------------------------


async def test_raw_request_uses_connection_auth_and_pagerduty_headers(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.get(f"{REST}/incidents").respond(json=LIST)
    result = await run(
        "rawRequest",
        {
            "url": "/incidents",
            "method": "GET",
            "queryParams": [{"key": "statuses[]", "value": "triggered"}],
            "headers": {"Authorization": "Token token=stolen", "X-Trace": "abc"},
        },
    )
    assert result == {"data": LIST, "statusCode": 200}
    sent = route.calls.last.request
    assert sent.headers["Authorization"] == f"Token token={API_KEY}"
    assert sent.headers["Accept"] == "application/vnd.pagerduty+json;version=2"
    assert sent.headers["X-Trace"] == "abc"
    assert list(sent.url.params.multi_items()) == [("statuses[]", "triggered")]


async def test_raw_request_examples_from_the_manifest(
    manifest: Manifest, pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    action = next(a for a in manifest.actions if a.key == "rawRequest")
    ex = {k: v for k, v in examples(action).items() if k not in ("formData", "fileData", "data")}
    ex.pop("fileDataFileNames")
    route = pd.get(f"{REST}/incidents").respond(json=LIST)
    result = await run("rawRequest", ex)
    assert route.called and result["data"] == LIST
    assert route.calls.last.request.extensions["timeout"]["read"] == 2.0  # example: 2000 ms


async def test_raw_request_accepts_an_absolute_url_on_the_api_host(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.get(f"{REST}/incidents").respond(json=LIST)
    await run("rawRequest", {"url": f"{REST}/incidents", "method": "GET"})
    assert route.called


@pytest.mark.parametrize(
    "url",
    ["https://evil.example.com/incidents", "//evil.example.com/x", "http://api.pagerduty.com/x"],
)
async def test_raw_request_refuses_foreign_hosts(
    url: str, pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    catch_all = pd.route().respond(200)
    with pytest.raises(InputError, match=r"rawRequest: input 'url': refusing to send"):
        await run("rawRequest", {"url": url, "method": "GET"})
    assert not catch_all.called


@pytest.mark.no_spec
async def test_raw_request_multipart_with_file_names(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.post(f"{REST}/upload").respond(200, json={"ok": True})
    await run(
        "rawRequest",
        {
            "url": "/upload",
            "method": "POST",
            "formData": [{"key": "kind", "value": "log"}],
            "fileData": [{"key": "attachment", "value": "My File Contents"}],
            "fileDataFileNames": {"attachment": "report.txt"},
        },
    )
    sent = route.calls.last.request
    assert sent.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    body = sent.content.decode()
    assert 'name="kind"' in body and "log" in body
    assert 'name="attachment"; filename="report.txt"' in body and "My File Contents" in body


async def test_raw_request_data_with_form_data_is_refused(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    catch_all = pd.route().respond(200)
    with pytest.raises(InputError, match="input 'data': cannot be combined with formData"):
        await run(
            "rawRequest",
            {"url": "/x", "method": "POST", "data": {"a": 1}, "formData": {"b": "2"}},
        )
    assert not catch_all.called


@pytest.mark.no_spec
async def test_raw_request_text_and_binary_responses(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    pd.get(f"{REST}/report").respond(
        200, content=b"\x00\x01binary", headers={"content-type": "x/y"}
    )
    text = await run("rawRequest", {"url": "/report", "method": "GET", "responseType": "text"})
    assert text["data"] == "\x00\x01binary"
    raw = await run("rawRequest", {"url": "/report", "method": "GET", "responseType": "binary"})
    assert base64.b64decode(raw["data"]) == b"\x00\x01binary"
    assert raw["encoding"] == "base64" and raw["contentType"] == "x/y"


async def test_raw_request_json_body(pd: respx.MockRouter, run: Callable[..., Any]) -> None:
    route = pd.put(f"{REST}/incidents").respond(200, json={"incidents": []})
    body = {"incidents": [{"id": "P1", "type": "incident_reference", "status": "resolved"}]}
    await run("rawRequest", {"url": "/incidents", "method": "PUT", "data": json.dumps(body)})
    sent = route.calls.last.request
    assert json.loads(sent.content) == body and sent.headers["From"]


async def test_raw_request_own_retry_settings(
    pd: respx.MockRouter, run: Callable[..., Any], clock: FakeClock
) -> None:
    route = pd.get(f"{REST}/incidents").mock(
        side_effect=[httpx2.Response(503), httpx2.Response(200, json=LIST)]
    )
    await run(
        "rawRequest", {"url": "/incidents", "method": "GET", "maxRetries": "2", "retryDelayMS": 250}
    )
    assert route.call_count == 2 and clock.sleeps == [0.25]


async def test_raw_request_delay_is_honoured_up_to_its_bound_and_refused_beyond(
    pd: respx.MockRouter, run: Callable[..., Any], clock: FakeClock
) -> None:
    """A delay the client would cap (30 s) is refused with the fix, not cut silently."""
    route = pd.get(f"{REST}/incidents").mock(
        side_effect=[httpx2.Response(503), httpx2.Response(200, json=LIST)]
    )
    inputs = {"url": "/incidents", "method": "GET", "maxRetries": "1"}
    await run("rawRequest", {**inputs, "retryDelayMS": 30000})
    assert clock.sleeps == [30.0]
    with pytest.raises(InputError, match="retryDelayMS': must be at most 30000, got 60000") as info:
        await run("rawRequest", {**inputs, "retryDelayMS": 60000})
    assert "use a wait step" in str(info.value)
    assert route.call_count == 2  # the refused step sent nothing


async def test_raw_request_defaults_to_no_retries(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.get(f"{REST}/incidents").respond(503)
    with pytest.raises(PagerDutyError, match="HTTP 503"):
        await run("rawRequest", {"url": "/incidents", "method": "GET"})
    assert route.call_count == 1


async def test_raw_request_retry_all_errors_retries_4xx(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    route = pd.get(f"{REST}/incidents").mock(
        side_effect=[httpx2.Response(409), httpx2.Response(200, json=LIST)]
    )
    inputs = {"url": "/incidents", "method": "GET", "maxRetries": "1", "retryAllErrors": True}
    await run("rawRequest", inputs)
    assert route.call_count == 2


async def test_raw_request_debug_log_is_redacted(
    pd: respx.MockRouter, run: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    pd.get(f"{REST}/incidents").respond(json=LIST)
    caplog.set_level(logging.DEBUG, logger="pdc")
    await run(
        "rawRequest",
        {
            "url": "/incidents",
            "method": "GET",
            "debugRequest": True,
            "headers": {"X-Api-Key": "hunter2-secret", "X-Trace": "abc"},
        },
    )
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "rawRequest debug: GET /incidents" in logged and "X-Trace" in logged
    assert "hunter2-secret" not in logged and API_KEY not in logged


# --- Events API -------------------------------------------------------------


def rfc3339(event: dict[str, Any]) -> dict[str, Any]:
    """The reference example with its ``+0000`` offset written as ``+00:00``."""
    payload = {**event["payload"], "timestamp": "2015-07-17T08:42:58.315+00:00"}
    return {**event, "payload": payload}


async def test_send_event_reference_example(
    manifest: Manifest,
    pd: respx.MockRouter,
    run: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pdc")
    action = next(a for a in manifest.actions if a.key == "sendEvent")
    event = examples(action)["event"]
    answer = {"status": "success", "message": "Event processed", "dedup_key": "k1"}
    route = pd.post(f"{EVENTS}/enqueue").respond(202, json=answer)
    assert await run("sendEvent", {"event": event}) == {"data": answer}
    sent = route.calls.last.request
    assert event["payload"]["timestamp"] == "2015-07-17T08:42:58.315+0000"
    assert json.loads(sent.content) == rfc3339(event)
    assert "Authorization" not in sent.headers
    assert event["routing_key"] not in "\n".join(r.getMessage() for r in caplog.records)


async def test_send_change_event_reference_example(
    manifest: Manifest, pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    action = next(a for a in manifest.actions if a.key == "sendChangeEvent")
    event = examples(action)["event"]
    route = pd.post(f"{EVENTS}/change/enqueue").respond(202, json={"status": "success"})
    await run("sendChangeEvent", {"event": event})
    assert json.loads(route.calls.last.request.content) == rfc3339(event)


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"event_action": "trigger"}, "'routing_key' is required"),
        ({"routing_key": "R" * 32, "event_action": "poke"}, "'event_action' must be one of"),
        (
            {"routing_key": "R" * 32, "event_action": "trigger", "payload": {"summary": "s"}},
            "'payload.source' is required",
        ),
        (
            {
                "routing_key": "R" * 32,
                "event_action": "trigger",
                "payload": {"summary": "s", "source": "h", "severity": "fatal"},
            },
            "'payload.severity' must be one of critical, error, warning, info",
        ),
        ({"routing_key": "R" * 32, "event_action": "resolve"}, "'dedup_key' is required"),
    ],
)
async def test_send_event_checks_the_event_before_sending(
    event: dict[str, Any], problem: str, pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    catch_all = pd.route().respond(202)
    with pytest.raises(InputError, match=r"sendEvent: input 'event': ") as info:
        await run("sendEvent", {"event": event})
    assert problem in str(info.value)
    assert not catch_all.called


async def test_events_api_error_is_mapped(pd: respx.MockRouter, run: Callable[..., Any]) -> None:
    body = {"status": "invalid event", "message": "Event object is invalid", "errors": ["bad"]}
    pd.post(f"{EVENTS}/change/enqueue").respond(400, json=body)
    with pytest.raises(PagerDutyError) as info:
        await run(
            "sendChangeEvent", {"event": {"routing_key": "R" * 32, "payload": {"summary": "s"}}}
        )
    assert (info.value.status, info.value.message, info.value.errors) == (
        400,
        "Event object is invalid",
        ["bad"],
    )


# --- deleteAllInstanceWebhooks ------------------------------------------------


def subscription(n: int, url: str) -> dict[str, Any]:
    return {
        "id": f"W{n:04d}",
        "type": "webhook_subscription",
        "delivery_method": {"type": "http_delivery_method", "url": url},
    }


async def test_delete_all_instance_webhooks_scans_every_page(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    mine = "https://pdc.example.com/webhooks/i1/flow-a"
    also_mine = "https://pdc.example.com/webhooks/i1/flow-b"
    subs = [subscription(n, f"https://other.example.com/{n}") for n in range(250)]
    for n, url in ((3, mine), (180, also_mine), (249, mine)):
        subs[n] = subscription(n, url)
    pd.get(f"{REST}/webhook_subscriptions").mock(
        side_effect=PagedList("webhook_subscriptions", subs)
    )
    deleted = pd.delete(url__regex=rf"{REST}/webhook_subscriptions/W\d+").mock(
        side_effect=lambda request: httpx2.Response(
            404 if request.url.path.endswith("W0180") else 204
        )
    )
    result = await run(
        "deleteAllInstanceWebhooks",
        {"webhookUrls": mine},
        webhook_urls={"flow-b": also_mine},
    )
    assert sorted(c.request.url.path for c in deleted.calls) == [
        "/webhook_subscriptions/W0003",
        "/webhook_subscriptions/W0180",
        "/webhook_subscriptions/W0249",
    ]
    assert result == {
        "data": {"data": "Action successfully completed.", "deleted": ["W0003", "W0249"]}
    }


async def test_delete_all_instance_webhooks_needs_urls(
    pd: respx.MockRouter, run: Callable[..., Any]
) -> None:
    catch_all = pd.route().respond(200)
    with pytest.raises(InputError, match="input 'webhookUrls': no webhook URLs"):
        await run("deleteAllInstanceWebhooks", {})
    assert not catch_all.called
