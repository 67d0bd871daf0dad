"""Keep secrets out of logs, errors and results.

Every secret the process handles (API keys, tokens, routing keys) is registered
here when it is first used; ``redact`` replaces registered values and anything
that looks like an ``Authorization`` header, and ``RedactingFilter`` applies it
to every log record of the ``pdc`` loggers.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from ahocorasick_rs import AhoCorasick, MatchKind

MASK = "***"
_SENSITIVE_NAMES = re.compile(
    r"authorization|token|secret|password|api[_-]?key|routing[_-]?key|cookie", re.IGNORECASE
)
_AUTH_VALUE = re.compile(r"(Token token=|Bearer )[^\s\"',}]+")

# Up to this many secrets, ``redact`` looks for each in turn (a fraction of a
# microsecond apiece); from it on, for all of them in one pass over the text with an
# Aho-Corasick automaton, whose cost barely grows with their number (a delivery's body
# against 1 000 secrets: 65-85 µs one by one, 2 µs in one pass; ``bench/redact.py``).
ONE_PASS_FROM = 16

_lock = threading.Lock()
_secrets: set[str] = set()


class SecretMatcher:
    """Secrets to mask, longest first (so a secret containing another is masked whole),
    and from ``ONE_PASS_FROM`` of them an automaton finding them all in one pass,
    leftmost-longest; made at registration rather than for every text redacted."""

    def __init__(self, secrets: set[str], one_pass: bool | None = None) -> None:
        """``one_pass``: by default, from ``ONE_PASS_FROM`` secrets (the bench sets it)."""
        self.longest_first = tuple(sorted(secrets, key=len, reverse=True))
        if one_pass is None:
            one_pass = len(secrets) >= ONE_PASS_FROM
        self.automaton = (
            AhoCorasick(list(self.longest_first), matchkind=MatchKind.LeftmostLongest)
            if one_pass and secrets
            else None
        )

    def mask(self, text: str) -> str:
        """``text`` with every registered secret in it replaced by ``MASK``."""
        if self.automaton is None:
            for secret in self.longest_first:
                if secret in text:
                    text = text.replace(secret, MASK)
            return text
        found = self.automaton.find_matches_as_indexes(text)
        if not found:
            return text
        parts, last = [], 0
        for _, start, end in found:
            parts += (text[last:start], MASK)
            last = end
        parts.append(text[last:])
        return "".join(parts)


# Replaced whole at each registration, so a reader in another thread sees one or the other.
_matcher = SecretMatcher(set())


def register_secret(value: str | None) -> None:
    """Remember ``value`` so it is masked wherever it would be printed."""
    global _matcher
    if value and len(value) >= 4 and value not in _secrets:
        with _lock:
            _secrets.add(value)
            _matcher = SecretMatcher(_secrets)


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and auth header values masked."""
    text = _AUTH_VALUE.sub(lambda m: m.group(1) + MASK, text)
    return _matcher.mask(text)


def redact_data(value: Any) -> Any:
    """``value`` (JSON-like data: a step's result, a delivery's event) with every string
    in it masked as ``redact`` masks text."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v) for v in value]
    return value


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """Mask values whose key names a secret (headers, form fields), recursively."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if _SENSITIVE_NAMES.search(str(key)):
            out[key] = MASK
        elif isinstance(value, Mapping):
            out[key] = redact_mapping(value)
        elif isinstance(value, str):
            out[key] = redact(value)
        else:
            out[key] = value
    return out


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message, mask it, and keep the record."""
        message = record.getMessage()
        record.msg = redact(message)
        record.args = None
        return True


def get_logger(name: str) -> logging.Logger:
    """A ``pdc.<name>`` logger whose records are redacted before any handler sees them.

    Logger filters do not apply to records propagated from child loggers, so each
    project logger carries its own filter.
    """
    logger = logging.getLogger(f"pdc.{name}")
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger
