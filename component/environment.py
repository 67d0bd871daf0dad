"""``PAGERDUTY_*`` environment variables, read once with pydantic-settings.

The CLI builds its connection and every client its settings from these; a bad
value is a ``ConfigurationError`` naming the variable.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pagerduty_connector.component.errors import ConfigurationError


class PagerDutyEnvironment(BaseSettings):
    """What ``PAGERDUTY_*`` variables say; unset and empty ones take the defaults."""

    model_config = SettingsConfigDict(
        env_prefix="PAGERDUTY_", extra="ignore", env_ignore_empty=True, populate_by_name=True
    )

    api_token: str | None = Field(default=None, repr=False)
    oauth_token: str | None = Field(default=None, repr=False)
    from_email: str | None = Field(default=None, validation_alias="PAGERDUTY_FROM")
    region: Literal["us", "eu"] = "us"
    api_url: str | None = None
    events_url: str | None = None
    requests_per_minute: float = Field(default=960.0, ge=0, description="0 lifts the budget")
    timeout: float = Field(default=30.0, gt=0)

    @field_validator("region", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("api_token", "oauth_token", "from_email", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        return (value.strip() or None) if isinstance(value, str) else value


def read_environment() -> PagerDutyEnvironment:
    """The ``PAGERDUTY_*`` settings, or a ``ConfigurationError`` naming each bad one."""
    try:
        return PagerDutyEnvironment()
    except ValidationError as exc:
        problems = "; ".join(
            f"{_variable(str(e['loc'][0]))}: {e['msg']}" for e in exc.errors() if e["loc"]
        )
        raise ConfigurationError(f"invalid PagerDuty setting: {problems}") from None


def _variable(field: str) -> str:
    if field.startswith("PAGERDUTY_"):
        return field
    return "PAGERDUTY_FROM" if field == "from_email" else f"PAGERDUTY_{field.upper()}"
