"""Clean and validate step inputs against their manifest declarations.

Values arrive from flows, the CLI and the management API in loose forms
(``"false"``, ``"25"``, one string for a list, a JSON string for an object).
``clean_inputs`` turns them into proper Python values or raises ``InputError``
naming the action, the input and what is wrong, before any request is built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pagerduty_connector.component.errors import InputError, did_you_mean
from pagerduty_connector.component.manifest import Input, InputType

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

KeyValues = list[tuple[str, Any]]


class CleanedInputs(dict[str, Any]):
    """Cleaned values by input key, plus warnings raised while cleaning."""

    warnings: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.warnings = []


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "") or value == []


def check_known(owner: str, declared: list[Input], raw: Mapping[str, Any]) -> None:
    """Raise ``InputError`` naming the first key of ``raw`` that is no declared input, and
    the nearest one: checked before anything is said about a missing input, which a
    misspelt key usually is."""
    known = {i.key for i in declared}
    unknown = sorted(k for k in raw if k not in known)
    if unknown:
        raise InputError(
            owner,
            unknown[0],
            f"is not an input of this step{did_you_mean(unknown[0], known)} "
            f"(known inputs: {', '.join(sorted(known))})",
        )


def clean_inputs(owner: str, declared: list[Input], raw: Mapping[str, Any]) -> CleanedInputs:
    """Return the cleaned inputs of ``owner`` or raise ``InputError``.

    Unknown input keys are rejected (a typo would otherwise be silently ignored);
    missing optional inputs take their default, or ``None``.
    """
    check_known(owner, declared, raw)
    out = CleanedInputs()
    for spec in declared:
        if spec.type is InputType.CONNECTION:
            continue
        value = raw.get(spec.key)
        if _is_empty(value) and spec.default is not None:
            value = spec.default
        if _is_empty(value):
            if spec.required:
                raise InputError(owner, spec.key, "is required")
            out[spec.key] = None
            continue
        out[spec.key] = _clean_one(owner, spec, value, out.warnings)
    return out


def _clean_one(owner: str, spec: Input, value: Any, warnings: list[str]) -> Any:
    if spec.collection == "valuelist":
        items = value if isinstance(value, list) else [value]
        return [_check_model(owner, spec, _scalar(owner, spec, v), warnings) for v in items]
    if spec.collection == "keyvaluelist":
        return _key_values(owner, spec, value)
    if spec.type is InputType.BOOLEAN:
        return _boolean(owner, spec, value)
    if spec.type is InputType.CODE:
        return _code(owner, spec, value)
    return _check_model(owner, spec, _scalar(owner, spec, value), warnings)


def _scalar(owner: str, spec: Input, value: Any) -> Any:
    """A string-typed value, converted by ``clean`` when declared."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InputError(owner, spec.key, f"expected a string, got {type(value).__name__}")
    text = str(value).strip() if not isinstance(value, str) else value
    if spec.clean == "integer":
        try:
            number = int(text) if isinstance(value, str) else int(value)
        except ValueError:
            raise InputError(owner, spec.key, f"expected a whole number, got {text!r}") from None
        if isinstance(value, float) and value != number:
            raise InputError(owner, spec.key, f"expected a whole number, got {value!r}")
        if spec.minimum is not None and number < spec.minimum:
            raise InputError(owner, spec.key, f"must be at least {spec.minimum}, got {number}")
        if spec.maximum is not None and number > spec.maximum:
            advice = f" ({spec.comments})" if spec.comments else ""
            raise InputError(
                owner, spec.key, f"must be at most {spec.maximum}, got {number}{advice}"
            )
        return number
    if spec.clean == "email" and not _EMAIL.match(text.strip()):
        raise InputError(owner, spec.key, f"expected an email address, got {text!r}")
    return text.strip() if spec.clean == "email" else text


def _check_model(owner: str, spec: Input, value: Any, warnings: list[str]) -> Any:
    if spec.model is None or spec.type is InputType.BOOLEAN or value in spec.model:
        return value
    if spec.unknownValues == "warn":
        warnings.append(f"{owner}: input '{spec.key}': {value!r} is not a known value; sent as is")
        return value
    hint = did_you_mean(str(value), spec.model)
    allowed = ", ".join(spec.model)
    raise InputError(owner, spec.key, f"{value!r} is not one of: {allowed}{hint}")


def _boolean(owner: str, spec: Input, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise InputError(owner, spec.key, f"expected true or false, got {value!r}")


def _code(owner: str, spec: Input, value: Any) -> Any:
    if isinstance(value, dict | list):
        return value
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            if spec.allowText:
                return value
            raise InputError(
                owner,
                spec.key,
                f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            ) from None
    raise InputError(owner, spec.key, f"expected a JSON object, got {type(value).__name__}")


def _key_values(owner: str, spec: Input, value: Any) -> KeyValues:
    """An object, a JSON string of one, or ``[{key, value}]`` -> ordered pairs."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InputError(
                owner, spec.key, 'expected an object or a list of {"key", "value"} pairs'
            ) from None
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list):
        pairs: KeyValues = []
        for n, item in enumerate(value):
            if not (isinstance(item, dict) and "key" in item and set(item) <= {"key", "value"}):
                raise InputError(
                    owner, spec.key, f'item {n + 1} must be {{"key": ..., "value": ...}}'
                )
            pairs.append((str(item["key"]), item.get("value")))
        return pairs
    raise InputError(owner, spec.key, f"expected key/value pairs, got {type(value).__name__}")
