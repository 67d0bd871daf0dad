"""What a step receives besides its inputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pagerduty_connector.component.client import PagerDutyClient
from pagerduty_connector.component.manifest import Manifest
from pagerduty_connector.component.pagination import Progress
from pagerduty_connector.component.redact import get_logger


@dataclass
class StepContext:
    """The manifest, the connection's client, the instance's webhook URLs, progress."""

    manifest: Manifest
    client: PagerDutyClient
    webhook_urls: dict[str, str] = field(default_factory=dict)
    progress: Progress | None = None
    logger: logging.Logger = field(default_factory=lambda: get_logger("step"))
