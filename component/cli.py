"""``pdc``: list, describe, validate, document and run the component's steps."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from pagerduty_connector.component.client import ClientSettings, PagerDutyClient
from pagerduty_connector.component.context import StepContext
from pagerduty_connector.component.errors import ComponentError
from pagerduty_connector.component.manifest import (
    SCHEMA_FILE,
    Action,
    DataSource,
    Manifest,
    load_manifest,
    packaged,
    render_schema,
)
from pagerduty_connector.component.redact import redact
from pagerduty_connector.component.registry import check_implementations
from pagerduty_connector.component.requester import run_step
from pagerduty_connector.connections import ConnectionConfig

app = typer.Typer(
    help="PagerDuty connector: list, describe and run its actions from a terminal.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line on stderr and return the exit to raise."""
    err.print(f"error: {redact(message)}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _manifest() -> Manifest:
    try:
        manifest = load_manifest()
        check_implementations(manifest)
    except ComponentError as exc:
        raise fail(str(exc)) from None
    return manifest


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


@app.command()
def actions() -> None:
    """List every action, trigger and data source."""
    manifest = _manifest()
    request = {
        a.key: f"{a.request.method} {a.request.path}" if a.request else "(code)"
        for a in manifest.actions
    }
    out.print(
        _table(
            f"{manifest.label}: {len(manifest.actions)} actions",
            ("key", "label", "request"),
            [(a.key, a.label, request[a.key]) for a in manifest.actions],
        )
    )
    out.print(
        _table(
            "Triggers",
            ("key", "label", "events"),
            [(t.key, t.label, str(len(t.events))) for t in manifest.triggers],
        )
    )
    out.print(
        _table(
            "Data sources",
            ("key", "label", "picklist of"),
            [(d.key, d.label, f"GET {d.picklist.path}") for d in manifest.dataSources],
        )
    )


@app.command()
def describe(
    key: Annotated[str, typer.Argument(help="Action, trigger or data source key.")],
) -> None:
    """Show one action, trigger or data source with its inputs."""
    manifest = _manifest()
    item = manifest.find(key)
    if item is None:
        raise fail(f"no action, trigger, data source or connection has the key '{key}'")
    out.print(f"[bold]{item.label}[/bold] ({item.key})")
    out.print(item.description)
    if isinstance(item, Action) and item.request:
        out.print(f"request: {item.request.method} {item.request.path}")
    if getattr(item, "scope", None):
        out.print(f"OAuth scope: {item.scope}")  # type: ignore[union-attr]
    rows = [
        (
            i.key,
            i.label,
            i.type.value + (f" ({i.collection})" if i.collection else ""),
            "yes" if i.required else "",
            "" if i.default is None else str(i.default),
            ", ".join(i.model or []),
            i.example if isinstance(i.example, str) else "" if i.example is None else "(JSON)",
        )
        for i in item.inputs
    ]
    columns = ("key", "label", "type", "required", "default", "allowed", "example")
    out.print(_table("Inputs", columns, rows))


@app.command()
def validate() -> None:
    """Check the manifest, its implementations and the committed JSON Schema."""
    manifest = _manifest()
    committed = packaged(SCHEMA_FILE)
    if not committed.is_file() or committed.read_text(encoding="utf-8") != render_schema():
        raise fail(f"{SCHEMA_FILE} is out of date: run `pdc schema` and commit it")
    out.print(
        f"manifest ok: {len(manifest.actions)} actions, {len(manifest.triggers)} triggers, "
        f"{len(manifest.dataSources)} data sources, {len(manifest.connections)} connections"
    )


@app.command()
def schema() -> None:
    """Regenerate manifest.schema.json from the pydantic models."""
    target = Path(str(packaged(SCHEMA_FILE)))
    target.write_text(render_schema(), encoding="utf-8")
    out.print(f"wrote {target}")


@app.command()
def docs(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Write the component reference in Markdown."""
    from pagerduty_connector.component.docs import render_markdown

    text = render_markdown(_manifest())
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


@app.command()
def mock(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 9999,
    incidents: Annotated[
        int, typer.Option(help="How many incidents GET /incidents pages over.")
    ] = 25,
) -> None:
    """Serve a stand-in PagerDuty on 127.0.0.1 for trying the connector and runtime.

    Point PAGERDUTY_API_URL at it. It answers incidents, notes, /abilities and a
    stateful /webhook_subscriptions API. GET /_mock/secrets lists each subscription's
    signing secret by delivery URL, to sign deliveries as PagerDuty would.
    """
    from pagerduty_connector.component.standin.server import LocalPagerDuty

    try:
        server = LocalPagerDuty(count=incidents, port=port)
    except OSError as exc:
        raise fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    err.print(f"stand-in PagerDuty at {server.url} (Ctrl-C stops it)")
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
            TextColumn(f"{key}"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
        ) as bar:
            task = bar.add_task(key, total=None)
            ctx.progress = lambda done, total: bar.update(task, completed=done, total=total)
            return await run_step(ctx, key, inputs)


@app.command()
def run(
    key: Annotated[str, typer.Argument(help="Action or data source key.")],
    inputs_json: Annotated[
        str | None,
        typer.Option("--inputs-json", help="Inputs as a JSON object, or @file.json."),
    ] = None,
    input_: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="One input as name=value; repeat for lists."),
    ] = None,
) -> None:
    """Run an action or data source against PagerDuty and print its result as JSON.

    The connection comes from PAGERDUTY_API_TOKEN (or PAGERDUTY_OAUTH_TOKEN),
    PAGERDUTY_FROM and PAGERDUTY_REGION; PAGERDUTY_API_URL and
    PAGERDUTY_EVENTS_URL override the base URLs.
    """
    manifest = _manifest()
    try:
        manifest.runnable(key)
    except KeyError:
        raise fail(f"no action or data source has the key '{key}' (see `pdc actions`)") from None
    values = parse_inputs(inputs_json, input_ or [])
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
