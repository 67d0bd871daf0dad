"""The validated manifest cache behind ``pdc actions`` and ``pdc describe``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pagerduty_connector.component.catalog import catalog, find
from pagerduty_connector.component.errors import ManifestError
from pagerduty_connector.component.manifest import MANIFEST_FILE, Manifest, packaged


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("PDC_CACHE_DIR", str(folder))
    return folder


def test_a_miss_validates_and_stores_the_document(cache: Path, manifest: Manifest) -> None:
    document = catalog()
    assert document == manifest.model_dump(mode="json")
    (entry,) = cache.glob("manifest-*.json")
    assert json.loads(entry.read_text()) == document


def test_a_hit_is_read_from_the_cache(cache: Path) -> None:
    catalog()
    (entry,) = cache.glob("manifest-*.json")
    stored = json.loads(entry.read_text())
    stored["label"] = "read from the cache"
    entry.write_text(json.dumps(stored))
    assert catalog()["label"] == "read from the cache"


def test_another_manifest_gets_its_own_entry_and_errors_are_not_cached(
    cache: Path, tmp_path: Path
) -> None:
    catalog()
    changed = tmp_path / "manifest.yaml"
    changed.write_text(
        packaged(MANIFEST_FILE).read_text().replace("label: PagerDuty", "label: PD", 1)
    )
    assert catalog(changed)["label"] == "PD"
    assert len(list(cache.glob("manifest-*.json"))) == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("key: [unclosed")
    with pytest.raises(ManifestError, match="is not valid YAML"):
        catalog(broken)
    assert len(list(cache.glob("manifest-*.json"))) == 2


def test_a_damaged_entry_or_an_unwritable_cache_only_costs_time(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifest: Manifest
) -> None:
    catalog()
    (entry,) = cache.glob("manifest-*.json")
    entry.write_text('{"half": ')
    assert catalog() == manifest.model_dump(mode="json")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("PDC_CACHE_DIR", str(blocked / "cache"))
    assert catalog() == manifest.model_dump(mode="json")


def test_find_looks_in_every_section(cache: Path) -> None:
    document = catalog()
    assert find(document, "getIncident")[0] == "actions"  # type: ignore[index]
    assert find(document, "selectService")[0] == "dataSources"  # type: ignore[index]
    assert find(document, "serviceTrigger")[0] == "triggers"  # type: ignore[index]
    assert find(document, "pagerduty-oauth")[0] == "connections"  # type: ignore[index]
    assert find(document, "nope") is None
