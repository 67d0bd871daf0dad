"""The web console: server-rendered pages (Jinja2, htmx) for builders and operators,
served by the runtime itself under ``/console`` behind the admin sign-in."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pagerduty_connector.runtime.console import views
from pagerduty_connector.runtime.console.session import ConsoleAuth

CONSOLE = Mount(
    "/console",
    routes=[
        Route("/", views.home, methods=["GET"]),
        Route("/login", views.login, methods=["GET", "POST"]),
        Route("/logout", views.logout, methods=["POST"]),
        Route("/executions", views.executions, methods=["GET"]),
        Route("/executions/rows", views.execution_rows, methods=["GET"]),
        Route("/executions/{id}", views.execution, methods=["GET"]),
        Route("/executions/{id}/{how}", views.rerun, methods=["POST"]),
        Route("/instances", views.instances, methods=["GET"]),
        Route("/instances/new", views.editor, methods=["GET", "POST"]),
        Route("/instances/{name}", views.instance, methods=["GET"]),
        Route("/instances/{name}/edit", views.editor, methods=["GET", "POST"]),
        Route("/instances/{name}/{action}", views.instance_action, methods=["POST"]),
        Route("/instances/{name}/flows/{flow}/test", views.test_run, methods=["POST"]),
        Route("/connections", views.connections, methods=["GET"]),
        Route("/connections/new", views.create_connection, methods=["POST"]),
        Route("/connections/{name}/key", views.rotate_key, methods=["POST"]),
        Route("/component", views.component, methods=["GET"]),
        Route("/component/triggers/{key}", views.trigger, methods=["GET"]),
        Route("/component/{key}", views.action, methods=["GET", "POST"]),
        Route("/choices/{key}", views.choices, methods=["GET"]),
        Mount(
            "/static",
            app=StaticFiles(packages=[("pagerduty_connector.runtime.console", "static")]),
            name="static",
        ),
    ],
    middleware=[Middleware(ConsoleAuth)],
)
