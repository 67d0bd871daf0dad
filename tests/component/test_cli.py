"""``pdc`` from a terminal: list, describe, validate, docs, and run."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import respx
from click.testing import CliRunner

from pagerduty_connector.component.cli import app
from pagerduty_connector.component.manifest import Manifest, load_manifest
from pagerduty_connector.component.standin.server import serve
from tests.conftest import API_KEY, REST
from tests.support.openapi import example_response, validate_request

ENV = {
    "PAGERDUTY_API_TOKEN": API_KEY,
    "PAGERDUTY_FROM": "cli@example.com",
    "PAGERDUTY_REGION": "us",
}
INCIDENT = {"incident": {"id": "PT4KHLK", "title": "Disk full"}}


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def test_actions_lists_everything(cli: CliRunner, manifest: Manifest) -> None:
    result = cli.invoke(app, ["actions"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for item in (*manifest.actions, *manifest.triggers, *manifest.dataSources):
        assert item.key in result.output


@pytest.mark.parametrize("columns", ["80", "60"])
def test_keys_are_never_cut_on_a_narrow_terminal(
    cli: CliRunner, manifest: Manifest, columns: str
) -> None:
    """At 80 columns (a pipe's width) keys were folded mid-word
    (``createWebhookSubscripti`` / ``on``): a key must stay whole on its line."""
    listed = cli.invoke(app, ["actions"], env={"COLUMNS": columns}).output
    cells = {cell.strip() for line in listed.splitlines() for cell in line.split("│")}
    for item in (*manifest.actions, *manifest.triggers, *manifest.dataSources):
        assert item.key in cells, item.key
    described = cli.invoke(app, ["describe", "createWebhookSubscription"], env={"COLUMNS": columns})
    cells = {cell.strip() for line in described.output.splitlines() for cell in line.split("│")}
    assert {"from", "webhookSubscription"} <= cells


def test_describe_shows_inputs(cli: CliRunner) -> None:
    result = cli.invoke(app, ["describe", "createIncidentNote"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "POST /incidents/{id}/notes" in result.output
    for key in ("id", "note", "from"):
        assert f"│ {key} " in result.output
    missing = cli.invoke(app, ["describe", "nope"])
    assert missing.exit_code == 1 and "no action, trigger" in missing.stderr
    near = cli.invoke(app, ["describe", "createIncidentNot"])
    assert "(did you mean 'createIncidentNote'?)" in near.stderr


def test_describe_leaves_out_the_connection_and_shows_real_json(cli: CliRunner) -> None:
    """A step names no connection (the instance's is used); JSON examples and what the
    action returns are shown as JSON that parses, not as "(JSON)"."""
    result = cli.invoke(app, ["describe", "createIncidentNote"], env={"COLUMNS": "200"})
    assert "│ connection " not in result.output and "(JSON)" not in result.output
    assert "connection: the instance's" in result.output
    example = result.output.split("example of note:\n", 1)[1].split("returns, as")[0]
    assert json.loads(example) == {"note": "Firefighters are on the scene."}
    returned = result.output.split("returns, as steps.<name> (PagerDuty's example):\n", 1)[1]
    assert json.loads(returned)["data"]["note"]["content"] == "Firefighters are on the scene."
    longer = cli.invoke(app, ["describe", "getIncident"], env={"COLUMNS": "200"})
    assert "more lines (pdc docs has them all)" in longer.output


def test_run_suggests_the_nearest_key(cli: CliRunner) -> None:
    for typed in ("getIncidnet", "getincident"):
        result = cli.invoke(app, ["run", typed, "-i", "id=Q1"])
        assert result.exit_code == 1
        assert f"no action or data source has the key '{typed}'" in result.stderr
        assert "(did you mean 'getIncident'?)" in result.stderr
    far = cli.invoke(app, ["run", "zzzzzz"])
    assert "(see `pdc actions`)" in far.stderr


def test_validate_and_docs(cli: CliRunner, manifest: Manifest, tmp_path: Path) -> None:
    result = cli.invoke(app, ["validate"])
    assert result.exit_code == 0 and "manifest ok: 54 actions" in result.output
    target = tmp_path / "reference.md"
    assert cli.invoke(app, ["docs", "--output", str(target)]).exit_code == 0
    text = target.read_text()
    for action in manifest.actions:
        assert f"(`{action.key}`)" in text


def test_run_prints_json(cli: CliRunner) -> None:
    with respx.mock(assert_all_mocked=True) as pd:
        route = pd.get(f"{REST}/incidents/PT4KHLK").respond(json=INCIDENT)
        result = cli.invoke(app, ["run", "getIncident", "--input", "id=PT4KHLK"], env=ENV)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"data": INCIDENT}
    assert route.calls.last.request.headers["From"] == "cli@example.com"


def test_run_reads_inputs_from_a_file_and_repeats_list_inputs(
    cli: CliRunner, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"limit": "5"}))
    with respx.mock(assert_all_mocked=True) as pd:
        route = pd.get(f"{REST}/incidents").respond(json={"incidents": []})
        result = cli.invoke(
            app,
            [
                "run",
                "listIncidents",
                "--inputs-json",
                f"@{inputs}",
                "-i",
                "statuses=triggered",
                "-i",
                "statuses=acknowledged",
            ],
            env=ENV,
        )
    assert result.exit_code == 0, result.output
    assert list(route.calls.last.request.url.params.multi_items()) == [
        ("limit", "5"),
        ("statuses[]", "triggered"),
        ("statuses[]", "acknowledged"),
    ]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "getIncident"], ENV, "error: getIncident: input 'id': is required"),
        (["run", "nope"], ENV, "error: no action or data source has the key 'nope'"),
        (
            ["run", "getIncident", "--inputs-json", "{"],
            ENV,
            "error: --inputs-json is not valid JSON",
        ),
        (["run", "getIncident", "-i", "id"], ENV, "error: --input expects name=value"),
        (["run", "getIncident", "-i", "id=P1"], {}, "error: no PagerDuty credentials"),
    ],
)
def test_run_failures_are_one_line_on_stderr(
    cli: CliRunner, args: list[str], env: dict[str, str], message: str
) -> None:
    clean_env = {k: "" for k in ENV} | env
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as pd:
        catch_all = pd.route().respond(200, json={})
        result = cli.invoke(app, args, env=clean_env)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not catch_all.called


def test_run_reports_pagerduty_errors_without_the_token(cli: CliRunner) -> None:
    with respx.mock(assert_all_mocked=True) as pd:
        pd.get(f"{REST}/incidents/P1").respond(404, json={"error": {"message": "Not Found"}})
        result = cli.invoke(app, ["run", "getIncident", "-i", "id=P1"], env=ENV)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: GET /incidents/P1: HTTP 404: Not Found"
    assert API_KEY not in result.output + result.stderr


@pytest.fixture
def local_api() -> Iterator[str]:
    """The benchmark's PagerDuty-like list server, in its own process on 127.0.0.1."""
    queue: Any = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(queue, 150, 0.0), daemon=True
    )
    server.start()
    try:
        yield f"http://127.0.0.1:{queue.get(timeout=60)}"
    finally:
        server.terminate()
        server.join()


def test_pdc_process_against_a_local_server(local_api: str) -> None:
    env = {**os.environ, **ENV, "PAGERDUTY_API_URL": local_api}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pagerduty_connector.runtime.cli",
            "run",
            "listIncidents",
            "-i",
            "fetchAll=true",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["data"]["incidents"]
    assert [i["id"] for i in listed] == [f"Q{n:012d}" for n in range(150)]


def _answer(request: httpx2.Request) -> httpx2.Response:
    """PagerDuty's documented example answer for any REST or Events request."""
    if request.url.host.startswith("events."):
        return httpx2.Response(202, json={"status": "success", "message": "Event processed"})
    status, body = example_response(request.method, request.url.path)
    if isinstance(body, dict) and "more" in body:
        body = {**body, "more": False}  # one page: the example is not a real list
    return httpx2.Response(status, json=body) if body is not None else httpx2.Response(status)


def _example_inputs(key: str, manifest: Manifest) -> dict[str, Any]:
    item = manifest.runnable(key)
    values = {i.key: i.example for i in item.inputs if i.example is not None}
    values.pop("connection", None)
    if key == "rawRequest":  # its examples show alternatives: a JSON body or a form
        for form_input in ("formData", "fileData", "fileDataFileNames"):
            values.pop(form_input)
    return values


RUNNABLE = [
    *(a.key for a in load_manifest().actions),
    *(d.key for d in load_manifest().dataSources),
]


@pytest.mark.parametrize("key", RUNNABLE)
def test_pdc_runs_every_action_and_data_source_with_its_examples(
    key: str, cli: CliRunner, manifest: Manifest
) -> None:
    inputs = json.dumps(_example_inputs(key, manifest))
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as pd:
        pd.route().mock(side_effect=_answer)
        result = cli.invoke(app, ["run", key, "--inputs-json", inputs], env=ENV)
        calls = list(pd.calls)
    assert result.exit_code == 0, result.stderr
    assert "data" in json.loads(result.stdout) or "result" in json.loads(result.stdout)
    assert calls
    if key != "rawRequest":  # the others must be valid against the official spec
        for call in calls:
            validate_request(call.request)
