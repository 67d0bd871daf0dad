"""Deploys hold no database transaction across PagerDuty calls, and one instance deploys
one at a time."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2
import respx
from starlette.testclient import TestClient

from pagerduty_connector.component.standin.subscriptions import FakeSubscriptions
from pagerduty_connector.runtime.store import InstanceRow, SubscriptionRow, select
from pagerduty_connector.triggers.signature import sign
from tests.support.runtime import EVENT, FLOW, PUBLIC, answer_incident, deliver, deploy_acme, drain


def hold_listings(pd: respx.MockRouter) -> tuple[threading.Event, threading.Event]:
    """Make the next subscription listings wait for ``release``; ``waiting`` says one does."""
    waiting, release = threading.Event(), threading.Event()
    route = pd.routes["subscriptions"]
    answer: Callable[[httpx2.Request], Any] = route.side_effect  # type: ignore[assignment]

    async def held(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and not release.is_set():
            waiting.set()
            await asyncio.to_thread(release.wait, 30)
        return answer(request)

    route.side_effect = held
    return waiting, release


def test_a_delivery_is_recorded_while_another_instance_deploys_slowly(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    answer_incident(pd)
    deploy_acme(api)
    waiting, release = hold_listings(pd)
    results: list[httpx2.Response] = []
    slow = threading.Thread(
        target=lambda: results.append(
            api.post("/api/instances", json={"name": "other", "connection": "ops", "flows": [FLOW]})
        )
    )
    slow.start()
    try:
        assert waiting.wait(10), "the second deploy never listed subscriptions"
        answer = deliver(api, subs, "/webhooks/acme/on-incident", "during-deploy")
        still_deploying = not release.is_set() and slow.is_alive()
    finally:
        release.set()
        slow.join(30)
    assert still_deploying and answer.status_code == 202, answer.text
    assert results[0].status_code == 201, results[0].text
    drain(api)
    record = api.get(f"/api/executions/{answer.json()['execution']}").json()
    assert record["status"] == "succeeded"


def test_concurrent_redeploys_of_one_instance_leave_one_subscription_per_flow(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    deploy_acme(api)
    second = copy.deepcopy(FLOW)
    second["name"] = "second"
    body = {"connection": "ops", "flows": [FLOW, second]}
    # Both redeploys want a subscription for 'second', which does not exist yet: without
    # one deploy at a time per instance, both would create it.
    waiting, release = hold_listings(pd)
    answers: list[httpx2.Response] = []
    workers = [
        threading.Thread(target=lambda: answers.append(api.put("/api/instances/acme", json=body)))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    assert waiting.wait(10)
    release.set()
    for worker in workers:
        worker.join(30)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    urls = sorted(s["delivery_method"]["url"] for s in subs.subscriptions.values())
    assert urls == [
        "https://pdc.example.com/webhooks/acme/on-incident",
        "https://pdc.example.com/webhooks/acme/second",
    ]
    shown = api.get("/api/instances/acme").json()
    assert sorted(shown["webhookUrls"]) == ["on-incident", "second"]


def test_intake_reads_again_what_another_process_just_deployed(
    api: TestClient, pd: respx.MockRouter, subs: FakeSubscriptions
) -> None:
    """A redeploy through another replica changes the secret and adds a flow; this
    process's cached view must not answer 403 or 404 for them."""
    answer_incident(pd)
    deploy_acme(api)
    assert deliver(api, subs, "/webhooks/acme/on-incident", "warm").status_code == 202
    engine = api.app.state.engine  # type: ignore[attr-defined]
    secret = subs.secrets.popitem()[1]
    rotated = "rotated-secret-from-another-replica"
    second = copy.deepcopy(FLOW)
    second["name"] = "second"

    async def as_another_process() -> None:
        async with engine.store.session() as db:
            row = (await db.execute(select(SubscriptionRow))).scalar_one()
            row.secret = engine.box.seal({"secret": rotated})
            instance = await db.get(InstanceRow, "acme")
            instance.flows = [*instance.flows, second]
            db.add(
                SubscriptionRow(
                    instance_id="acme",
                    flow="second",
                    subscription_id="PSECOND",
                    url=f"{PUBLIC}/webhooks/acme/second",
                    secret=engine.box.seal({"secret": rotated}),
                )
            )
            await db.commit()

    api.portal.call(as_another_process)  # type: ignore[union-attr]
    time.sleep(0.06)  # older than refresh's minimum age: a refusal reads the store again
    body = json.dumps(EVENT).encode()
    for path, webhook in (("on-incident", "rotated"), ("second", "new-flow")):
        answer = api.post(
            f"/webhooks/acme/{path}",
            content=body,
            headers={"X-Webhook-Id": webhook, "X-PagerDuty-Signature": sign(body, rotated)},
        )
        assert answer.status_code == 202, answer.text
    stale = api.post(
        "/webhooks/acme/on-incident",
        content=body,
        headers={"X-Webhook-Id": "old", "X-PagerDuty-Signature": sign(body, secret)},
    )
    assert stale.status_code == 403
    drain(api)
