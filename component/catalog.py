"""The validated manifest as plain data, cached by content, for commands that only read it.

``pdc actions`` and ``pdc describe`` show what the manifest declares. Validating it
needs pydantic and the manifest models, which take most of a command's start-up;
yet the validated document is the same for the same manifest and the same models.
So it is kept as JSON in the user's cache directory, under a hash of
``manifest.yaml`` and of the models' source (``component/manifest.py``), so a
change to either makes a new entry. A miss, a damaged entry or a cache
that cannot be written just validates as usual: the cache only saves time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pagerduty_connector.component.redact import get_logger

PACKAGE = "pagerduty_connector"
log = get_logger("catalog")


def cache_dir() -> Path:
    """``$PDC_CACHE_DIR``, else ``$XDG_CACHE_HOME/pagerduty-connector``, else ``~/.cache/...``."""
    chosen = os.environ.get("PDC_CACHE_DIR")
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pagerduty-connector"


def _sources(path: Path | str | None) -> tuple[bytes, bytes]:
    """The manifest's bytes and the models' source, which decide what validation yields."""
    from importlib.resources import files

    chosen = path or os.environ.get("PDC_MANIFEST")
    root = files(PACKAGE)
    manifest = Path(chosen).read_bytes() if chosen else (root / "manifest.yaml").read_bytes()
    return manifest, (root / "component" / "manifest.py").read_bytes()


def catalog(path: Path | str | None = None) -> dict[str, Any]:
    """The validated, ref-resolved manifest as JSON data (``Manifest.model_dump``).

    Raises ``ManifestError`` like ``load_manifest`` when the manifest is invalid.
    """
    try:
        manifest_bytes, models_source = _sources(path)
    except FileNotFoundError:
        manifest_bytes = models_source = b""  # load_manifest names what is missing
    digest = hashlib.sha256(manifest_bytes + b"\0" + models_source).hexdigest()
    entry = cache_dir() / f"manifest-{digest}.json"
    try:
        return json.loads(entry.read_bytes())
    except (OSError, ValueError):
        pass
    from pagerduty_connector.component.manifest import load_manifest

    document = load_manifest(path).model_dump(mode="json")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        partial = entry.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(document), encoding="utf-8")
        partial.replace(entry)  # atomic: a concurrent reader sees all of it or nothing
    except OSError as exc:
        log.debug("manifest cache not written (%s)", exc.strerror)
    return document


def find(document: dict[str, Any], key: str) -> tuple[str, dict[str, Any]] | None:
    """The declared item called ``key`` and its section, or ``None``."""
    for section in ("actions", "dataSources", "triggers", "connections"):
        for item in document[section]:
            if item["key"] == key:
                return section, item
    return None
