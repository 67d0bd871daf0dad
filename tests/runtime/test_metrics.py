"""``GET /metrics`` (``runtime/metrics.py``): what an operator alerts on moves as the
runtime works. Counters are this process's (other tests in it move them too), so each
test compares a scrape after with one before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import respx
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.app import create_app
from tests.conftest import REST
from tests.support.processes import scraped
from tests.support.runtime import (
    ADMIN,
    AUTH,
    INCIDENT,
    deliver,
    deploy_acme,
    drain,
    settings_for,
)

PATH = "/webhooks/acme/on-incident"


def moved(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    """How much one sample grew between two scrapes."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def test_metrics_need_the_admin_token_and_hold_no_secret(api: TestClient) -> None:
    bare = TestClient(api.app)
    assert bare.get("/metrics").status_code == 401
    assert bare.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    answer = api.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    assert ADMIN not in answer.text and "pdc_deliveries" in answer.text


def test_deliveries_runs_steps_and_pagerduty_answers_are_counted(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    deploy_acme(api)
    calls = {"incident": 0}

    def incident(request: Any) -> Any:
        # PagerDuty's rate limit once: the client waits it out, the step is one attempt.
        calls["incident"] += 1
        if calls["incident"] == 1:
            return httpx2.Response(429, headers={"ratelimit-reset": "0"})
        return httpx2.Response(200, json=INCIDENT)

    pd.get(f"{REST}/incidents/Q1P5").mock(side_effect=incident)
    pd.post(f"{REST}/incidents/Q1P5/notes").respond(500)  # a POST is not retried: it fails
    before = scraped(api)
    assert deliver(api, subs, PATH, "m-1").status_code == 202
    assert deliver(api, subs, PATH, "m-1").status_code == 200  # the same delivery again
    forged = api.post(PATH, content=b"{}", headers={"X-PagerDuty-Signature": "v1=00"})
    assert forged.status_code in (400, 403)
    drain(api)
    after = scraped(api)
    assert moved(before, after, "pdc_deliveries_total", status="202") == 1
    assert moved(before, after, "pdc_deliveries_total", status="200") == 1
    assert moved(before, after, "pdc_deliveries_total", status=str(forged.status_code)) == 1
    assert moved(before, after, "pdc_executions_finished_total", status="failed") == 1
    step = "pdc_step_attempts_total"
    assert moved(before, after, step, action="getIncident", outcome="ok") == 1
    assert moved(before, after, step, action="createIncidentNote", outcome="failed") == 1
    histogram = "pdc_step_attempt_duration_seconds_count"
    assert moved(before, after, histogram, action="getIncident") == 1
    answers = "pdc_pagerduty_responses_total"
    assert moved(before, after, answers, method="GET", status="429") == 1
    assert moved(before, after, answers, method="GET", status="200") == 1
    assert moved(before, after, answers, method="POST", status="500") == 1


def test_queue_depth_and_age_per_flow_are_read_from_the_database(
    database_url: str, tmp_path: Path, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """A serving process whose flows run elsewhere (``PDC_ROLE=web``, no worker up): the
    runs wait, and the queue's depth and its oldest run's age say so."""
    settings = settings_for(database_url, tmp_path, role="web")
    with TestClient(create_app(settings), headers=AUTH) as api:
        deploy_acme(api)
        for n in range(3):
            assert deliver(api, subs, PATH, f"q-{n}").status_code == 202
        seen = scraped(api)
        where = (("flow", "on-incident"), ("instance", "acme"))
        assert seen[("pdc_queue_depth", where)] == 3
        assert 0 <= seen[("pdc_queue_oldest_seconds", where)] < 60
