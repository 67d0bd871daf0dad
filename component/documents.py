"""Untrusted JSON and YAML documents parsed into plain JSON values, within bounds.

Everything a client sends (an instance to deploy, a connection, a signed delivery's
body) goes through ``load_json`` or ``load_yaml`` before anything is stored or sent. They
accept exactly what JSON can say and refuse the rest with ``DocumentError``, one line
naming what is wrong and where:

- ``NaN`` and ``Infinity`` (Python's ``json`` accepts them; PostgreSQL's ``json`` and
  every other reader refuse them), and numbers that overflow to them (``1e999``);
- integers beyond 64 bits (a 5 000-digit integer cannot even be written back out:
  Python refuses to convert more than 4 300 digits to text);
- bytes that are not UTF-8;
- YAML's types beyond JSON (dates stay the text they were written as; ``!!binary``,
  ``!!set``, ``!!omap`` and ``!!pairs`` are refused) and keys that are not text (YAML
  1.1 reads an unquoted ``on:`` or ``yes:`` as ``true``);
- documents nested deeper than ``MAX_DEPTH`` or holding more than ``MAX_VALUES`` values
  once YAML's aliases are expanded: a few hundred bytes of nested aliases (a "billion
  laughs") would otherwise become gigabytes when stored as JSON.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml

MAX_DEPTH = 100
MAX_VALUES = 100_000
# Digits of the largest 64-bit integer, plus a sign: longer is refused before int() runs.
_INT_CHARS = 20
_INT_RANGE = 2**63


# A \uD800-\uDFFF escape, which json.loads turns into a lone surrogate (PostgreSQL's json
# type and every encoder refuse those); an escaped backslash before `u` matches too, and
# only sends the document to the full check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class DocumentError(ValueError):
    """A document is not a plain JSON value within bounds; the message says why, where."""


def _refuse_constant(name: str) -> Any:
    raise DocumentError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


def _integer(text: str) -> int:
    if len(text) > _INT_CHARS or not -_INT_RANGE <= (value := int(text)) < _INT_RANGE:
        raise DocumentError(
            f"the integer {text[:24]}{'...' if len(text) > 24 else ''} is beyond 64 bits"
        )
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DocumentError(f"the number {text[:24]} is too large for a JSON number")
    return value


def _text(raw: bytes | str) -> str:
    """``raw`` as text; ``DocumentError`` naming the first byte that is not UTF-8."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not UTF-8 text (byte {exc.start})") from None


def load_json(raw: bytes | str) -> Any:
    """``raw`` as a plain JSON value; ``DocumentError`` naming the problem."""
    text = _text(raw)
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_int=_integer, parse_float=_float
        )
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise DocumentError(f"nested deeper than {MAX_DEPTH} levels") from None
    # What json.loads makes is plain but for depth and escaped surrogates; a document of
    # at most MAX_DEPTH brackets cannot nest deeper, and UTF-8 holds no surrogate but
    # through an escape. Both are told by scans in C, so a webhook's body (a few dozen
    # brackets) is not walked value by value (20 us of a delivery's 300).
    if text.count("[") + text.count("{") > MAX_DEPTH or _SURROGATE_ESCAPE.search(text):
        check_plain(value)
    return value


class _PlainLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's safe loader, reading only what JSON can say."""


# Dates and times stay the text they were written as: a JSON document has no date type,
# and `2026-12-04` in a step input is meant as that text.
_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

# YAML 1.1 needs a dot in a float, so JSON's `5e-324` or `1E6` would be read as text:
# they are numbers here, as in JSON and YAML 1.2.
_PlainLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _not_json(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, f"{node.tag.rsplit(':', 1)[-1]} values are not JSON values", node.start_mark
    )


def _timestamp_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)  # type: ignore[arg-type]


for _tag in ("binary", "set", "omap", "pairs"):
    _PlainLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _not_json)
_PlainLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: what is wrong and at which line and column (PyYAML's own
    text names ``"<unicode string>"`` and spans several lines)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{' '.join(str(problem).split())}"


def load_yaml(raw: bytes | str) -> Any:
    """``raw`` (one YAML document) as a plain JSON value; ``DocumentError`` naming the
    problem and its line."""
    raw = _text(raw)
    try:
        value = yaml.load(raw, Loader=_PlainLoader)
    except yaml.YAMLError as exc:
        raise DocumentError(f"not YAML: {yaml_problem(exc)}") from None
    except ValueError:  # an integer of more digits than Python converts to a number
        raise DocumentError("an integer is beyond 64 bits") from None
    except RecursionError:
        raise DocumentError(f"nested deeper than {MAX_DEPTH} levels") from None
    check_plain(value)
    return value


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _short(path: str) -> str:
    """A path into the document, cut to its last 60 characters."""
    return path if len(path) <= 60 else "..." + path[-57:]


def check_plain(value: Any) -> None:
    """Raise ``DocumentError`` unless ``value`` is a plain JSON value within bounds.

    Shared parts (YAML aliases, a recursive alias) are counted at every place they
    appear, so the bound is on the document as it would be written out as JSON; the
    walk stops at the bound, so checking costs at most ``MAX_VALUES`` steps.
    """
    seen = 0
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise DocumentError(
                f"more than {MAX_VALUES:,} values (YAML aliases count at every use)"
            )
        if depth > MAX_DEPTH:
            raise DocumentError(f"nested deeper than {MAX_DEPTH} levels (at {_short(path)})")
        where = _short(path) or "the top level"
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise DocumentError(
                        f"key {key!r} at {where} is not text: quote it "
                        "(YAML reads unquoted on/off/yes/no as true/false)"
                    )
                if not key.isascii() and _has_surrogate(key):
                    raise DocumentError(f"a key at {where} holds an unpaired surrogate")
                stack.append((inner, depth + 1, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            stack.extend((inner, depth + 1, f"{path}[{n}]") for n, inner in enumerate(item))
        elif isinstance(item, str):
            if not item.isascii() and _has_surrogate(item):
                raise DocumentError(
                    f"the text at {where} holds an unpaired surrogate (\\uD800-\\uDFFF)"
                )
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -_INT_RANGE <= item < _INT_RANGE:
                raise DocumentError(f"the integer at {where} is beyond 64 bits")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise DocumentError(f"the number at {where} is {item}, which JSON cannot say")
        else:
            raise DocumentError(f"the value at {where} is a {type(item).__name__}, not JSON")
