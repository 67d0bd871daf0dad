"""The README's quickstart, pasted as one block into a shell in a fresh folder.

The block runs as written (only its two ports are moved to free ones, and ``.venv/bin/``
is this environment's): it starts the stand-in and the runtime in the background, reads
the admin token straight away, waits for both, creates the connection, deploys the
example, delivers a signed webhook; the note the flow writes must then reach the
stand-in, and every command of the block must have succeeded.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from pagerduty_connector.component.standin.server import free_port
from tests.support import REPO


def quickstart_block() -> str:
    """The first ``sh`` block of the README's quickstart section."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Quickstart") :]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the quickstart has no sh block"
    return match.group(1)


@pytest.mark.skipif(not shutil.which("openssl") or not shutil.which("curl"), reason="no curl")
def test_the_quickstart_pasted_as_one_block_shows_the_note_at_the_stand_in(
    tmp_path: Path,
) -> None:
    mock_port, pdc_port = free_port(), free_port()
    block = quickstart_block()
    assert "9999" in block and "8000" in block
    script = (
        block.replace("9999", str(mock_port))
        .replace("127.0.0.1:8000", f"127.0.0.1:{pdc_port}")
        .replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    )
    # Fail on the first command that fails, as a reader would stop there.
    (tmp_path / "quickstart.sh").write_text("set -e\n" + script, encoding="utf-8")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDC_", "PAGERDUTY_"))} | {
        "PDC_PORT": str(pdc_port)
    }
    # To a file: the servers it leaves running keep a pipe open after it ends.
    transcript = tmp_path / "transcript.txt"
    with transcript.open("w") as sink:
        shell = subprocess.Popen(
            ["bash", "quickstart.sh"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its background servers are ours to stop
        )
    try:
        shell.wait(timeout=120)
        output = transcript.read_text(encoding="utf-8")
        assert shell.returncode == 0, output
        # The token was read before the runtime had necessarily written it.
        assert "No such file" not in output and "Unauthorized" not in output, output
        assert '"webhookUrls"' in output and "created subscription" in output, output
        assert '"status": "received"' in output or '"status":"received"' in output, output
        # Two notes: the signed delivery's, and the sample run's at the end of the block.
        posted: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while len(posted) < 2 and time.monotonic() < deadline:
            log = httpx2.get(f"http://127.0.0.1:{mock_port}/_mock/requests").json()["requests"]
            posted = [r for r in log if r["method"] == "POST" and r["path"].endswith("/notes")]
            time.sleep(0.2)
        assert len(posted) == 2, "the flow's notes never reached the stand-in"
        note: dict[str, Any] = posted[0]
        assert note["path"] == "/incidents/Q1P5/notes"
        assert "Investigating:" in str(note["body"])
        kept = httpx2.get(f"http://127.0.0.1:{mock_port}/incidents/Q1P5/notes").json()
        # Kept on the incident, as PagerDuty would.
        assert [n["content"] for n in kept["notes"]] == ["Investigating: Server is on fire"] * 2
        # The run about an incident the stand-in does not have fails at its first step.
        token = (tmp_path / ".pdc" / "admin-token").read_text().strip()
        api = httpx2.Client(
            base_url=f"http://127.0.0.1:{pdc_port}", headers={"Authorization": f"Bearer {token}"}
        )
        failed: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while not failed and time.monotonic() < deadline:
            listed = api.get("/api/executions").json()
            failed = [e for e in listed if e["status"] == "failed"]
            time.sleep(0.2)
        assert len(failed) == 1, listed
        record = api.get(f"/api/executions/{failed[0]['id']}").json()
        assert record["steps"][0]["name"] == "incident" and "HTTP 404" in record["error"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGTERM)
