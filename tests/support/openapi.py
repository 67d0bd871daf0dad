"""Validate captured httpx requests against PagerDuty's official OpenAPI documents.

The specs are read from ``tests/data/pagerduty/`` (or ``$PAGERDUTY_SPEC_DIR``) as
published, and checked with openapi-core. Known defects of the published
documents are handled here, narrowly, each with a comment.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import httpx2
from jsonschema_path import SchemaPath
from openapi_core import OpenAPI
from openapi_core.configurations import Config
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tests.support import DATA

SPEC_DIR = Path(os.environ.get("PAGERDUTY_SPEC_DIR") or DATA / "pagerduty")
REST_SPEC = SPEC_DIR / "rest-openapiv3.json"
EVENTS_SPEC = SPEC_DIR / "events-v2-openapiv3.json"


@cache
def _document(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


LITERAL_PATTERN = "YYYY-MM-DDThh:mm:ssZ"


def patched(document: dict[str, Any]) -> dict[str, Any]:
    """The published document with its known defects corrected, narrowly.

    1. ``readOnly`` marks 524 properties, among them fields its own request examples
       send (reference ``id``/``type``, a service's ``type``, a user's ``avatar_url``):
       openapi-core rejects those in requests, so ``readOnly`` is dropped.
       ``test_spec_request_examples_need_exactly_these_patches`` proves the need.
    2. ``IncidentBody.details`` is typed ``object`` while the createIncident request
       example (and PagerDuty's documentation) send a string: both are accepted.
    3. Some ``since``/``until`` parameters carry ``pattern: 'YYYY-MM-DDThh:mm:ssZ'``, a
       description written as a regular expression that only matches itself: that
       pattern is dropped (``format: date-time`` stays).
    """
    text = json.dumps(document).replace('"readOnly": true', '"readOnly": false')
    fixed = json.loads(text)
    body = fixed.get("components", {}).get("schemas", {}).get("IncidentBody")
    if body:
        body["properties"]["details"] = {"oneOf": [{"type": "string"}, {"type": "object"}]}
    for parameter in fixed.get("components", {}).get("parameters", {}).values():
        _drop_literal_pattern(parameter)
    for item in fixed.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                _drop_literal_pattern(parameter)
    return fixed


def _drop_literal_pattern(parameter: dict[str, Any]) -> None:
    schema = parameter.get("schema") or {}
    if schema.get("pattern") == LITERAL_PATTERN:
        del schema["pattern"]


@cache
def _openapi(path: Path, fix: bool = True) -> OpenAPI:
    # Known defect: the published REST document does not pass openapi-spec-validator
    # (e.g. an integer schema with the string default '20 - incident_summary'), so the
    # document's own validation is skipped; requests are still validated against it.
    config = Config(spec_validator_cls=None)
    document = patched(_document(path)) if fix else _document(path)
    return OpenAPI(SchemaPath.from_dict(document), config=config)


class _Request:
    """openapi-core's Request protocol over an ``httpx2.Request``."""

    def __init__(self, request: httpx2.Request) -> None:
        url = request.url
        # The documents list only the US servers; EU requests have the same shape.
        netloc = url.netloc.decode().replace(".eu.pagerduty.com", ".pagerduty.com")
        self.host_url = f"{url.scheme}://{netloc}"
        self.path = url.path
        self.method = request.method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(url.params.multi_items())),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(),
        )
        self.content_type = request.headers.get("content-type", "")
        self.body = request.content or None

    @property
    def full_url_pattern(self) -> str:
        return self.host_url + self.path


def validate_request(request: httpx2.Request, *, fix: bool = True) -> None:
    """Raise openapi-core's validation error if ``request`` breaks the official spec."""
    spec = EVENTS_SPEC if request.url.host.startswith("events.") else REST_SPEC
    _openapi(spec, fix).validate_request(_Request(request))


def request_examples(method: str, template: str) -> list[Any]:
    """The request-body examples the REST document gives for an operation."""
    document = _document(REST_SPEC)
    body = document["paths"][template][method.lower()].get("requestBody")
    if body is None:
        return []
    content = (_resolve(body, document).get("content") or {}).get("application/json") or {}
    values = [_resolve(e, document).get("value") for e in (content.get("examples") or {}).values()]
    return [v for v in values if v is not None]


def template_for(path: str) -> str | None:
    """The REST document's path template that serves a concrete path."""
    return _template_for(path)


def _resolve(node: Any, document: dict[str, Any]) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        for part in node["$ref"].lstrip("#/").split("/"):
            document = document[part] if isinstance(document, dict) else document
        node = document
        document = _document(REST_SPEC)
    return node


def _template_for(path: str) -> str | None:
    for template in _document(REST_SPEC)["paths"]:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template
    return None


def example_response(method: str, path: str) -> tuple[int, Any]:
    """The status and example body the REST spec documents for a request."""
    template = _template_for(path)
    if template is None:
        return 200, {}
    document = _document(REST_SPEC)
    operation = document["paths"][template][method.lower()]
    for code in ("200", "201", "202", "204"):
        response = operation.get("responses", {}).get(code)
        if response is None:
            continue
        content = (_resolve(response, document).get("content") or {}).get("application/json")
        if not content:
            return int(code), None
        for example in (content.get("examples") or {}).values():
            example = _resolve(example, document)
            if "value" in example:
                return int(code), example["value"]
        return int(code), content.get("example", {})
    return 200, {}


def required_scope(method: str, path: str) -> str | None:
    """``x-pd-requires-scope`` of the operation serving ``method path``."""
    template = _template_for(path)
    if template is None:
        return None
    return _document(REST_SPEC)["paths"][template][method.lower()].get("x-pd-requires-scope")


def requires_from(method: str, path: str) -> bool:
    """Whether the spec marks the ``From`` header required for ``method path``."""
    template = _template_for(path)
    document = _document(REST_SPEC)
    if template is None:
        return False
    for parameter in document["paths"][template][method.lower()].get("parameters", []):
        parameter = _resolve(parameter, document)
        if parameter.get("name") == "From" and parameter.get("required"):
            return True
    return False


class _Response:
    """openapi-core's Response protocol over an ``httpx2.Response``."""

    def __init__(self, response: httpx2.Response) -> None:
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "application/json")
        self.headers = Headers(list(response.headers.items()))
        self.data = response.content


def validate_response(response: httpx2.Response, *, fix: bool = True) -> None:
    """Raise openapi-core's validation error if ``response`` (to its request) breaks the
    official spec."""
    request = response.request
    spec = EVENTS_SPEC if request.url.host.startswith("events.") else REST_SPEC
    _openapi(spec, fix).validate_response(_Request(request), _Response(response))
