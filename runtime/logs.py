"""Logging helpers of the runtime: complaints that come once per connection, thread or
second during a fault are said once a period, with how many were held back."""

from __future__ import annotations

import logging
import time
from collections import Counter

# Seconds between two lines of one throttled complaint (and between two summaries of
# what the server's guards closed).
SUMMARY_EVERY = 10.0


class Throttled(logging.Filter):
    """Lets one warning of each kind through per ``SUMMARY_EVERY`` seconds, and says how
    many like it were held back: asyncio's accept errors and uvicorn's invalid requests
    (one per connection otherwise), DBOS's complaints while its database is away (one
    per thread and second, each with a traceback)."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the first of a kind per period; drop the rest, counting them."""
        if record.levelno < logging.WARNING:
            return True
        kind = str(record.msg)[:80]
        moment = time.monotonic()
        if moment - self._last.get(kind, -SUMMARY_EVERY) < SUMMARY_EVERY:
            self._held[kind] += 1
            return False
        self._last[kind] = moment
        held = self._held.pop(kind, 0)
        if held:  # a repeat: the first of its kind had the traceback
            record.msg = f"{record.getMessage()} ({held} more like this were not logged)"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def throttle(*names: str) -> None:
    """Throttle the warnings of the loggers ``names`` (once each: a second call adds no
    second filter)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, Throttled) for f in logger.filters):
            logger.addFilter(Throttled())
