"""The PagerDuty client's transport (``component/transport.py``) against local servers:
requests and answers as httpx would send and read them, and each way a connection fails
raised as the httpx error the client's retry rules tell apart (sent or not)."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import Awaitable, Callable

import httpx2
import pytest

from pagerduty_connector.component.client import tls_context
from pagerduty_connector.component.transport import AiohttpTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serving(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


def client(**options: object) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=AiohttpTransport(verify=tls_context()), **options)  # type: ignore[arg-type]


def test_a_request_goes_as_httpx_built_it_and_the_answer_is_read_as_httpx_would() -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # kept alive: the second request comes on the same connection
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                break
            body = gzip.compress(json.dumps({"incident": {"id": "Q1"}}).encode())
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                b"Content-Encoding: gzip\r\nX-Seen: 1\r\nX-Seen: 2\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    async def scenario() -> list[httpx2.Response]:
        server, url = await serving(answer)
        async with server, client(base_url=url, headers={"User-Agent": "pdc-test"}) as http:
            first = await http.post(
                "/incidents/Q1/notes",
                params=[("include[]", "users"), ("include[]", "teams")],
                json={"note": {"content": "é"}},
                headers={"From": "oncall@example.com", "Authorization": "Token token=k"},
            )
            second = await http.get("/incidents/Q1")
            return [first, second]

    first, second = asyncio.run(scenario())
    assert first.status_code == 201 and first.reason_phrase == "Created"
    assert first.json() == {"incident": {"id": "Q1"}}  # gzip decoded by httpx
    assert first.headers.get_list("x-seen") == ["1", "2"]
    line, headers, body = seen[0]
    assert line == "POST /incidents/Q1/notes?include%5B%5D=users&include%5B%5D=teams HTTP/1.1"
    assert json.loads(body) == {"note": {"content": "é"}}
    assert headers["content-type"] == "application/json"
    assert headers["from"] == "oncall@example.com" and headers["user-agent"] == "pdc-test"
    assert headers["authorization"] == "Token token=k"
    assert seen[1][0] == "GET /incidents/Q1 HTTP/1.1" and second.status_code == 201
    assert len(seen) == 2


def test_a_refused_connection_is_a_connect_error_nothing_was_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed

    async def scenario() -> None:
        async with client() as http:
            await http.post(f"http://127.0.0.1:{port}/incidents", json={})

    with pytest.raises(httpx2.ConnectError, match=r"127\.0\.0\.1"):
        asyncio.run(scenario())


def test_a_server_that_closes_without_answering_may_have_had_the_request() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async def scenario() -> None:
        server, url = await serving(hang_up)
        async with server, client() as http:
            await http.post(f"{url}/incidents/Q1/notes", json={"note": {"content": "x"}})

    with pytest.raises(httpx2.RemoteProtocolError):
        asyncio.run(scenario())


def test_a_slow_answer_is_a_read_timeout() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(2)
        writer.close()

    async def scenario() -> None:
        server, url = await serving(slow)
        async with server, client(timeout=httpx2.Timeout(5.0, read=0.2)) as http:
            await http.get(f"{url}/incidents")

    with pytest.raises(httpx2.ReadTimeout):
        asyncio.run(scenario())


def test_a_malformed_answer_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, url = await serving(garbage)
        async with server, client() as http:
            await http.get(f"{url}/incidents")

    with pytest.raises(httpx2.RemoteProtocolError):
        asyncio.run(scenario())


def test_a_multipart_body_goes_whole() -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> httpx2.Response:
        server, url = await serving(answer)
        async with server, client() as http:
            files = [("file", ("a.txt", b"hello", "text/plain"))]
            return await http.post(f"{url}/upload", files=files, data={"k": "v"})

    answer_ = asyncio.run(scenario())
    assert answer_.status_code == 204 and answer_.content == b""
    _, headers, body = seen[0]
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="file"; filename="a.txt"' in body and b"hello" in body and b'name="k"' in body


def test_the_pagerduty_client_sends_through_it_unless_given_another() -> None:
    from pagerduty_connector.component.client import PagerDutyClient

    mine = httpx2.MockTransport(lambda request: httpx2.Response(204))
    default, given = PagerDutyClient(None), PagerDutyClient(None, transport=mine)
    assert isinstance(default._http._transport, AiohttpTransport)
    assert given._http._transport is mine


def test_http_proxy_and_no_proxy_from_the_environment_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As with httpx: requests go through ``HTTP_PROXY`` (read when the transport is
    made) unless ``NO_PROXY`` names the host."""
    lines: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append((await read_request(reader))[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async def scenario() -> tuple[httpx2.Response, BaseException | None]:
        server, url = await serving(proxy)
        async with server:
            monkeypatch.setenv("HTTP_PROXY", url)
            monkeypatch.setenv("NO_PROXY", "direct.invalid")
            async with client() as http:
                proxied = await http.get("http://api.pagerduty.invalid/incidents?limit=1")
                try:
                    await http.get("http://direct.invalid/incidents")
                except httpx2.ConnectError as exc:  # went direct: no such host
                    return proxied, exc
                return proxied, None

    proxied, direct = asyncio.run(scenario())
    assert proxied.status_code == 200 and proxied.json() == {}
    assert lines == ["GET http://api.pagerduty.invalid/incidents?limit=1 HTTP/1.1"]
    assert isinstance(direct, httpx2.ConnectError)
