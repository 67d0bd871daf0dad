"""``GET /metrics``: the Prometheus exposition (``runtime/metrics.py``), admin only."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from pagerduty_connector.runtime import metrics
from pagerduty_connector.runtime.http import engine_of
from pagerduty_connector.runtime.store.outage import unavailable


async def scrape(request: Request) -> Response:
    """
    summary: Prometheus metrics (deliveries, executions, queue depth and age per flow,
      steps, PagerDuty's answers, the request budget, the database); needs the admin token
    responses:
      200: {description: "Prometheus text format"}
    """
    try:
        await metrics.DATABASE_FIGURES.refresh(engine_of(request))
    except Exception as exc:
        # The database away is itself what the scrape must show: the figures read last
        # are kept, and the outage is counted.
        if not unavailable(exc):
            raise
        metrics.DATABASE_UNAVAILABLE.labels("scrape").inc()
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)
