"""The installed product: an sdist and a wheel built from it, installed outside the repo.

The wheel goes into a fresh virtual environment in a temporary folder (its
dependencies are the test environment's, reached through a ``.pth`` line, so no
download is needed), and the commands run from there: ``pdc actions``,
``pdc validate``, ``pdc run`` against ``pdc mock``, and ``pdc serve`` deploying an
instance and recording a signed delivery through the SQLite writer process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import httpx2
import pytest
import yaml
from cryptography.fernet import Fernet
from packaging.requirements import Requirement

from pagerduty_connector.component.standin.server import SECRETS_PATH, free_port
from pagerduty_connector.triggers.signature import sign
from tests.support import REPO
from tests.support.processes import finished, wait_until
from tests.support.runtime import EVENT

ROOT = "pagerduty_connector"
DIST = "pagerduty-connector"


# What a build never reads: building from a copy without them is building the checkout.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pdc",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``python -m build``: the sdist, then the wheel built from that sdist. From a copy
    of the sources, since a build writes beside them (build/, *.egg-info) and two test
    workers building in the checkout at once broke each other's build."""
    sources = tmp_path_factory.mktemp("sources") / "pagerduty-connector"
    shutil.copytree(REPO, sources, ignore=NOT_SOURCES)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(sources)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # A clean build: setuptools warned (four boxes) about data folders that looked
    # like packages it was told nothing about.
    assert "would be ignored" not in done.stdout + done.stderr
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def installed(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the repository with the wheel installed; its ``bin``."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = Path(
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Dependencies from this environment; .pth lines add paths but run none of the
    # .pth files there, so this checkout's editable install stays invisible.
    (site / "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(built[1])],
        check=True,
        timeout=300,
    )
    return venv / "bin"


def run(bin_: Path, *args: str, env: dict[str, str] | None = None, cwd: Path) -> str:
    done = subprocess.run(
        [str(bin_ / "pdc"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_sdist_and_wheel_carry_the_data_and_one_import_root(built: tuple[Path, Path]) -> None:
    sdist, wheel = built
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"manifest.yaml", "manifest.schema.json", "pyproject.toml"} <= names
    assert "runtime/store/migrations/versions/0001_initial.py" in names
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
    tops = {f.split("/", 1)[0] for f in files if not f.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {ROOT}
    for data in (
        "manifest.yaml",
        "manifest.schema.json",
        "py.typed",
        "runtime/store/migrations/env.py",
        "runtime/store/migrations/script.py.mako",
        "runtime/store/migrations/versions/0003_oauth_states.py",
        "component/standin/server.py",
        "runtime/console/templates/execution.html",
        "runtime/console/static/htmx.min.js",
        "runtime/console/static/console.css",
    ):
        assert f"{ROOT}/{data}" in files
    assert not any(f.startswith((f"{ROOT}/tests/", f"{ROOT}/bench/")) for f in files)


def test_no_httpx_in_the_dependency_tree() -> None:
    """httpx2 only: httpx is not required by us nor by anything we require."""
    seen: set[str] = set()
    pending = [DIST]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name.lower().replace("_", "-"))
    assert "httpx2" in seen and "authlib" in seen and "starlette" in seen
    assert "httpx" not in seen


@pytest.fixture
def mock_pagerduty(installed: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([str(installed / "pdc"), "mock", "--port", str(port)], cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx2.get(f"{url}/abilities").status_code == 200, 30, "pdc mock")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_installed_cli_lists_validates_and_runs(
    installed: Path, tmp_path: Path, mock_pagerduty: str
) -> None:
    located = subprocess.run(
        [str(installed / "python"), "-c", f"import {ROOT}, sys; print({ROOT}.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert str(installed.parent) in located and str(REPO) not in located
    listed = run(installed, "actions", cwd=tmp_path)
    assert "54 actions" in listed and "createIncidentNote" in listed
    assert "manifest ok: 54 actions" in run(installed, "validate", cwd=tmp_path)
    # `pdc schema` rewrites the checkout's schema; an installed package is left alone.
    schema = Path(located.strip()).parent / "manifest.schema.json"
    before = schema.read_bytes()
    refused = subprocess.run(
        [str(installed / "pdc"), "schema"], capture_output=True, text=True, cwd=tmp_path
    )
    assert refused.returncode == 1 and "installed package" in refused.stderr
    assert "--output" in refused.stderr and schema.read_bytes() == before
    run(installed, "schema", "--output", str(tmp_path / "schema.json"), cwd=tmp_path)
    assert (tmp_path / "schema.json").read_bytes() == before

    env = {"PAGERDUTY_API_URL": mock_pagerduty, "PAGERDUTY_API_TOKEN": "u+wheel-test"}
    result = json.loads(
        run(installed, "run", "getIncident", "-i", "id=Q1P5", env=env, cwd=tmp_path)
    )
    incident = result["data"]["incident"]
    assert (incident["id"], incident["title"], incident["status"]) == (
        "Q1P5",
        "Server is on fire",
        "triggered",
    )
    port = mock_pagerduty.rsplit(":", 1)[1]
    taken = subprocess.run(
        [str(installed / "pdc"), "mock", "--port", port], capture_output=True, text=True, timeout=60
    )
    assert taken.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr


def test_the_installed_runtime_deploys_and_records_a_delivery(
    installed: Path, tmp_path: Path, mock_pagerduty: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PDC_DATA_DIR": str(tmp_path / "data"),
        "PDC_PORT": str(port),
        "PDC_PUBLIC_URL": base,
        "PDC_SECRET_KEY": Fernet.generate_key().decode(),
        "PAGERDUTY_API_URL": mock_pagerduty,
    }
    server = subprocess.Popen(
        [str(installed / "pdc"), "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: httpx2.get(f"{base}/health").status_code == 200, 60, "pdc serve")
        token = (tmp_path / "data" / "admin-token").read_text().strip()
        api = httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
        created = api.post(
            "/api/connections",
            json={
                "name": "ops",
                "type": "pagerduty-api-key",
                "config": {"apiKey": "u+k", "from": "a@example.com"},
            },
        )
        assert created.status_code == 201, created.text
        example = yaml.safe_load((REPO / "examples" / "incident-note.yaml").read_text())
        deployed = api.post("/api/instances", json=example)
        assert deployed.status_code == 201, deployed.text
        (secret,) = httpx2.get(f"{mock_pagerduty}{SECRETS_PATH}").json().values()
        body = json.dumps(EVENT).encode()
        answer = api.post(
            "/webhooks/acme-oncall/on-incident",
            content=body,
            headers={"X-Webhook-Id": "wheel-1", "X-PagerDuty-Signature": sign(body, secret)},
        )
        assert answer.status_code == 202, answer.text
        execution = answer.json()["execution"]
        record = finished(api, execution, "the flow to finish")
        assert record["status"] == "succeeded", record
        assert [s["name"] for s in record["steps"]] == ["incident", "note"]
        # The console's templates and static files come from the wheel too.
        console = httpx2.Client(base_url=base, follow_redirects=True)
        form = re.search(r'name="csrf" value="([^"]+)"', console.get("/console/login").text)
        assert form, "the sign-in form carries its CSRF token"
        signed_in = console.post("/console/login", data={"token": token, "csrf": form[1]})
        assert signed_in.status_code == 200 and execution in signed_in.text
        assert console.get("/console/static/htmx.min.js").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_every_source_package_is_listed_for_the_wheel() -> None:
    """``packages`` in pyproject.toml is explicit (tests/ and bench/ stay out): a package
    added to the source and not listed would be missing from the wheel."""
    import tomllib

    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join([ROOT, *init.parent.relative_to(REPO).parts])
        for init in REPO.rglob("__init__.py")
        if not {"tests", "bench", ".venv", "node_modules", "build"}
        & set(init.relative_to(REPO).parts)
    }
    assert sorted(found - listed) == []
