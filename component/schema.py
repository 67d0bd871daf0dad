"""JSON Schemas of the manifest's inputs, and the component document built from them.

What a step (or connection) accepts before cleaning: the runtime serves it at
``/api/component`` so builders and tools can validate and generate forms.
"""

from __future__ import annotations

from typing import Any

from pagerduty_connector.component.manifest import Input, InputType, Manifest


def input_schema(spec: Input) -> dict[str, Any]:
    """JSON Schema of the values one input accepts (before cleaning)."""
    if spec.collection == "valuelist":
        item: dict[str, Any] = {"type": "string"}
        if spec.model and spec.unknownValues == "reject":
            item["enum"] = spec.model
        schema: dict[str, Any] = {"anyOf": [item, {"type": "array", "items": item}]}
    elif spec.collection == "keyvaluelist":
        pair = {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}}
        schema = {"anyOf": [{"type": "object"}, {"type": "array", "items": pair}]}
    elif spec.type is InputType.BOOLEAN:
        schema = {"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]}
    elif spec.type is InputType.CODE:
        schema = {"anyOf": [{"type": "object"}, {"type": "array"}, {"type": "string"}]}
    elif spec.clean == "integer":
        number: dict[str, Any] = {"type": "integer"}
        if spec.minimum is not None:
            number["minimum"] = spec.minimum
        if spec.maximum is not None:
            number["maximum"] = spec.maximum
        schema = {"anyOf": [number, {"type": "string", "pattern": r"^-?\d+$"}]}
    else:
        schema = {"type": "string"}
        if spec.model:
            schema["enum"] = spec.model
    schema.update(title=spec.label)
    if spec.comments:
        schema["description"] = spec.comments
    if spec.default is not None:
        schema["default"] = spec.default
    if spec.dataSource:
        schema["x-dataSource"] = spec.dataSource
    if spec.example is not None and not spec.secret:
        schema["examples"] = [spec.example]
    if spec.secret:
        schema.update(writeOnly=True, **{"x-secret": True})
    return schema


def inputs_schema(inputs: list[Input]) -> dict[str, Any]:
    """JSON Schema of a step's (or connection's) inputs object."""
    usable = [i for i in inputs if i.type is not InputType.CONNECTION]
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {i.key: input_schema(i) for i in usable},
        "required": [i.key for i in usable if i.required and i.default is None],
    }


def _entry(item: Any) -> dict[str, Any]:
    out = {"key": item.key, "label": item.label, "description": item.description}
    if getattr(item, "scope", None):
        out["scope"] = item.scope
    out["inputs"] = inputs_schema(item.inputs)
    out["secretInputs"] = [i.key for i in item.inputs if i.secret]
    if getattr(item, "examplePayload", None) is not None:
        # What the step gives later steps as steps.<name> (a trigger: as trigger), by
        # example: PagerDuty's documented answer.
        out["output"] = {"example": item.examplePayload}
    return out


def component_document(manifest: Manifest) -> dict[str, Any]:
    """The component: connections, triggers (with events), data sources and actions."""
    return {
        "key": manifest.key,
        "label": manifest.label,
        "connections": [_entry(c) for c in manifest.connections],
        "triggers": [
            {**_entry(t), "events": [e.value for e in t.events]} for t in manifest.triggers
        ],
        "dataSources": [_entry(d) for d in manifest.dataSources],
        "actions": [_entry(a) for a in manifest.actions],
    }
