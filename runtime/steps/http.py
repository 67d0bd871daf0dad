"""``http``: a request to a service other than PagerDuty (a Slack or Teams incoming
webhook, ServiceNow, Jira), with a credential of its own; see ``runtime/outbound.py``
for what it may reach and how it is bounded. PagerDuty's connections are never used."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from pagerduty_connector.component.redact import redact, redact_data
from pagerduty_connector.runtime.outbound import MAX_TIMEOUT
from pagerduty_connector.runtime.steps import Checker, Record, Runner, Scope, StepModel, kind


class HttpRequest(BaseModel):
    """The request: ``method``, ``url`` (may be empty with an ``http-url`` credential,
    or a path under it), ``headers``, ``body`` (JSON, or text), ``credential`` (a
    connection of type http-bearer, http-basic, http-header or http-url, by name) and
    ``timeout`` (seconds, at most 60)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    url: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    credential: str | None = None
    timeout: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT)


@kind
class HttpStep(StepModel):
    """``http: {url: https://hooks.slack.com/..., body: {text: ...}}``."""

    KEY: ClassVar[str] = "http"
    SUMMARY: ClassVar[str] = "Send an HTTP request to a service other than PagerDuty."
    http: HttpRequest

    def check(self, checker: Checker, seen: list[str]) -> None:
        """Templates sound; a URL, unless the credential holds it (checked at deploy,
        where the stored connections are known: ``deploy.check_credentials``)."""
        request = self.http
        for key in ("url", "headers", "body"):
            checker.template(self, key, getattr(request, key), seen)
        if not request.url and not request.credential:
            from pagerduty_connector.component.errors import InputError

            raise InputError(
                checker.owner(self), "url", "is required (or a credential of type http-url)"
            )

    async def run(self, runner: Runner, scope: Scope, record: Record) -> Any:
        """Render the request, send it (the run retries it), keep the answer."""
        request = self.http
        rendered = {
            "method": request.method,
            "url": str(runner.render(self, "url", request.url, scope) or ""),
            "headers": {
                str(k): str(v)
                for k, v in (runner.render(self, "headers", request.headers, scope) or {}).items()
            },
            "body": runner.render(self, "body", request.body, scope),
            "credential": request.credential,
            "timeout": request.timeout,
        }
        record["request"] = {
            "method": rendered["method"],
            "url": redact(rendered["url"]),
            "credential": request.credential,
            "body": redact_data(rendered["body"]),
        }
        answer = await runner.services.http(rendered, record)
        record["result"] = redact_data(answer)
        return answer
