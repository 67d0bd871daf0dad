"""Templates in step inputs: Jinja, sandboxed, over what a run knows.

A step input may reference the trigger's output, earlier steps' results, variables set
by ``set`` steps and, in a loop, its item: ``{{ trigger.event.data.id }}``,
``{{ steps.incident.data.incident.title }}``, ``{{ vars.count }}``, ``{{ item.id }}``;
list items by dot path (``notifications.0.sentat``). A value that is exactly one
expression keeps its type (an object stays an object); other text renders to a string.

Dates and times come from pendulum: ``now()`` (the run's clock, below),
``parse_time(text)`` and these filters: ``time`` (text to a time), ``add``/``subtract``
(``{{ now() | add(minutes=10) }}``), ``minutes_between``/``seconds_between``
(``{{ parse_time(x) | minutes_between(now()) }}``), ``in_zone`` (``'Europe/Paris'``),
``format_time`` (``'YYYY-MM-DD HH:mm'``), ``iso`` and ``duration`` (``'10m'``,
``'PT1H30M'`` or seconds, to seconds). A time renders as ISO 8601.

``now()`` is the run's clock, not the machine's: the time the run started, moved on by
each step as it finishes and each wait as it ends, every one of them recorded by the
run. A run resumed after a crash renders the same values it rendered before, and takes
the same branches.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pendulum
from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.sandbox import SandboxedEnvironment

from pagerduty_connector.component.errors import InputError, did_you_mean


class _DataEnvironment(SandboxedEnvironment):
    """A sandbox where ``a.b`` on a mapping means its key ``b`` before any method.

    Jinja tries attributes first, so ``steps.get`` or ``data.items`` would otherwise
    reach ``dict.get`` / ``dict.items`` instead of the step or field of that name.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Key lookup first for mappings, then the sandbox's attribute rules."""
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def parse_time(value: Any) -> pendulum.DateTime:
    """A time from ISO 8601 text (or a time): the ``time`` filter and ``parse_time()``."""
    if isinstance(value, pendulum.DateTime):
        return value
    if isinstance(value, datetime):
        return pendulum.instance(value)
    parsed = pendulum.parse(str(value))
    if not isinstance(parsed, pendulum.DateTime):
        raise ValueError(f"{value!r} is not a date and time")
    return parsed


def duration_seconds(value: Any) -> float:
    """Seconds in a duration: a number of seconds, ``'90s'``, ``'10m'``, ``'2h'``,
    ``'3d'``, ``'1w'``, or ISO 8601 (``'PT1H30M'``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    short = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
    if short:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[short[2]]
        return float(short[1]) * unit
    try:
        parsed = pendulum.parse(text)
    except Exception:  # pendulum raises its own ParserError, a ValueError at heart
        parsed = None
    if isinstance(parsed, pendulum.Duration):
        return parsed.total_seconds()
    raise ValueError(f"{value!r} is not a duration (e.g. 600, '10m', '2h', 'PT1H30M')")


def _add(value: Any, **amount: float) -> pendulum.DateTime:
    return parse_time(value).add(**amount)  # type: ignore[arg-type]


def _subtract(value: Any, **amount: float) -> pendulum.DateTime:
    return parse_time(value).subtract(**amount)  # type: ignore[arg-type]


def _between(unit: float) -> Callable[[Any, Any], float]:
    def between(start: Any, end: Any) -> float:
        """How long from ``start`` to ``end`` (negative when ``end`` comes first)."""
        seconds = (parse_time(end) - parse_time(start)).total_seconds()
        return round(seconds / unit, 6)

    return between


_env = _DataEnvironment(undefined=StrictUndefined, autoescape=False)
_env.globals.update(parse_time=parse_time)
_env.filters.update(
    time=parse_time,
    add=_add,
    subtract=_subtract,
    minutes_between=_between(60),
    seconds_between=_between(1),
    in_zone=lambda value, zone: parse_time(value).in_timezone(zone),
    format_time=lambda value, fmt="YYYY-MM-DD HH:mm:ss Z": parse_time(value).format(fmt),
    iso=lambda value: parse_time(value).isoformat(),
    duration=duration_seconds,
)
# What a template may call or use besides the data: a misspelt name is refused at deploy.
FUNCTIONS = frozenset({"now", "parse_time", *_env.globals})
FILTERS = frozenset(_env.filters)
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)
_STEP_REF = re.compile(r"""\bsteps(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*['"]([^'"]+)['"]\s*\])""")


def is_template(value: str) -> bool:
    """Whether ``value`` holds a Jinja expression or statement."""
    return "{{" in value or "{%" in value


def contains_template(value: Any) -> bool:
    """Whether any string inside ``value`` is a template."""
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(contains_template(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_template(v) for v in value)
    return False


def strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every template string inside ``value``, with where it is inside it."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from strings(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for n, v in enumerate(value):
            yield from strings(v, f"{where}[{n}]")
    elif isinstance(value, str) and is_template(value):
        yield where, value


def _render_time(value: Any) -> Any:
    """Times render as ISO 8601 text; everything else as it is."""
    if isinstance(value, datetime):
        return parse_time(value).isoformat()
    return value


@functools.lru_cache(maxsize=4096)
def _compiled(value: str) -> Callable[[dict[str, Any]], Any]:
    """A template string compiled once (every run of a flow renders the same ones):
    a lone expression keeps its type, other text renders to a string."""
    match = _SINGLE.match(value)
    if match:
        expression = _env.compile_expression(match.group("expr"), undefined_to_none=False)

        def evaluate(scope: dict[str, Any]) -> Any:
            result = expression(**scope)
            if isinstance(result, Undefined):
                str(result)  # a StrictUndefined says what is missing, as UndefinedError
            return _render_time(result)

        return evaluate
    template = _env.from_string(value)
    return lambda scope: template.render(**scope)


def step_references(value: str) -> list[str]:
    """The steps a template refers to: ``steps.x`` and ``steps["x"]``."""
    return [dotted or quoted for dotted, quoted in _STEP_REF.findall(value)]


def attribute_paths(value: str) -> list[tuple[str, list[str]]]:
    """The data paths a template reads, as (root name, keys): ``trigger.event.data.id``
    is ``("trigger", ["event", "data", "id"])``. A path stops at a key that is computed
    (``x[index]``) and before a method called on it (``x.get('k')``)."""
    try:
        tree = _env.parse(value)
    except TemplateError:
        return []
    called = {id(call.node) for call in tree.find_all(nodes.Call)}
    inner: set[int] = set()
    chains: list[tuple[int, str, list[str]]] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        keys: list[str] = []
        current: Any = node
        while isinstance(current, nodes.Getattr | nodes.Getitem):
            if isinstance(current, nodes.Getattr):
                key: Any = current.attr
            elif isinstance(current.arg, nodes.Const):
                key = current.arg.value
            else:
                keys = []  # a computed key: only what comes before it is known
                key = None
            if key is not None and id(current) not in called:
                keys.insert(0, str(key))
            elif key is not None:
                keys = []  # a method called on what comes before
            inner.add(id(current.node))
            current = current.node
        if isinstance(current, nodes.Name) and keys:
            chains.append((id(node), current.name, keys))
    return [(root, keys) for ident, root, keys in chains if ident not in inner]


def unknown_names(value: str) -> list[str]:
    """Functions and filters a template uses that do not exist (a typo of ``now``, of
    ``default``...): those Jinja would only refuse when the run renders it."""
    try:
        tree = _env.parse(value)
    except TemplateError:
        return []  # reported by ``check``
    found = [
        node.node.name
        for node in tree.find_all(nodes.Call)
        if isinstance(node.node, nodes.Name)
        and node.node.name not in FUNCTIONS
        and node.node.name not in _env.globals
    ]
    found += [node.name for node in tree.find_all(nodes.Filter) if node.name not in _env.filters]
    return found


def check(owner: str, key: str, value: Any) -> None:
    """Compile every template inside ``value``; ``InputError`` naming the owner and input
    for a syntax error or an unknown function or filter."""
    for where, text in strings(value):
        inside = f" (at {where})" if where else ""
        unknown = unknown_names(text)
        if unknown:
            hint = did_you_mean(unknown[0], [*FUNCTIONS, *FILTERS])
            raise InputError(
                owner,
                key,
                f"template {text!r}{inside} uses {unknown[0]!r}, which is not a function or "
                f"filter here{hint} (functions: {', '.join(sorted(FUNCTIONS))}; filters "
                f"include: {', '.join(sorted(_OURS))}, default, length, join)",
            )
        try:
            _compiled(text)
        except TemplateError as exc:
            raise InputError(owner, key, f"template error{inside}: {exc}") from None


_OURS = frozenset(
    {
        "time",
        "add",
        "subtract",
        "minutes_between",
        "seconds_between",
        "in_zone",
        "format_time",
        "iso",
        "duration",
    }
)


class TemplateFailed(InputError):
    """A step input's template failed at run time: it refers to something the run does
    not have, or its expression raised. The message names the flow and step, the input
    (and where inside it), the template and Jinja's reason."""


class _RenderFailed(Exception):
    """Carries a failed template, and where in an input it was, up to ``render_input``."""

    def __init__(self, where: str, template: str, cause: Exception) -> None:
        self.where, self.template, self.cause = where, template, cause


def render(value: Any, scope: dict[str, Any], where: str = "") -> Any:
    """Render templates inside ``value``; a lone expression keeps its type, and one that
    names nothing (``{{ trigger.event.data.nope }}``) raises ``UndefinedError`` rather
    than passing Jinja's ``Undefined`` on. Errors carry ``where`` inside the value."""
    if isinstance(value, dict):
        return {k: render(v, scope, f"{where}.{k}" if where else k) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, scope, f"{where}[{n}]") for n, v in enumerate(value)]
    if not isinstance(value, str) or not is_template(value):
        return value
    try:
        return _compiled(value)(scope)
    except _RenderFailed:
        raise
    except Exception as exc:  # whatever a template raises (sandbox, range, arithmetic)
        raise _RenderFailed(where, value, exc) from None


def render_input(owner: str, key: str, value: Any, scope: dict[str, Any]) -> Any:
    """One step input rendered; ``TemplateFailed`` naming ``owner`` (flow.step), the input,
    where inside it, the template and why."""
    try:
        return render(value, scope)
    except _RenderFailed as failed:
        inside = f" at {failed.where}" if failed.where else ""
        template = failed.template if len(failed.template) <= 120 else failed.template[:117] + "..."
        reason = f"{type(failed.cause).__name__}: {failed.cause}"
        raise TemplateFailed(
            owner, key, f"template {template!r}{inside} failed: {reason}"
        ) from None


def try_render(value: Any, scope: dict[str, Any]) -> Any:
    """``value`` rendered, or ``None`` when a template in it fails (a concurrency key)."""
    try:
        return render(value, scope)
    except _RenderFailed:
        return None
