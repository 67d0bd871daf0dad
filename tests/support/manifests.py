"""The raw manifest as data, for tests that change it and load the result."""

from __future__ import annotations

from typing import Any

import yaml

from pagerduty_connector.component.manifest import MANIFEST_FILE, packaged


def raw_manifest() -> dict[str, Any]:
    """A fresh copy of ``manifest.yaml`` as plain data."""
    return yaml.safe_load(packaged(MANIFEST_FILE).read_text())


def action_of(data: dict[str, Any], key: str) -> dict[str, Any]:
    """The action ``key`` of raw manifest data."""
    return next(a for a in data["actions"] if a["key"] == key)
