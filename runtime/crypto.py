"""Encryption of secrets at rest (Fernet: AES-128-CBC with HMAC-SHA256)."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from pagerduty_connector.component.errors import ConfigurationError
from pagerduty_connector.component.redact import register_secret


class SecretBox:
    """Encrypts JSON-serialisable secrets with the runtime's key."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def seal(self, values: dict[str, Any]) -> str:
        """Encrypt ``values``; the result is safe to store."""
        return self._fernet.encrypt(json.dumps(values).encode()).decode("ascii")

    def open(self, token: str | None) -> dict[str, Any]:
        """Decrypt what ``seal`` produced and register each string as a secret."""
        if not token:
            return {}
        try:
            values = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise ConfigurationError(
                "stored secrets cannot be decrypted: PDC_SECRET_KEY differs from the key "
                "they were encrypted with"
            ) from None
        for value in values.values():
            if isinstance(value, str):
                register_secret(value)
        return values
