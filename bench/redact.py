"""Benchmark: masking registered secrets in a delivery's body, one pass against one by one.

Intake masks every secret the serving process has registered (one signing secret per
flow it has received for) in each delivery's body before recording it. For 3 to
3 000 random secrets, in the same run: the body searched for each secret in turn
(the baseline, and what ``redact`` does below ``ONE_PASS_FROM`` secrets) against one
pass of the Aho-Corasick automaton (from it on), per body; and what making the matcher
costs, which each newly registered secret pays once. Target: one pass no slower than
one by one from ``ONE_PASS_FROM`` secrets up.

Run from the repository root: ``python -m bench.redact``.
"""

from __future__ import annotations

import json
import secrets
import timeit
from collections.abc import Callable
from functools import partial

from bench.webhook_intake import EVENT
from pagerduty_connector.component.redact import ONE_PASS_FROM, SecretMatcher


def _per_call(call: Callable[[], object], seconds: float = 0.3) -> float:
    """Seconds per call: the best of 5 repeats of about ``seconds`` / 5 each."""
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    runs = max(1, int(number * seconds / 0.2))
    return min(timer.repeat(repeat=5, number=runs)) / runs


def _measure(count: int, body: str) -> tuple[float, float, float]:
    """One by one and one pass per body, and making the one-pass matcher, in seconds."""
    held = {secrets.token_urlsafe(24) for _ in range(count)}
    # One of them in the body, as a secret echoed back in a payload would be.
    text = body.replace("Server is on fire", next(iter(held)))
    in_turn, one_pass = SecretMatcher(held, one_pass=False), SecretMatcher(held, one_pass=True)
    assert in_turn.mask(text) == one_pass.mask(text)
    return (
        _per_call(partial(in_turn.mask, text)),
        _per_call(partial(one_pass.mask, text)),
        _per_call(partial(SecretMatcher, held, one_pass=True), seconds=0.1),
    )


def main() -> None:
    """Time both ways for growing numbers of secrets and print them side by side."""
    body = json.dumps(EVENT)
    print(f"masking a {len(body)}-character delivery body; one pass from {ONE_PASS_FROM}")
    print(f"{'secrets':>8}{'one by one µs':>16}{'one pass µs':>14}{'ratio':>8}{'make ms':>10}")
    for count in (3, ONE_PASS_FROM, 100, 1_000, 3_000):
        slow, fast, make = _measure(count, body)
        print(f"{count:>8}{slow * 1e6:>16.2f}{fast * 1e6:>14.2f}{fast / slow:>8.2f}", end="")
        print(f"{make * 1e3:>10.2f}")


if __name__ == "__main__":
    main()
