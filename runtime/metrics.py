"""Prometheus metrics for operators (``GET /metrics``, with the admin token).

What an operator alerts on during an incident: deliveries refused or not recorded
(by answer status), runs ending failed, a queue growing or its oldest run waiting, a
step slow or retried, PagerDuty answering 429 or not at all, the request budget making
steps wait, the database away. Counters and histograms are counted where things happen
in this process; the queue's depth and age, and the runs in progress, are read from the
database at each scrape, so they are the same whichever replica is scraped and include
the runs of every worker.

Flow workers (``PDC_FLOW_WORKERS``) are child processes: ``pdc serve`` then gives them
and itself one folder for prometheus-client's multiprocess mode (its public way to sum
counters across processes), and ``/metrics`` reads them all. A separate ``pdc serve
--role worker`` serves no HTTP: its runs show in the database-read figures only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from pagerduty_connector.runtime.settings import METRICS_ENV

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from pagerduty_connector.runtime.engine import Engine

CONTENT_TYPE = CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry()

DELIVERIES = Counter(
    "pdc_deliveries",
    "Webhook deliveries answered, by HTTP status (202 recorded, 200 a redelivery, "
    "4xx refused, 503 not recorded: the database was away)",
    ["status"],
    registry=REGISTRY,
)
EXECUTIONS = Counter(
    "pdc_executions_finished",
    "Executions that ended, by status (succeeded, succeeded_with_errors, failed, cancelled)",
    ["status"],
    registry=REGISTRY,
)
STEP_SECONDS = Histogram(
    "pdc_step_attempt_duration_seconds",
    "How long one attempt of a step took, by action (http for an http step)",
    ["action"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
STEP_ATTEMPTS = Counter(
    "pdc_step_attempts",
    "Attempts of steps, by action and outcome (ok; retryable: tried again if attempts "
    "are left; failed: not retried)",
    ["action", "outcome"],
    registry=REGISTRY,
)
PAGERDUTY = Counter(
    "pdc_pagerduty_responses",
    "PagerDuty's answers, by method and status ('none': it could not be reached)",
    ["method", "status"],
    registry=REGISTRY,
)
BUDGET_WAIT = Counter(
    "pdc_pagerduty_budget_wait_seconds",
    "Seconds requests waited for the client's request budget (PAGERDUTY_REQUESTS_PER_MINUTE)",
    registry=REGISTRY,
)
DATABASE_UNAVAILABLE = Counter(
    "pdc_database_unavailable",
    "Times the database was found away, by where (a request answered 503, a run's own "
    "read or write that waits for it)",
    ["where"],
    registry=REGISTRY,
)
DATABASE_BACK = Counter(
    "pdc_database_recovered",
    "Times a run's read or write that waited for the database went on once it was back",
    registry=REGISTRY,
)


class PagerDutyObserver:
    """The PagerDuty client's observer (``component.client.Observer``): its answers and
    its budget's waits, as counters."""

    def answered(self, method: str, status: int | None) -> None:
        """Count one answer (or none)."""
        PAGERDUTY.labels(method, str(status) if status is not None else "none").inc()

    def waited(self, seconds: float) -> None:
        """Add a wait on the request budget."""
        BUDGET_WAIT.inc(seconds)


OBSERVER = PagerDutyObserver()


def step_attempt(action: str, seconds: float, ok: bool, retryable: bool) -> None:
    """Count one attempt of a step and how long it took."""
    STEP_SECONDS.labels(action).observe(seconds)
    outcome = "ok" if ok else "retryable" if retryable else "failed"
    STEP_ATTEMPTS.labels(action, outcome).inc()


class FromDatabase(Collector):
    """Figures read from the database at each scrape (``refresh`` fills them just before):
    per flow, the runs queued, the age of the oldest, the runs running and waiting."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, int, float]] = []

    def collect(self) -> Iterator[Metric]:
        """The last figures read."""
        depth = GaugeMetricFamily(
            "pdc_queue_depth",
            "Executions received and not yet started, per flow",
            labels=["instance", "flow"],
        )
        oldest = GaugeMetricFamily(
            "pdc_queue_oldest_seconds",
            "How long the oldest execution not yet started has waited, per flow",
            labels=["instance", "flow"],
        )
        active = GaugeMetricFamily(
            "pdc_executions_in_progress",
            "Executions running or waiting (a wait step), per flow",
            labels=["instance", "flow", "status"],
        )
        for instance, flow, status, count, age in self.rows:
            if status == "received":
                depth.add_metric([instance, flow], count)
                oldest.add_metric([instance, flow], age)
            else:
                active.add_metric([instance, flow, status], count)
        yield from (depth, oldest, active)

    async def refresh(self, engine: Engine) -> None:
        """Read the unfinished executions, counted per flow and status."""
        from sqlalchemy import func, select

        from pagerduty_connector.runtime.durable import UNFINISHED
        from pagerduty_connector.runtime.store import ExecutionRow, now

        query = (
            select(
                ExecutionRow.instance_id,
                ExecutionRow.flow,
                ExecutionRow.status,
                func.count(),
                func.min(ExecutionRow.received_at),
            )
            .where(ExecutionRow.status.in_(UNFINISHED))
            .group_by(ExecutionRow.instance_id, ExecutionRow.flow, ExecutionRow.status)
        )
        async with engine.store.session() as db:
            found = (await db.execute(query)).all()
        moment = now()
        rows = []
        for instance, flow, status, count, first in found:
            first = first if first.tzinfo else first.replace(tzinfo=moment.tzinfo)
            rows.append((instance, flow, status, count, (moment - first).total_seconds()))
        self.rows = rows


DATABASE_FIGURES = FromDatabase()


def exposition() -> bytes:
    """The text Prometheus scrapes: this process's metrics (or, in multiprocess mode,
    every process's) and the figures last read from the database."""
    folder = os.environ.get(METRICS_ENV)
    if folder:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=folder)
    else:
        registry = REGISTRY
    combined = CollectorRegistry()
    combined.register(_Both(registry))
    combined.register(DATABASE_FIGURES)
    return generate_latest(combined)


class _Both(Collector):
    """A registry's metrics, as one collector of another registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        """What the registry holds."""
        return self.registry.collect()
