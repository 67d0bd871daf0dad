"""The house rules, read from the source with ``ast`` (imports inside functions count too).

- ``component/`` (the connector framework) never imports ``runtime/``.
- Every import of our own code goes through the one import root, ``pagerduty_connector``.
- Only the PagerDuty client (over its transport) opens HTTP connections to PagerDuty,
  plus authlib's OAuth client for PagerDuty's identity endpoints (consent and refresh),
  which are not the REST API; the http step's pool (``runtime/outbound.py``) reaches
  other services only, and never with a PagerDuty connection (its deploy check refuses
  one).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from tests.support import REPO

PACKAGES = ("component", "runtime", "connections", "triggers", "actions", "datasources")
ROOT = "pagerduty_connector"
# Names whose call opens (or builds something that opens) a network connection.
HTTP_CLIENTS = {
    "httpx2.AsyncClient",
    "httpx2.Client",
    "httpx2.AsyncHTTPTransport",
    "httpx2.HTTPTransport",
    "httpx2.get",
    "httpx2.post",
    "httpx2.request",
    "httpx2.stream",
    "httpcore2.AsyncConnectionPool",
    "httpcore2.ConnectionPool",
    "authlib.integrations.httpx_client.AsyncOAuth2Client",
    "authlib.integrations.httpx_client.OAuth2Client",
    "urllib.request.urlopen",
    "http.client.HTTPConnection",
    "http.client.HTTPSConnection",
    "socket.create_connection",
    "asyncio.open_connection",
    "aiohttp.ClientSession",
    "aiohttp.TCPConnector",
    "aiohttp.request",
    f"{ROOT}.component.transport.AiohttpTransport",
}
ALLOWED_CLIENTS = {
    "component/client.py": {"httpx2.AsyncClient", f"{ROOT}.component.transport.AiohttpTransport"},
    # The client's wire (aiohttp's pool under httpx's API): only the client makes one.
    "component/transport.py": {"aiohttp.ClientSession", "aiohttp.TCPConnector"},
    "runtime/tokens.py": {"authlib.integrations.httpx_client.AsyncOAuth2Client"},
    # The console calls the runtime's own API in process; see the test below.
    "runtime/console/api.py": {"httpx2.AsyncClient"},
    # The http step: public addresses only, its own credentials (runtime/outbound.py).
    "runtime/outbound.py": {"httpcore2.AsyncConnectionPool"},
}


def sources() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            yield str(path.relative_to(REPO)), ast.parse(path.read_text(), str(path))


def imported_modules(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def called_names(tree: ast.Module) -> set[str]:
    """Fully qualified names of every call, resolved through the module's imports."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    calls = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts: list[str] = []
            target = node.func
            while isinstance(target, ast.Attribute):
                parts.insert(0, target.attr)
                target = target.value
            if isinstance(target, ast.Name):
                head = aliases.get(target.id, target.id)
                calls.add(".".join([head, *parts]))
    return calls


def test_component_never_imports_the_runtime() -> None:
    offenders = [
        (path, module)
        for path, tree in sources()
        if path.startswith("component/")
        for module in imported_modules(tree)
        if module == f"{ROOT}.runtime" or module.startswith(f"{ROOT}.runtime.")
    ]
    assert offenders == []


def test_our_modules_are_imported_through_the_one_root() -> None:
    offenders = [
        (path, module)
        for path, tree in sources()
        for module in imported_modules(tree)
        if module.split(".")[0] in PACKAGES
    ]
    assert offenders == []


def test_only_the_client_and_the_oauth_token_exchange_open_http_connections() -> None:
    found = {
        path: clients for path, tree in sources() if (clients := called_names(tree) & HTTP_CLIENTS)
    }
    assert found == ALLOWED_CLIENTS


def test_the_consoles_client_reaches_only_the_runtime_itself() -> None:
    """Its one client has an ASGI transport onto this app: no socket, no PagerDuty."""
    tree = ast.parse((REPO / "runtime/console/api.py").read_text())
    clients = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "httpx2.AsyncClient"
    ]
    assert len(clients) == 1
    (transport,) = [k.value for k in clients[0].keywords if k.arg == "transport"]
    assigned = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == ast.unparse(transport)
    ]
    assert [ast.unparse(v) for v in assigned] == ["httpx2.ASGITransport(app=request.app)"]


def test_the_scan_sees_a_client_built_under_another_name() -> None:
    """The resolver is not a substring grep: aliases and from-imports are followed."""
    tree = ast.parse(
        "from authlib.integrations.httpx_client import AsyncOAuth2Client as O\n"
        "import httpx2 as h\n"
        "def f():\n    O(client_id='x')\n    h.AsyncClient()\n"
    )
    assert called_names(tree) & HTTP_CLIENTS == {
        "authlib.integrations.httpx_client.AsyncOAuth2Client",
        "httpx2.AsyncClient",
    }
