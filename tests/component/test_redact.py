"""Secrets registered with the redactor are masked in any text, longest first."""

from __future__ import annotations

import secrets

from pagerduty_connector.component.redact import MASK, redact, register_secret


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
