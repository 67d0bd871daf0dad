"""The README documents what the runtime has: every ``PDC_*`` setting in its
configuration table, every route in its API table."""

from __future__ import annotations

import re

from starlette.routing import Mount, Route

from pagerduty_connector.runtime.routes import ROUTES
from pagerduty_connector.runtime.settings import RuntimeSettings
from tests.support import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"`(PDC_[A-Z_]+)`", README))
    settings = {f"PDC_{name.upper()}" for name in RuntimeSettings.model_fields}
    assert sorted(settings - documented) == []


def test_every_route_is_in_the_api_table() -> None:
    table = README[README.index("## Runtime API") : README.index("## Webhook triggers")]
    missing = []
    for route in ROUTES:
        inner = route.routes if isinstance(route, Mount) and route.path == "/api" else [route]
        prefix = "/api" if inner is not route and inner != [route] else ""
        for item in inner:
            if not isinstance(item, Route) or not item.include_in_schema:
                continue
            path = prefix + item.path
            # Its fixed words: the table writes /{id or name} variants and "/retry, /replay"
            # pairs in one row, so each word is looked for, not the whole path.
            words = {w for w in re.sub(r"\{[^}]*\}", "", path).split("/") if w and w != "api"}
            if not all(re.search(rf"/{re.escape(word)}\b", table) for word in words):
                missing.append(path)
    assert missing == []
