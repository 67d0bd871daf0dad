"""Pydantic models of ``manifest.yaml`` and the loader that validates it.

The manifest is data: connections, triggers, data sources and actions with their
inputs, and for plain REST actions the request itself (method, path, query
mapping, body shape, pagination). Shared inputs are written once under
``inputDefinitions`` and used with ``{ref: name, ...overrides}``; the loader
resolves them before validation so every model below sees plain inputs.
"""

from __future__ import annotations

import json
import os
import re
from enum import StrEnum
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pagerduty_connector.component.errors import ManifestError

# Package data of the import root (the repository root in a checkout), read through
# importlib.resources so an installed wheel finds them too.
PACKAGE = "pagerduty_connector"
MANIFEST_FILE = "manifest.yaml"
SCHEMA_FILE = "manifest.schema.json"
# The C loader parses the manifest about 8x faster; PyYAML without libyaml falls back.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def packaged(name: str) -> Traversable:
    """A file shipped with the package (``manifest.yaml``, ``manifest.schema.json``)."""
    return files(PACKAGE) / name


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class _Strict(BaseModel):
    # defer_build: the validators are built on first validation, so a manifest read
    # back from the validated cache (see load_manifest) never pays for them.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


class InputType(StrEnum):
    """Prismatic-style input types."""

    STRING = "string"
    TEXT = "text"
    PASSWORD = "password"
    BOOLEAN = "boolean"
    CODE = "code"
    CONNECTION = "connection"


class Input(_Strict):
    """One input of an action, trigger, data source or connection."""

    key: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    label: str
    type: InputType = InputType.STRING
    comments: str | None = None
    required: bool = False
    default: Any = None
    example: Any = None
    collection: Literal["valuelist", "keyvaluelist"] | None = None
    model: list[str] | None = Field(default=None, description="Allowed values.")
    language: str | None = None
    clean: Literal["integer", "email"] | None = Field(
        default=None, description="Extra conversion of a string input: integer or email."
    )
    minimum: int | None = None
    maximum: int | None = None
    allowText: bool = Field(
        default=False, description="A code input that also accepts plain text (not JSON)."
    )
    unknownValues: Literal["reject", "warn"] = Field(
        default="reject", description="What to do with a value outside `model`."
    )
    shown: bool = True
    dataSource: str | None = Field(
        default=None,
        description="Key of a picklist data source whose results are this input's choices.",
    )

    @property
    def secret(self) -> bool:
        """True when the value must be encrypted at rest and never shown."""
        return self.type is InputType.PASSWORD


class Body(_Strict):
    """How a declared request builds its JSON body from the inputs.

    Either ``input`` (the body is that input's value, wrapped under ``wrapper``
    unless the value already is ``{wrapper: ...}``), or ``fields`` (a body composed
    from several inputs, keyed by dotted body paths).
    """

    input: str | None = None
    wrapper: str | None = None
    stringField: str | None = Field(
        default=None, description="When the unwrapped value is a string, nest it under this key."
    )
    list: bool = Field(default=False, description="The wrapped value is an array.")
    fields: dict[str, str] | None = None
    references: dict[str, str] = Field(
        default_factory=dict,
        description="input key -> PagerDuty reference type: an id (or each id of a list) "
        "is sent as {id, type}; a value that already is an object is sent as it is.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Body:
        if (self.input is None) == (self.fields is None):
            raise ValueError("body needs exactly one of 'input' or 'fields'")
        return self


class Paginate(_Strict):
    """Offset pagination of a list endpoint: the array key of each page."""

    collection: str


class Request(_Strict):
    """A declared HTTP request, executed by the generic requester."""

    base: Literal["rest", "events"] = "rest"
    method: Literal["GET", "POST", "PUT", "DELETE", "PATCH"]
    path: str
    query: dict[str, str] = Field(default_factory=dict, description="input key -> query name")
    body: Body | None = None
    paginate: Paginate | None = None
    requiresFrom: bool = False

    @property
    def path_params(self) -> list[str]:
        """Input keys named by ``{placeholders}`` in the path."""
        return _PLACEHOLDER.findall(self.path)


class Picklist(_Strict):
    """A picklist data source: every page of a list endpoint as ``{label, key}``."""

    path: str
    collection: str
    labelField: str
    keyField: str = "id"


class _Component(_Strict):
    key: str
    label: str
    description: str
    inputs: list[Input] = Field(default_factory=list)

    def input(self, key: str) -> Input | None:
        """Return the input named ``key``, if declared."""
        return next((i for i in self.inputs if i.key == key), None)

    @model_validator(mode="after")
    def _unique_inputs(self) -> _Component:
        seen: set[str] = set()
        for i in self.inputs:
            if i.key in seen:
                raise ValueError(f"{self.key}: input '{i.key}' is declared twice")
            seen.add(i.key)
        return self


class Action(_Component):
    """An action: declarative (``request``) or implemented in code (no ``request``)."""

    scope: str | None = Field(default=None, description="OAuth scope the action needs.")
    request: Request | None = None
    examplePayload: Any = None

    @model_validator(mode="after")
    def _request_fits_inputs(self) -> Action:
        req = self.request
        if req is None:
            return self
        names = {i.key for i in self.inputs}
        for p in req.path_params:
            if p not in names:
                raise ValueError(f"{self.key}: path placeholder '{{{p}}}' has no input '{p}'")
        for q in req.query:
            if q not in names:
                raise ValueError(f"{self.key}: query maps input '{q}', which is not declared")
        if req.body:
            used = [req.body.input] if req.body.input else list((req.body.fields or {}).values())
            for u in used:
                if u not in names:
                    raise ValueError(f"{self.key}: body uses input '{u}', which is not declared")
        if req.paginate and "fetchAll" not in names:
            raise ValueError(f"{self.key}: paginated requests need a 'fetchAll' input")
        if req.requiresFrom and "from" not in names:
            raise ValueError(f"{self.key}: requiresFrom needs a 'from' input")
        return self


class EventType(_Strict):
    """A webhook event type a trigger can subscribe to."""

    value: str
    label: str
    description: str | None = None
    # Which of the trigger's ``eventData`` the event's ``data`` is, where PagerDuty's
    # documentation says; None where it does not (deploy then leaves the data unchecked).
    data: str | None = None


class Trigger(_Component):
    """A webhook trigger whose deploy/teardown manage a V3 webhook subscription."""

    resourceType: str
    scope: str | None = None
    events: list[EventType]
    # PagerDuty's documented example of each kind of ``event.data``, by name.
    eventData: dict[str, dict[str, Any]] = Field(default_factory=dict)
    examplePayload: Any = None

    @model_validator(mode="after")
    def _described(self) -> Trigger:
        for event in self.events:
            if event.data is not None and event.data not in self.eventData:
                raise ValueError(
                    f"{self.key}: event {event.value} has data '{event.data}', "
                    "which eventData does not describe"
                )
        return self


class DataSource(_Component):
    """A picklist data source."""

    type: Literal["picklist"] = "picklist"
    scope: str | None = None
    picklist: Picklist
    examplePayload: Any = None


class Connection(_Component):
    """A connection type: how steps authenticate to PagerDuty."""

    kind: Literal["apiKey", "oauth2"]
    comments: str | None = None


class Manifest(_Strict):
    """The whole component as declared in ``manifest.yaml``."""

    key: str
    label: str
    description: str
    category: str | None = None
    documentationUrl: str | None = None
    connections: list[Connection]
    triggers: list[Trigger]
    dataSources: list[DataSource]
    actions: list[Action]

    @model_validator(mode="after")
    def _unique_keys(self) -> Manifest:
        seen: dict[str, str] = {}
        for kind, items in (
            ("connection", self.connections),
            ("trigger", self.triggers),
            ("data source", self.dataSources),
            ("action", self.actions),
        ):
            for item in items:
                if item.key in seen:
                    raise ValueError(
                        f"key '{item.key}' is declared twice ({seen[item.key]}, {kind})"
                    )
                seen[item.key] = kind
        return self

    @model_validator(mode="after")
    def _known_data_sources(self) -> Manifest:
        picklists = {d.key for d in self.dataSources if d.picklist is not None}
        for item in [*self.connections, *self.triggers, *self.dataSources, *self.actions]:
            for spec in item.inputs:
                if spec.dataSource and spec.dataSource not in picklists:
                    raise ValueError(
                        f"{item.key}: input '{spec.key}' names data source "
                        f"'{spec.dataSource}', which is not a declared picklist"
                    )
        return self

    def runnable(self, key: str) -> Action | DataSource:
        """Return the action or data source named ``key`` (what ``pdc run`` accepts)."""
        for item in (*self.actions, *self.dataSources):
            if item.key == key:
                return item
        raise KeyError(key)

    def runnable_keys(self) -> list[str]:
        """The keys ``runnable`` accepts: every action's and data source's."""
        return [item.key for item in (*self.actions, *self.dataSources)]

    def trigger(self, key: str) -> Trigger | None:
        """Return the webhook trigger named ``key``, if there is one."""
        return next((t for t in self.triggers if t.key == key), None)

    def find(self, key: str) -> Action | DataSource | Trigger | Connection | None:
        """Return any declared item by key."""
        for item in (*self.actions, *self.dataSources, *self.triggers, *self.connections):
            if item.key == key:
                return item
        return None


def resolve_refs(raw: dict[str, Any]) -> dict[str, Any]:
    """Replace ``{ref: name, ...overrides}`` inputs by their definitions."""
    defs = raw.pop("inputDefinitions", {}) or {}
    for section in ("actions", "triggers", "dataSources", "connections"):
        for item in raw.get(section) or []:
            inputs = item.get("inputs") or []
            for n, entry in enumerate(inputs):
                if isinstance(entry, dict) and "ref" in entry:
                    name = entry["ref"]
                    if name not in defs:
                        raise ManifestError(
                            f"{section[:-1]} '{item.get('key')}' input #{n + 1}: "
                            f"unknown inputDefinition '{name}'"
                        )
                    merged = {**defs[name], **{k: v for k, v in entry.items() if k != "ref"}}
                    inputs[n] = merged
    return raw


def _location(err: dict[str, Any], raw: dict[str, Any]) -> str:
    """Turn a pydantic error location into 'actions[listIncidents].inputs[3].type'."""
    parts: list[str] = []
    node: Any = raw
    for loc in err["loc"]:
        if isinstance(loc, int) and isinstance(node, list):
            node = node[loc] if loc < len(node) else None
            key = node.get("key") if isinstance(node, dict) else None
            parts[-1] = f"{parts[-1]}[{key or loc}]" if parts else f"[{loc}]"
        else:
            parts.append(str(loc))
            node = node.get(loc) if isinstance(node, dict) else None
    return ".".join(parts)


def parse_manifest(raw: dict[str, Any]) -> Manifest:
    """Validate raw manifest data; raise ``ManifestError`` naming the offending key."""
    raw = resolve_refs(json.loads(json.dumps(raw)))
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {_location(e, raw)}: {e['msg']}" for e in exc.errors()[:10]]
        raise ManifestError("manifest.yaml is invalid:\n" + "\n".join(lines)) from None


def load_manifest(path: Path | str | None = None) -> Manifest:
    """Read and validate a manifest file (default: ``$PDC_MANIFEST`` or the packaged one)."""
    chosen = path or os.environ.get("PDC_MANIFEST")
    target: Path | Traversable = Path(chosen) if chosen else packaged(MANIFEST_FILE)
    try:
        raw = yaml.load(target.read_text(encoding="utf-8"), Loader=_Loader)
    except FileNotFoundError:
        raise ManifestError(f"manifest not found at {target}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{target} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{target} must hold a mapping at the top level")
    return parse_manifest(raw)


@cache
def default_manifest() -> Manifest:
    """The packaged manifest, loaded once per process."""
    return load_manifest()


def manifest_json_schema() -> dict[str, Any]:
    """JSON Schema of the resolved manifest (inputs after ``ref`` resolution)."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "PagerDuty connector manifest (inputs after ref resolution)"
    return schema


def render_schema() -> str:
    """The committed ``manifest.schema.json`` text."""
    return json.dumps(manifest_json_schema(), indent=2, sort_keys=True) + "\n"
