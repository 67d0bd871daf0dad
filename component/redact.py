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

MASK = "***"
_SENSITIVE_NAMES = re.compile(
    r"authorization|token|secret|password|api[_-]?key|routing[_-]?key|cookie", re.IGNORECASE
)
_AUTH_VALUE = re.compile(r"(Token token=|Bearer )[^\s\"',}]+")

_lock = threading.Lock()
_secrets: set[str] = set()
# The registered secrets, longest first (so a secret containing another is masked
# whole), made at registration rather than sorted again for every text redacted.
_longest_first: tuple[str, ...] = ()


def register_secret(value: str | None) -> None:
    """Remember ``value`` so it is masked wherever it would be printed."""
    global _longest_first
    if value and len(value) >= 4 and value not in _secrets:
        with _lock:
            _secrets.add(value)
            _longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and auth header values masked."""
    text = _AUTH_VALUE.sub(lambda m: m.group(1) + MASK, text)
    for s in _longest_first:
        if s in text:
            text = text.replace(s, MASK)
    return text


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
