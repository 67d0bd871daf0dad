"""Where in the deploy editor's YAML an API error points.

A deploy's validation errors name a flow, a step (or the trigger) and an input
(``{"step": "on-incident.note (createIncidentNote)", "input": "id"}``); this walks
the YAML's node tree (``yaml.compose``, which keeps line numbers) to the line that
defines the deepest of them, so the editor can show the message next to it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_OWNER = re.compile(r"^(?P<flow>[^.]+)(?:\.(?P<part>[^ ]+))?(?: \(.*\))?$")


def _get(node: Any, key: str) -> Any:
    """The value node of ``key`` in a mapping node, with the key node's line."""
    if isinstance(node, yaml.MappingNode):
        for name, value in node.value:
            if isinstance(name, yaml.ScalarNode) and name.value == key:
                return name, value
    return None, None


def _named(sequence: Any, name: str) -> Any:
    """The mapping node in a sequence node whose ``name`` is ``name``."""
    if isinstance(sequence, yaml.SequenceNode):
        for item in sequence.value:
            _, value = _get(item, "name")
            if isinstance(value, yaml.ScalarNode) and value.value == name:
                return item
    return None


def locate_error(text: str, details: dict[str, Any]) -> dict[str, Any]:
    """``{"line": <0-based line or None>, "where": "flow 'x', step 'y', input 'z'"}``."""
    owner, key = str(details.get("step") or ""), details.get("input")
    match = _OWNER.match(owner)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {"line": None, "where": None}
    if match is None or root is None:
        return {"line": None, "where": None}
    line: int | None = None
    where: list[str] = []
    _, flows = _get(root, "flows")
    flow = _named(flows, match["flow"])
    if flow is None:
        if key:
            found, _ = _get(root, str(key))
            line = found.start_mark.line if found is not None else None
        return {"line": line, "where": f"input '{key}'" if key else None}
    line, where = flow.start_mark.line, [f"flow '{match['flow']}'"]
    part = match["part"]
    holder = flow
    if part == "trigger":
        _, holder = _get(flow, "trigger")
        where.append("trigger")
    elif part:
        _, steps = _get(flow, "steps")
        holder = _named(steps, part)
        where.append(f"step '{part}'")
    if holder is None:
        return {"line": line, "where": ", ".join(where)}
    line = holder.start_mark.line
    if key:
        where.append(f"input '{key}'")
        path = str(key).split(".")
        name_node, value = _get(holder, path[0])
        if name_node is None:  # an input: look in the inputs mapping
            _, inputs = _get(holder, "inputs")
            name_node, value = _get(inputs, path[0])
        for part_key in path[1:]:
            deeper, value = _get(value, part_key)
            name_node = deeper or name_node
        if name_node is not None:
            line = name_node.start_mark.line
    return {"line": line, "where": ", ".join(where)}
