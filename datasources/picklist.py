"""The picklist data source kind: every page of a list endpoint as ``{label, key}``."""

from __future__ import annotations

from typing import Any

from pagerduty_connector.component.context import StepContext
from pagerduty_connector.component.inputs import CleanedInputs
from pagerduty_connector.component.manifest import DataSource
from pagerduty_connector.component.pagination import fetch_all
from pagerduty_connector.component.registry import datasource_kind


@datasource_kind("picklist")
async def run_picklist(
    ctx: StepContext, source: DataSource, inputs: CleanedInputs
) -> dict[str, Any]:
    """Fetch all pages and return ``{"result": [{label, key}], ...}`` sorted by label."""
    spec = source.picklist
    page = await fetch_all(ctx.client, spec.path, spec.collection, progress=ctx.progress)
    options = [
        {
            "label": str(item.get(spec.labelField) or item.get(spec.keyField)),
            "key": item[spec.keyField],
        }
        for item in page.items
        if isinstance(item, dict) and spec.keyField in item
    ]
    options.sort(key=lambda o: (o["label"].casefold(), str(o["key"])))
    result: dict[str, Any] = {"result": options}
    if page.warnings:
        result["warnings"] = page.warnings
    return result
