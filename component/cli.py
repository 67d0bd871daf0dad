"""``pdc``: list, describe, validate, document and run the component's steps."""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pagerduty_connector.component.catalog import catalog, find
from pagerduty_connector.component.errors import ComponentError, did_you_mean
from pagerduty_connector.component.redact import redact

# Only what every command needs is imported here; the manifest models (pydantic), the
# implementations, the client and rich are imported by the commands that use them, so
# ``pdc actions`` and ``pdc describe`` start in about the time Python takes to import
# httpx2, starlette and pydantic (bench/cold_start.py).
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from pagerduty_connector.component.manifest import Manifest


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def app() -> None:
    """PagerDuty connector: list, describe and run its actions from a terminal."""


@cache
def out() -> Console:
    """The console for results (made on first use: rich is imported only when printing)."""
    from rich.console import Console

    return Console()


@cache
def err() -> Console:
    """The console for errors and progress, on stderr."""
    from rich.console import Console

    return Console(stderr=True)


def fail(message: str, code: int = 1) -> click.exceptions.Exit:
    """Print one line on stderr and return the exit to raise."""
    err().print(f"error: {redact(message)}", markup=False, highlight=False, soft_wrap=True)
    return click.exceptions.Exit(code)


def _catalog() -> dict[str, Any]:
    try:
        return catalog()
    except ComponentError as exc:
        raise fail(str(exc)) from None


def _manifest() -> Manifest:
    """The manifest, validated and checked against the implementations, or exit 1."""
    from pagerduty_connector.component.manifest import load_manifest
    from pagerduty_connector.component.registry import check_implementations

    try:
        manifest = load_manifest()
        check_implementations(manifest)
    except ComponentError as exc:
        raise fail(str(exc)) from None
    return manifest


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    from rich.table import Table

    table = Table(title=title)
    # The first column holds keys, which a reader copies: never cut (the others fold
    # to make room on a narrow terminal or in a pipe's 80 columns).
    widest = max((len(row[0]) for row in rows), default=0)
    table.add_column(columns[0], no_wrap=True, min_width=max(widest, len(columns[0])))
    for column in columns[1:]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


@app.command()
def actions() -> None:
    """List every action, trigger and data source."""
    document = _catalog()
    request = {
        a["key"]: f"{a['request']['method']} {a['request']['path']}" if a["request"] else "(code)"
        for a in document["actions"]
    }
    out().print(
        _table(
            f"{document['label']}: {len(document['actions'])} actions",
            ("key", "label", "request"),
            [(a["key"], a["label"], request[a["key"]]) for a in document["actions"]],
        )
    )
    out().print(
        _table(
            "Triggers",
            ("key", "label", "events"),
            [(t["key"], t["label"], str(len(t["events"]))) for t in document["triggers"]],
        )
    )
    out().print(
        _table(
            "Data sources",
            ("key", "label", "picklist of"),
            [
                (d["key"], d["label"], f"GET {d['picklist']['path']}")
                for d in document["dataSources"]
            ],
        )
    )


def _example(value: Any) -> str:
    """An example as the table shows it: text as it is; JSON inline when short, else
    pointed to below the table, where it is shown whole."""
    if value is None or isinstance(value, str):
        return value or ""
    text = json.dumps(value)
    return text if len(text) <= 40 else "JSON, below"


# Lines of an action's output example shown; `pdc docs` has all of them.
OUTPUT_LINES = 60


@app.command()
@click.argument("key")
def describe(key: str) -> None:
    """Show one action, trigger or data source (KEY): its inputs, their examples and an
    example of what it returns."""
    catalog = _catalog()
    found = find(catalog, key)
    if found is None:
        keys = [i["key"] for section in _SECTIONS for i in catalog[section]]
        hint = did_you_mean(key, keys)
        raise fail(f"no action, trigger, data source or connection has the key '{key}'{hint}")
    section, item = found
    console = out()
    console.print(f"[bold]{item['label']}[/bold] ({item['key']})")
    console.print(item["description"])
    if item.get("request"):
        console.print(f"request: {item['request']['method']} {item['request']['path']}")
    if item.get("scope"):
        console.print(f"OAuth scope: {item['scope']}")
    # A step's connection is the instance's, never one of its inputs.
    inputs = [i for i in item["inputs"] if i["type"] != "connection" or section == "connections"]
    if len(inputs) < len(item["inputs"]):
        console.print("connection: the instance's (a step does not name one)")
    rows = [
        (
            i["key"],
            i["label"],
            i["type"] + (f" ({i['collection']})" if i["collection"] else ""),
            "yes" if i["required"] and i["default"] is None else "",
            "" if i["default"] is None else str(i["default"]),
            ", ".join(i["model"] or []),
            _example(i["example"]),
        )
        for i in inputs
    ]
    columns = ("key", "label", "type", "required", "default", "allowed", "example")
    console.print(_table("Inputs", columns, rows))
    for i in inputs:
        if _example(i["example"]) == "JSON, below":
            console.print(f"example of {i['key']}:", markup=False)
            console.print(json.dumps(i["example"], indent=2), markup=False, soft_wrap=True)
    if item.get("examplePayload") is not None:
        what = "trigger" if section == "triggers" else "steps.<name>"
        lines = json.dumps(item["examplePayload"], indent=2).splitlines()
        console.print(f"returns, as {what} (PagerDuty's example):", markup=False)
        shown = "\n".join(lines[:OUTPUT_LINES])
        if len(lines) > OUTPUT_LINES:
            shown += f"\n... {len(lines) - OUTPUT_LINES} more lines (pdc docs has them all)"
        console.print(shown, markup=False, soft_wrap=True)


_SECTIONS = ("actions", "dataSources", "triggers", "connections")


@app.command()
def validate() -> None:
    """Check the manifest, its implementations and the committed JSON Schema."""
    from pagerduty_connector.component.manifest import SCHEMA_FILE, packaged, render_schema

    manifest = _manifest()
    committed = packaged(SCHEMA_FILE)
    if not committed.is_file() or committed.read_text(encoding="utf-8") != render_schema():
        raise fail(f"{SCHEMA_FILE} is out of date: run `pdc schema` and commit it")
    out().print(
        f"manifest ok: {len(manifest.actions)} actions, {len(manifest.triggers)} triggers, "
        f"{len(manifest.dataSources)} data sources, {len(manifest.connections)} connections"
    )


@app.command()
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), help="Write here instead of the checkout."
)
def schema(output: Path | None) -> None:
    """Regenerate manifest.schema.json from the pydantic models (in a source checkout)."""
    from pagerduty_connector.component.manifest import SCHEMA_FILE, packaged, render_schema

    target = output or Path(str(packaged(SCHEMA_FILE)))
    # An installed package is not the source: rewriting its copy would make it disagree
    # with the wheel's record and be lost on the next install.
    if output is None and not (target.parent / "pyproject.toml").is_file():
        raise fail(
            f"{target.parent} is an installed package, not a source checkout: run "
            "`pdc schema` in a clone (pip install -e .), or write elsewhere with --output FILE"
        )
    target.write_text(render_schema(), encoding="utf-8")
    out().print(f"wrote {target}")


@app.command()
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), help="Write here instead of stdout."
)
def docs(output: Path | None) -> None:
    """Write the component reference in Markdown."""
    from pagerduty_connector.component.docs import render_markdown

    text = render_markdown(_manifest())
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


@app.command()
@click.option("--port", default=9999, show_default=True, help="Port on 127.0.0.1.")
@click.option(
    "--incidents", default=25, show_default=True, help="Incidents GET /incidents pages over."
)
def mock(port: int, incidents: int) -> None:
    """Serve a stand-in PagerDuty on 127.0.0.1 for trying the connector and runtime.

    Point PAGERDUTY_API_URL at it. It keeps an account: incidents (Q1P5 "Server is on
    fire", then the generated ones) to create, list, read, update, merge and snooze, with
    their notes and alerts; services, users and priorities; a stateful
    /webhook_subscriptions API; an unknown id is a 404. Other actions get PagerDuty's
    example answer. GET /_mock/secrets lists each subscription's signing secret by
    delivery URL, to sign deliveries as PagerDuty would. Each request is printed on one
    line; GET /_mock/requests lists them with their bodies. POST /_mock/fail with
    {"method", "path", "status", "times"} makes the next matching requests fail.
    """
    from pagerduty_connector.component.standin.server import LocalPagerDuty

    console = err()

    def echo(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    try:
        server = LocalPagerDuty(count=incidents, port=port, echo=echo, autocreate=False)
    except OSError as exc:
        raise fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    console.print(f"stand-in PagerDuty at {server.url} (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def parse_inputs(inputs_json: str | None, pairs: list[str]) -> dict[str, Any]:
    """Merge ``--inputs-json`` (text or ``@file``) and repeated ``--input name=value``."""
    values: dict[str, Any] = {}
    if inputs_json:
        text = inputs_json
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                raise fail(f"--inputs-json: cannot read {text[1:]}: {exc.strerror}") from None
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise fail(
                f"--inputs-json is not valid JSON: {exc.msg} at column {exc.colno}"
            ) from None
        if not isinstance(loaded, dict):
            raise fail("--inputs-json must be a JSON object of input values")
        values.update(loaded)
    repeated: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise fail(f"--input expects name=value, got {pair!r}")
        repeated.setdefault(name, []).append(value)
    for name, items in repeated.items():
        values[name] = items[0] if len(items) == 1 else items
    return values


async def _run(manifest: Manifest, key: str, inputs: dict[str, Any]) -> dict[str, Any]:
    # Imported here, so the commands that only read the manifest start fast.
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from pagerduty_connector.component.client import ClientSettings, PagerDutyClient
    from pagerduty_connector.component.context import StepContext
    from pagerduty_connector.component.manifest import Action, DataSource
    from pagerduty_connector.component.requester import run_step
    from pagerduty_connector.connections import ConnectionConfig

    item = manifest.runnable(key)
    connection = ConnectionConfig.from_env()
    settings = ClientSettings.from_env()
    fetches_all = isinstance(item, DataSource) or (
        isinstance(item, Action) and str(inputs.get("fetchAll", "")).lower() == "true"
    )
    show_progress = fetches_all and sys.stderr.isatty()
    async with PagerDutyClient(connection, settings) as client:
        ctx = StepContext(manifest=manifest, client=client)
        if not show_progress:
            return await run_step(ctx, key, inputs)
        with Progress(
            TextColumn(f"{key}"), BarColumn(), MofNCompleteColumn(), console=err(), transient=True
        ) as bar:
            task = bar.add_task(key, total=None)
            ctx.progress = lambda done, total: bar.update(task, completed=done, total=total)
            return await run_step(ctx, key, inputs)


@app.command()
@click.argument("key")
@click.option("--inputs-json", help="Inputs as a JSON object, or @file.json.")
@click.option(
    "--input", "-i", "input_", multiple=True, help="One input as name=value; repeat for lists."
)
def run(key: str, inputs_json: str | None, input_: tuple[str, ...]) -> None:
    """Run an action or data source (KEY) against PagerDuty and print its result as JSON.

    The connection comes from PAGERDUTY_API_TOKEN (or PAGERDUTY_OAUTH_TOKEN),
    PAGERDUTY_FROM and PAGERDUTY_REGION; PAGERDUTY_API_URL and
    PAGERDUTY_EVENTS_URL override the base URLs.
    """
    manifest = _manifest()
    try:
        manifest.runnable(key)
    except KeyError:
        hint = did_you_mean(key, manifest.runnable_keys()) or " (see `pdc actions`)"
        raise fail(f"no action or data source has the key '{key}'{hint}") from None
    values = parse_inputs(inputs_json, list(input_))
    import asyncio

    try:
        result = asyncio.run(_run(manifest, key, values))
    except ComponentError as exc:
        raise fail(str(exc).replace("\n", " ")) from None
    sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
