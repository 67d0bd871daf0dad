"""Untrusted JSON and YAML: exactly what JSON can say, within bounds, or one line why not."""

from __future__ import annotations

import json
import re
import resource
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pagerduty_connector.component.documents import (
    MAX_DEPTH,
    DocumentError,
    load_json,
    load_yaml,
)


def billion_laughs(levels: int = 9) -> str:
    """Nested YAML aliases: a few hundred bytes that name 9**levels strings."""
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, levels):
        name, previous = chr(97 + n), chr(96 + n)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": 1e999}', "the number 1e999 is too large"),
        (b'{"a": ' + b"9" * 5000 + b"}", "is beyond 64 bits"),
        (b'{"a": 9223372036854775808}', "is beyond 64 bits"),
        (b'{"a": "\xff"}', "not UTF-8 text (byte 7)"),
        (b"[" * 10_000 + b"]" * 10_000, f"nested deeper than {MAX_DEPTH} levels"),
        (b"[" * 101 + b"]" * 101, f"nested deeper than {MAX_DEPTH} levels"),
        (b'{"a": }', "not JSON: Expecting value (line 1, column 7)"),
        (b'{"a": ["\\udc00"]}', "the text at a[0] holds an unpaired surrogate"),
        (b'{"\\ud800": 1}', "unpaired surrogate"),
    ],
)
def test_json_beyond_plain_values_is_refused_with_its_reason(raw: bytes, problem: str) -> None:
    with pytest.raises(DocumentError, match=re.escape(problem)):
        load_json(raw)


def test_json_at_the_bounds_is_kept() -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    assert load_json(json.dumps(deep)) == deep
    assert load_json(b'{"big": 9223372036854775807, "small": -9223372036854775808}') == {
        "big": 2**63 - 1,
        "small": -(2**63),
    }
    assert load_json('{"text": "caf\\u00e9 \\u0000"}') == {"text": "café \x00"}
    # A surrogate pair is one character; an escaped backslash is no escape at all.
    assert load_json(b'["\\ud83d\\ude00", "\\\\ud800"]') == ["\U0001f600", "\\ud800"]


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("photo: !!binary aGVsbG8=", "line 1, column 8: binary values are not JSON values"),
        ("tags: !!set {a, b}", "line 1, column 7: set values are not JSON values"),
        ("ordered: !!omap [{a: 1}]", "omap values are not JSON values"),
        ("ratio: .nan", "the number at ratio is nan"),
        ("ratio: -.inf", "the number at ratio is -inf"),
        ("on: incident.triggered", "key True at the top level is not text: quote it"),
        ("ids: {1: a}", "key 1 at ids is not text"),
        (f"a: {'9' * 5000}", "an integer is beyond 64 bits"),
        ("x: &x [*x]", f"nested deeper than {MAX_DEPTH} levels"),
        ("a: [\n  b: c", "not YAML: line 3, column 1: did not find expected ',' or ']'"),
    ],
)
def test_yaml_beyond_plain_values_is_refused_with_its_reason(document: str, problem: str) -> None:
    with pytest.raises(DocumentError) as caught:
        load_yaml(document)
    assert problem in str(caught.value)
    assert "<unicode string>" not in str(caught.value) and "\n" not in str(caught.value)


def test_yaml_dates_stay_the_text_they_were_written_as() -> None:
    loaded = load_yaml(
        "since: 2026-12-04\nat: 2026-12-04T10:30:00Z\nexplicit: !!timestamp 2026-1-1"
    )
    assert loaded == {"since": "2026-12-04", "at": "2026-12-04T10:30:00Z", "explicit": "2026-1-1"}


def test_a_yaml_alias_bomb_is_refused_quickly_and_without_expanding() -> None:
    bomb = billion_laughs()
    assert len(bomb) < 400
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(DocumentError, match="more than 100,000 values"):
        load_yaml(bomb)
    assert time.perf_counter() - started < 5
    # Expanded, it would be 387 million strings; refused, the process grew by little.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


def test_yaml_aliases_within_the_bound_are_expanded_as_written() -> None:
    loaded = load_yaml("base: &inputs {id: P1}\nsteps: [{inputs: *inputs}, {inputs: *inputs}]")
    assert loaded["steps"] == [{"inputs": {"id": "P1"}}, {"inputs": {"id": "P1"}}]


def plain_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Every kind of plain JSON value, with text from ``text``."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=20,
    )


@given(plain_values(st.text()))
def test_every_plain_json_value_reads_back_as_written(value: Any) -> None:
    assert load_json(json.dumps(value)) == value
    assert load_json(json.dumps(value, ensure_ascii=False).encode()) == value


# PyYAML reads JSON but for escaped surrogate pairs (characters past U+FFFF) and keys
# longer than 1 024 characters.
BMP = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=200)


@given(plain_values(BMP))
def test_json_sent_as_yaml_reads_back_as_written(value: Any) -> None:
    assert load_yaml(json.dumps(value)) == value
