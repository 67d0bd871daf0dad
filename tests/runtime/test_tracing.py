"""OpenTelemetry traces of runs and steps (``PDC_OTLP_TRACES_ENDPOINT``): a real ``pdc
serve`` exports them, through DBOS, to a local OTLP/HTTP collector; each step's span
names its action and sits in its run's trace; nothing secret is in them. In a process of
its own: a tracer provider, once set, is the process's for good."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pagerduty_connector.component.standin.server import free_port, running
from tests.support.processes import (
    admin_client,
    deliver_signed,
    deploy_acme_at,
    finished,
    pdc_serve,
    serve_env,
    wait_until,
)
from tests.support.receiver import Slack
from tests.support.runtime import API_KEY

ADMIN = "tracing-admin-token-5150"


def spans(collector: Slack) -> list[dict[str, Any]]:
    """Every span the collector was sent: name, trace id, parent and attributes."""
    found = []
    for request in collector.received:
        if request["path"] != "/v1/traces":
            continue
        export = ExportTraceServiceRequest.FromString(request["body"])
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: a.value.string_value for a in span.attributes}
                    found.append(
                        {
                            "name": span.name,
                            "trace": span.trace_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "attributes": attributes,
                        }
                    )
    return found


def test_runs_and_steps_are_traced_to_an_otlp_collector(tmp_path: Path, slack: Slack) -> None:
    with running() as pagerduty:
        port = free_port()
        env = {
            **serve_env(tmp_path, port, pagerduty.url, ADMIN),
            "PDC_OTLP_TRACES_ENDPOINT": f"{slack.url}/v1/traces",
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # export every 0.2 s, not every 5 s
        }
        server = pdc_serve(env, tmp_path / "server.log")
        api = admin_client(port, ADMIN)
        try:
            wait_until(lambda: api.get("/health").status_code == 200, 30, "the server to start")
            secret = deploy_acme_at(api, pagerduty)
            answer = deliver_signed(api, secret, "traced-1")
            assert answer.status_code == 202, answer.text
            execution = answer.json()["execution"]
            assert finished(api, execution, "the traced run")["status"] == "succeeded"

            def steps() -> list[dict[str, Any]]:
                return [
                    s for s in spans(slack) if s["attributes"].get("pdc.execution") == execution
                ]

            wait_until(lambda: len(steps()) >= 2, 30, "the steps' spans")
        finally:
            server.terminate()
            server.wait(timeout=30)
            api.close()
    traced = spans(slack)
    (run,) = [s for s in traced if s["attributes"].get("pdc.flow") == "on-incident"]
    assert run["attributes"]["pdc.instance"] == "acme"
    actions = {s["attributes"]["pdc.action"]: s for s in steps()}
    assert set(actions) == {"getIncident", "createIncidentNote"}
    for step in actions.values():  # in the run's trace, under it
        assert step["trace"] == run["trace"] and step["parent"]
    sent = b"".join(r["body"] for r in slack.received)
    for hidden in (API_KEY, ADMIN, secret):
        assert hidden.encode() not in sent
