"""ProxyApp's cleanup survives cancellation: asyncio task.cancel() (wait_for) and trio cancel scopes."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from tenantlb.adapters.asgi import ProxyApp
from tests.adapters.conftest import KEY, in_flight, make_gateway
from tests.support.backends import BackendProcess


def scope_for(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"proxy.test"), (b"x-api-key", KEY.encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


async def cancel_after(seconds: float, coro: Any) -> bool:
    """Cancel *coro* the way each library does it: asyncio task.cancel() via wait_for, trio a
    scope. Returns whether it was cancelled."""
    try:
        asyncio.current_task()
    except RuntimeError:
        with anyio.move_on_after(seconds) as scope:
            await coro
        return scope.cancelled_caught
    try:
        await asyncio.wait_for(coro, seconds)
    except TimeoutError:
        return True
    return False


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/hang", "/bytes/1000000000"], ids=["waiting", "mid-body"])
async def test_cancelled_request_releases_lease_slot_and_connection(
    backends: list[BackendProcess], path: str
) -> None:
    """Cancelled while waiting for the upstream or while streaming its body, a request leaks nothing."""
    await check_cancelled_request(backends, path, "httpcore")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [pytest.param(("asyncio", {}), id="asyncio")])
@pytest.mark.parametrize("client", ["aiohttp", "httptools"])
@pytest.mark.parametrize("path", ["/hang", "/bytes/1000000000"], ids=["waiting", "mid-body"])
async def test_cancelled_request_releases_everything_with_asyncio_clients(
    backends: list[BackendProcess], path: str, client: str
) -> None:
    """The same with the aiohttp and httptools upstream clients (asyncio only, both)."""
    await check_cancelled_request(backends, path, client)


async def check_cancelled_request(backends: list[BackendProcess], path: str, client: str) -> None:
    gateway = make_gateway([backends[0].url], max_concurrency=1)
    proxy = ProxyApp(gateway, client=client)  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        await anyio.sleep(0.001)  # a slow client: the body is still streaming when cancelled

    try:
        assert await cancel_after(0.5, proxy(scope_for(path), receive, send))
        assert in_flight(gateway) == 0
        assert proxy.stats().active == 0
        if path != "/hang":
            assert sent[0]["status"] == 200  # it was cancelled mid-body, as intended
        # The slot is free: another request is admitted and served.
        sent.clear()
        requested = False
        assert not await cancel_after(10.0, proxy(scope_for("/"), receive, send))
        assert sent[0]["status"] == 200
    finally:
        await proxy.aclose()
