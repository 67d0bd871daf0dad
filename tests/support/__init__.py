"""What the tests share: paths, the spec checker, PostgreSQL, runtime helpers."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The product documents and PagerDuty's OpenAPI specs sit beside the checkout.
SHARED = REPO.parent / "shared"
