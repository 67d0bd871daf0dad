"""The component's error tree.

    ComponentError                 anything this project raises on purpose
    ├── ManifestError              manifest.yaml or an implementation does not fit (startup)
    ├── InputError                 a step input is missing or malformed (nothing sent)
    ├── ConfigurationError         no request can be made with this connection/settings
    ├── PagerDutyError             PagerDuty answered with an error, or could not be reached
    ├── DeployError                a trigger's deploy or teardown failed (says what was undone)
    └── SignatureError             a webhook delivery is unsigned (400) or forged (403)

Every message is written for the person who has to fix it, names what was wrong,
and never contains a secret: errors are built from our own words and from
PagerDuty's error body, never from request headers.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class ComponentError(Exception):
    """Base class of every error this project raises deliberately."""


class ManifestError(ComponentError):
    """The manifest is invalid or disagrees with the registered implementations."""


class ConfigurationError(ComponentError):
    """A connection or setting is missing or wrong, so no request can be made."""


class InputError(ComponentError):
    """A step input failed cleaning or validation; nothing was sent to PagerDuty."""

    def __init__(self, action: str, input_key: str | None, problem: str) -> None:
        self.action = action
        self.input_key = input_key
        self.problem = problem
        where = f"input '{input_key}'" if input_key else "inputs"
        super().__init__(f"{action}: {where}: {problem}")


class PagerDutyError(ComponentError):
    """PagerDuty rejected a request, or it could not be completed.

    ``status`` is the HTTP status (``None`` when no response arrived), ``code`` and
    ``errors`` come from PagerDuty's error body (``{"error": {"code", "message",
    "errors"}}``) when it has one. ``sent`` is ``False`` only when the request provably
    never left (the connection was refused, the name did not resolve, connecting timed
    out): sending it again cannot do anything twice, whatever its method.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        errors: list[str] | None = None,
        method: str | None = None,
        path: str | None = None,
        body: Any = None,
        sent: bool = True,
    ) -> None:
        self.message = message
        self.sent = sent
        self.status = status
        self.code = code
        self.errors = list(errors or [])
        self.method = method
        self.path = path
        self.body = body
        super().__init__(self._render())

    def add(self, hint: str) -> None:
        """Append ``hint`` (what to do about it) to the message."""
        self.message += hint
        self.args = (self._render(),)

    def _render(self) -> str:
        where = f"{self.method} {self.path}: " if self.method else ""
        status = f"HTTP {self.status}" if self.status is not None else "no response"
        code = f" (PagerDuty code {self.code})" if self.code is not None else ""
        details = f" [{'; '.join(self.errors)}]" if self.errors else ""
        return f"{where}{status}{code}: {self.message}{details}"

    def to_dict(self) -> dict[str, Any]:
        """Return the error as plain data for results, execution records and the CLI."""
        return {
            "type": "PagerDutyError",
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "errors": self.errors,
            "method": self.method,
            "path": self.path,
        }


class DeployError(ComponentError):
    """A trigger's deploy or teardown failed; the message says where and what was undone."""


class SignatureError(ComponentError):
    """A delivery's signature is missing or malformed (400) or matches no secret (403)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the choice nearest to ``word`` (case aside), or ``""``
    when none is near: the tail of every "unknown ..." message."""
    options = list(choices)
    lowered = {choice.lower(): choice for choice in options}
    if word.lower() in lowered:
        return f" (did you mean '{lowered[word.lower()]}'?)"
    near = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[near[0]]}'?)" if near else ""
