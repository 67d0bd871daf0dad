"""Secrets registered with the redactor are masked in any text, longest first."""

from __future__ import annotations

import secrets

import pytest

from pagerduty_connector.component.redact import (
    MASK,
    ONE_PASS_FROM,
    SecretMatcher,
    redact,
    register_secret,
)


def test_registered_secrets_are_masked_whole_and_in_any_order_of_registration() -> None:
    short = secrets.token_hex(4)
    longer = f"{short}-{secrets.token_hex(8)}"  # contains the short one
    register_secret(short)
    register_secret(longer)
    register_secret(short)  # again: nothing changes
    register_secret("abc")  # too short to be told from ordinary text: not registered
    text = f"key={longer} other={short} word=abc"
    assert redact(text) == f"key={MASK} other={MASK} word=abc"
    late = secrets.token_urlsafe(16)
    assert redact(f"x {late}") == f"x {late}"
    register_secret(late)  # registered after a redaction: masked from then on
    assert redact(f"x {late}") == f"x {MASK}"
    assert redact("Authorization: Bearer abc.def") == f"Authorization: Bearer {MASK}"


@pytest.mark.parametrize("count", [2, ONE_PASS_FROM + 4], ids=["one-by-one", "one-pass"])
def test_few_and_many_secrets_are_masked_alike(count: int) -> None:
    """Below ``ONE_PASS_FROM`` secrets the text is searched for each in turn; from it on,
    for all at once (Aho-Corasick): the same masks either way, longest first."""
    short = secrets.token_hex(4)
    longer = f"{short}-{secrets.token_hex(8)}"  # contains the short one
    others = {secrets.token_urlsafe(12) for _ in range(count - 2)}
    matcher = SecretMatcher({short, longer, *others})
    assert (matcher.automaton is not None) == (count >= ONE_PASS_FROM)
    last = sorted(others)[-1] if others else short
    text = f"{longer}|{short}{short} x={last}. {short[:-1]} {longer[1:]}"
    masked = f"{MASK}|{MASK}{MASK} x={MASK}. {short[:-1]} {longer[1:]}"
    assert matcher.mask(text) == masked
    assert matcher.mask("nothing secret here") == "nothing secret here"
    assert matcher.mask("") == ""
