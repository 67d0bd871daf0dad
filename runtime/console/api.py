"""The console is a client of the runtime's own API: every read and change goes through
the same handlers, validation and error answers as ``/api``, in process (ASGI), with the
admin token, so the console can never do what the API would refuse."""

from __future__ import annotations

from typing import Any

import httpx2
from starlette.requests import Request


class ApiError(Exception):
    """An error answer of the API: its status, type, message and details."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.kind = str(error.get("type", "Error"))
        self.message = str(error.get("message", body))
        self.details = error
        super().__init__(f"{status} {self.kind}: {self.message}")


async def call(request: Request, method: str, path: str, **kwargs: Any) -> Any:
    """Call ``/api{path}`` of this app; its JSON answer, or ``ApiError``."""
    settings = request.app.state.engine.settings
    transport = httpx2.ASGITransport(app=request.app)
    headers = {"Authorization": f"Bearer {settings.admin_token}"}
    async with httpx2.AsyncClient(
        transport=transport, base_url="http://console", headers=headers, timeout=60
    ) as client:
        answer = await client.request(method, f"/api{path}", **kwargs)
    body = answer.json() if answer.content else None
    if answer.status_code >= 400:
        raise ApiError(answer.status_code, body)
    return body
