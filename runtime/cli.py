"""``pdc``: the component's commands plus ``serve``, which starts the runtime.

The component's CLI (``component/cli.py``) never imports the runtime; this module
adds the runtime's command to it and is the console script's entry point. The
runtime itself is imported only when ``serve`` runs, so the other commands start fast.
"""

from __future__ import annotations

import click

from pagerduty_connector.component.cli import app, fail
from pagerduty_connector.component.errors import ComponentError

# The event loop the runtime is served, tested and measured on, even where uvloop is
# installed (uvicorn would pick it): DBOS runs its workflows on this loop.
LOOP = "asyncio"


@app.command()
@click.option("--host", help="Interface (default PDC_HOST).")
@click.option("--port", type=int, help="Port (default PDC_PORT).")
@click.option(
    "--role",
    type=click.Choice(["all", "web", "worker"]),
    help="all: serve and run flows; web: serve only; worker: run flows only (default PDC_ROLE).",
)
@click.option(
    "--flow-workers",
    type=int,
    help="Child processes that run the flows while this one serves (default PDC_FLOW_WORKERS).",
)
def serve(host: str | None, port: int | None, role: str | None, flow_workers: int | None) -> None:
    """Start the runtime (management API, webhook intake, console) under uvicorn, or
    with ``--role worker`` a process that only runs flows."""
    from pagerduty_connector.runtime import server
    from pagerduty_connector.runtime.settings import load_settings, share_metrics
    from pagerduty_connector.runtime.worker import configure_logging, run

    configure_logging()
    overrides = {"role": role, "flow_workers": flow_workers, "host": host, "port": port}
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
        if not settings.serves:
            run(settings)
            return
        sock = server.listening_socket(settings.host, settings.port)
        if settings.flow_workers:
            share_metrics(settings)  # before the app (and its metrics) is imported
        from pagerduty_connector.runtime.app import create_app

        application = create_app(settings)
    except ComponentError as exc:
        raise fail(str(exc)) from None
    server.serve(application, settings, settings.host, settings.port, LOOP, sock)


@app.command()
def token() -> None:
    """Print the admin token the runtime started from here uses (PDC_ADMIN_TOKEN, or the
    development one in the data directory, made now if ``pdc serve`` has not yet made it)."""
    from pagerduty_connector.runtime.settings import load_settings

    try:
        settings = load_settings()
    except ComponentError as exc:
        raise fail(str(exc)) from None
    click.echo(settings.admin_token)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
