"""What the tests share: paths, the spec checker, PostgreSQL, runtime helpers."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What the tests read (PagerDuty's OpenAPI documents, the reference interface), kept
# in the repository with its source named in tests/data/README.md.
DATA = REPO / "tests" / "data"
