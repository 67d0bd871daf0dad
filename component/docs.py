"""Render the component reference in Markdown from the manifest."""

from __future__ import annotations

import json
from typing import Any

from pagerduty_connector.component.manifest import Action, Input, Manifest


def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if len(text) <= 80 else f"`{text[:77]}...`"


def _inputs_table(inputs: list[Input]) -> list[str]:
    rows = [
        "| key | label | type | required | default | allowed values | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in inputs:
        kind = i.type.value + (f" ({i.collection})" if i.collection else "")
        allowed = ", ".join(i.model) if i.model else ""
        rows.append(
            f"| `{i.key}` | {i.label} | {kind} | {'yes' if i.required else ''} | "
            f"{_cell(i.default)} | {allowed} | {(i.comments or '').replace('|', '/')} |"
        )
    return rows


def _request_line(action: Action) -> str:
    req = action.request
    if req is None:
        return "Implemented in code (`actions/`)."
    line = f"`{req.method} {req.path}`" + (" (Events API)" if req.base == "events" else "")
    if req.paginate:
        line += f"; `fetchAll` reads every page of `{req.paginate.collection}`"
    if req.requiresFrom:
        line += "; needs a From email"
    return line


def render_markdown(manifest: Manifest) -> str:
    """The whole component reference as one Markdown document."""
    out = [f"# {manifest.label} component (`{manifest.key}`)", "", manifest.description, ""]
    out += ["## Connections", ""]
    for c in manifest.connections:
        out += [f"### {c.label} (`{c.key}`)", "", c.description, "", *_inputs_table(c.inputs), ""]
    out += ["## Triggers", ""]
    for t in manifest.triggers:
        out += [f"### {t.label} (`{t.key}`)", "", t.description, ""]
        out += [*_inputs_table(t.inputs), "", "Event types:", ""]
        out += [f"- `{e.value}`: {e.description or e.label}" for e in t.events] + [""]
    out += ["## Data sources", ""]
    for d in manifest.dataSources:
        out += [
            f"### {d.label} (`{d.key}`)",
            "",
            f"{d.description} Every page of `GET {d.picklist.path}`, "
            f"labelled by `{d.picklist.labelField}`.",
            "",
        ]
    out += ["## Actions", ""]
    for a in manifest.actions:
        out += [f"### {a.label} (`{a.key}`)", "", a.description, "", _request_line(a)]
        if a.scope:
            out += ["", f"OAuth scope: `{a.scope}`"]
        out += ["", *_inputs_table(a.inputs), ""]
        if a.examplePayload is not None:
            example = json.dumps(a.examplePayload, indent=2)
            out += ["<details><summary>Example payload</summary>", "", "```json", example, "```"]
            out += ["", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"
