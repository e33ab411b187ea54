"""A 429 from the API server (a CRD's storage starting, priority and fairness) is retried
after the wait the server asks for; the request was not processed, so any method may be."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp import web

from secureai.k8s.client import ApiError, Credentials, KubeClient


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _serve(refusals: int) -> tuple[web.AppRunner, int, list[str]]:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.method)
        if len(seen) <= refusals:
            return web.json_response(
                {"kind": "Status", "message": "storage is (re)initializing"},
                status=429,
                headers={"Retry-After": "0.1"},
            )
        return web.json_response({"items": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port, seen


def test_a_429_is_retried_until_the_server_answers() -> None:
    async def run() -> tuple[Any, list[str]]:
        runner, port, seen = await _serve(refusals=2)
        try:
            async with KubeClient(Credentials(f"http://127.0.0.1:{port}", False, None, None)) as k:
                return await k.request("POST", "/apis/x", body={}), seen
        finally:
            await runner.cleanup()

    result, seen = asyncio.run(run())
    assert result == {"items": []}
    assert seen == ["POST", "POST", "POST"]


def test_a_server_that_keeps_refusing_is_an_error() -> None:
    async def run() -> None:
        runner, port, _ = await _serve(refusals=100)
        try:
            async with KubeClient(Credentials(f"http://127.0.0.1:{port}", False, None, None)) as k:
                await k.request("GET", "/api/v1/namespaces")
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except ApiError as exc:
        assert exc.status == 429
    else:
        raise AssertionError("a lasting 429 must surface as an ApiError")
