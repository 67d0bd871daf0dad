"""The runtime's settings: the public URL PagerDuty is subscribed to follows the port
the runtime listens on unless it is set, and a local one on another port is warned of."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pagerduty_connector.component.errors import ConfigurationError
from pagerduty_connector.runtime.settings import load_settings


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8001, "http://127.0.0.1:8001"),
        ("0.0.0.0", 9000, "http://127.0.0.1:9000"),  # every interface: reached locally
        ("::1", 8002, "http://[::1]:8002"),
        ("pdc.internal", 8080, "http://pdc.internal:8080"),
    ],
)
def test_an_unset_public_url_is_where_the_runtime_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, port: int, url: str
) -> None:
    monkeypatch.delenv("PDC_PUBLIC_URL", raising=False)
    settings = load_settings(data_dir=tmp_path, host=host, port=port)
    assert settings.public_url == url and settings.public_url_mismatch() is None


def test_a_set_public_url_is_kept_and_a_local_one_on_another_port_is_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PDC_PUBLIC_URL", "http://127.0.0.1:8000")
    settings = load_settings(data_dir=tmp_path, port=8001)
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.public_url_mismatch() == (
        "PDC_PUBLIC_URL http://127.0.0.1:8000 is this machine's port 8000, but the runtime "
        "listens on 8001: deliveries would go elsewhere; set PDC_PUBLIC_URL to "
        "http://127.0.0.1:8001 (or leave it unset)"
    )
    # A public host (a proxy or tunnel in front) may well use another port.
    for public in ("https://pdc.example.com", "http://localhost:8001"):
        monkeypatch.setenv("PDC_PUBLIC_URL", public)
        assert load_settings(data_dir=tmp_path, port=8001).public_url_mismatch() is None
    monkeypatch.setenv("PDC_PUBLIC_URL", "http://localhost")  # port 80
    assert "is this machine's port 80" in str(
        load_settings(data_dir=tmp_path, port=8001).public_url_mismatch()
    )


def test_tracing_without_opentelemetry_installed_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = "http://127.0.0.1:4318/v1/traces"
    assert load_settings(data_dir=tmp_path, otlp_traces_endpoint=endpoint).otlp_traces_endpoint
    # As on an installation without the otel extra: the import fails.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'pagerduty-connector\[otel\]'"):
        load_settings(data_dir=tmp_path, otlp_traces_endpoint=endpoint)
    with pytest.raises(ConfigurationError, match="PDC_OTLP_TRACES_ENDPOINT"):
        load_settings(data_dir=tmp_path, otlp_traces_endpoint="collector:4318")
