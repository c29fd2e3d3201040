"""TenantMiddleware (ASGI: FastAPI/Starlette under uvicorn and hypercorn) and tenant_middleware
(aiohttp) in front of a real app: the same admissions, refusals and headers through both."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from aiohttp import web
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

import tenantlb as tlb
from tenantlb.adapters.aiohttp import TENANT_KEY, tenant_middleware
from tenantlb.adapters.asgi import TenantMiddleware
from tests.adapters.conftest import KEY, OFF_KEY, OTHER_KEY, eventually
from tests.support.servers import serve

CONFIG: dict[str, Any] = {
    "gateway": {"max_header_size": 4096},
    "pools": {"p": {"endpoints": ["http://127.0.0.1:9"]}},
    "tenants": [
        {
            "id": "acme",
            "api_keys": [tlb.hash_api_key(KEY)],
            "limits": [{"limit": 3, "per": 60.0}],
            "max_concurrency": 1,
            "max_body_size": 1000,
        },
        {"id": "other", "api_keys": [tlb.hash_api_key(OTHER_KEY)]},
        {"id": "off", "api_keys": [tlb.hash_api_key(OFF_KEY)], "enabled": False},
    ],
}


def fastapi_app(gateway: tlb.Gateway, release: threading.Event) -> Any:
    api = FastAPI()

    @api.get("/whoami")
    async def whoami(request: Request) -> dict[str, str]:
        return {"tenant": request.state.tenant.id}

    @api.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @api.get("/teapot")
    async def teapot() -> JSONResponse:
        return JSONResponse({"tea": True}, status_code=418)

    @api.get("/hold")
    async def hold(request: Request) -> dict[str, str]:
        while not release.is_set():  # noqa: ASYNC110 (a threading.Event set by the test thread)
            await anyio.sleep(0.01)
        return {"tenant": request.state.tenant.id}

    @api.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.state.tenant.id)
        await websocket.close()

    api.add_middleware(TenantMiddleware, gateway=gateway)
    return api


def aiohttp_app(gateway: tlb.Gateway, release: threading.Event) -> web.Application:
    async def whoami(request: web.Request) -> web.Response:
        return web.json_response({"tenant": request[TENANT_KEY].id})

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"size": len(await request.read())})

    async def teapot(request: web.Request) -> web.Response:
        return web.json_response({"tea": True}, status=418)

    async def hold(request: web.Request) -> web.Response:
        while not release.is_set():  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return web.json_response({"tenant": request[TENANT_KEY].id})

    app = web.Application(middlewares=[tenant_middleware(gateway)])
    app.router.add_get("/whoami", whoami)
    app.router.add_post("/echo", echo)
    app.router.add_get("/teapot", teapot)
    app.router.add_get("/hold", hold)
    return app


SERVERS: dict[str, Callable[[tlb.Gateway, threading.Event], Any]] = {
    "uvicorn": fastapi_app,
    "hypercorn-trio": fastapi_app,
    "aiohttp": aiohttp_app,
}


@pytest.fixture(params=list(SERVERS))
def server(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def running(server: str) -> Iterator[tuple[str, tlb.Gateway, threading.Event]]:
    """The app behind the middleware, served for real; yields (url, gateway, release-event)."""
    gateway = tlb.Gateway.from_config(CONFIG)
    release = threading.Event()
    with serve(SERVERS[server](gateway, release), server) as url:
        yield url, gateway, release
        release.set()


def chunks(n: int) -> Iterator[bytes]:
    for _ in range(n):
        yield b"c" * 100


# Each step: (method, path, headers, body) -- the same sequence through every server.
SCENARIO: list[tuple[str, str, dict[str, str], Any]] = [
    ("GET", "/whoami", {}, None),  # 401 missing
    ("GET", "/whoami", {"x-api-key": "sk-wrong-0123456789abcdef"}, None),  # 401 wrong
    ("GET", "/whoami", {"authorization": "Bearer nope nope"}, None),  # 401 malformed
    ("GET", "/whoami", {"x-api-key": OFF_KEY}, None),  # 403 disabled
    ("GET", "/whoami", {"x-api-key": KEY, "x-pad": "p" * 5000}, None),  # 431
    ("POST", "/echo", {"x-api-key": KEY, "content-length": "5000"}, b"x" * 5000),  # 413 declared
    ("GET", "/whoami", {"x-api-key": KEY}, None),  # 200, 1 of 3
    ("GET", "/teapot", {"x-api-key": KEY}, None),  # 418 from the app, 2 of 3
    ("POST", "/echo", {"x-api-key": KEY}, b"x" * 10),  # 200, 3 of 3
    ("GET", "/whoami", {"x-api-key": KEY}, None),  # 429
    ("GET", "/whoami", {"x-api-key": OTHER_KEY}, None),  # 200, no limits
]


def summary(response: httpx.Response) -> tuple[Any, ...]:
    """What must be identical across adapters: status, body, and the policy headers."""
    headers = response.headers
    ratelimit = re.sub(r";t=\d+", "", headers.get("ratelimit", ""))
    try:
        body = response.json()
    except ValueError:
        body = ("not json", response.status_code, response.text[:300])
    if isinstance(body, dict) and "retry_after" in body:
        # Seconds left on the real clock: a loaded machine can take a second longer through
        # one server than another (the same reason `;t=` is dropped above).
        body["retry_after"] = body["retry_after"] > 0
    return (
        response.status_code,
        headers.get("content-type", "").split(";")[0],
        body,
        "retry-after" in headers,
        headers.get("www-authenticate"),
        headers.get("ratelimit-policy"),
        ratelimit,
    )


def run_scenario(url: str) -> list[tuple[Any, ...]]:
    out = []
    for method, path, headers, body in SCENARIO:
        # A connection per step: after a refusal with an unread body a server may close it.
        with httpx.Client(base_url=url) as client:
            out.append(summary(client.request(method, path, headers=headers, content=body)))
    return out


def test_identical_decisions_through_asgi_and_aiohttp() -> None:
    """The same config and requests give the same statuses, bodies and headers through every adapter."""
    results = {}
    for name, build in SERVERS.items():
        gateway = tlb.Gateway.from_config(CONFIG)
        with serve(build(gateway, threading.Event()), name) as url:
            results[name] = run_scenario(url)
    statuses = [r[0] for r in results["uvicorn"]]
    assert statuses == [401, 401, 401, 403, 431, 413, 200, 418, 200, 429, 200]
    assert results["uvicorn"] == results["hypercorn-trio"] == results["aiohttp"]
    refusals = [r for r in results["uvicorn"] if r[0] >= 400 and r[0] != 418]
    for status, content_type, body, *_ in refusals:
        assert content_type == "application/problem+json"
        assert set(body) >= {"type", "title", "status", "detail"}
        assert body["status"] == status
        assert KEY not in str(body)
        assert OFF_KEY not in str(body)
    limited = results["uvicorn"][9]
    assert limited[3]  # Retry-After on 429
    assert limited[5]
    assert limited[6]
    assert all(r[4] for r in results["uvicorn"][:3])  # WWW-Authenticate on every 401
    assert results["uvicorn"][6][5]  # RateLimit headers on the app's own answers too


def test_tenant_in_request_state_and_ratelimit_headers_on_the_apps_answer(
    running: tuple[str, tlb.Gateway, threading.Event],
) -> None:
    """The app sees its tenant (request.state.tenant / request["tenant"]); its answer carries RateLimit headers."""
    url, _, _ = running
    response = httpx.get(url + "/whoami", headers={"x-api-key": KEY})
    assert response.json() == {"tenant": "acme"}
    assert response.headers["ratelimit-policy"] == '"3-per-60s";q=3;w=60'
    assert response.headers["ratelimit"].startswith('"3-per-60s";r=2')
    assert httpx.get(url + "/whoami", headers={"x-api-key": OTHER_KEY}).json() == {
        "tenant": "other"
    }


def test_over_capacity_is_503_with_retry_after_and_the_slot_returns(
    running: tuple[str, tlb.Gateway, threading.Event],
) -> None:
    """A second request while acme's one slot is held gets 503 with Retry-After; after it, acme is served."""
    url, gateway, release = running
    held: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: held.append(httpx.get(url + "/hold", headers={"x-api-key": KEY}, timeout=30))
    )
    thread.start()
    try:
        # Wait for the slot through the gateway's stats, not by polling as acme: each poll would
        # spend acme's 3-a-minute quota, and a slow server start turned the 503 into a 429.
        eventually(
            lambda: (
                "acme" in gateway.stats().by_tenant
                and gateway.stats().by_tenant["acme"].in_flight == 1
            )
        )
        assert httpx.get(url + "/whoami", headers={"x-api-key": KEY}).status_code == 503
        busy = httpx.get(url + "/whoami", headers={"x-api-key": OTHER_KEY})
        assert busy.status_code == 200  # other tenants are not affected
    finally:
        release.set()
        thread.join(timeout=30)
    assert held[0].json() == {"tenant": "acme"}
    eventually(
        lambda: httpx.get(url + "/whoami", headers={"x-api-key": KEY}).status_code in (200, 429)
    )


def test_a_chunked_body_over_the_tenant_limit_is_413(
    running: tuple[str, tlb.Gateway, threading.Event],
) -> None:
    """A chunked body growing past acme's 1000 bytes is cut off with 413; the slot comes back."""
    url, _, _ = running
    response = httpx.post(url + "/echo", headers={"x-api-key": KEY}, content=chunks(30))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    ok = httpx.post(url + "/echo", headers={"x-api-key": KEY}, content=chunks(5))
    assert ok.json() == {"size": 500}


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn-trio"])
def test_websockets_are_admitted_at_connect(server: str) -> None:
    """An admitted websocket sees its tenant; a refused one is denied at the handshake."""
    from websockets.exceptions import ConnectionClosedOK, InvalidStatus
    from websockets.sync.client import connect

    gateway = tlb.Gateway.from_config(CONFIG)
    with serve(fastapi_app(gateway, threading.Event()), server) as url:
        ws_url = url.replace("http://", "ws://") + "/ws"
        with connect(ws_url, additional_headers={"x-api-key": OTHER_KEY}) as ws:
            assert ws.recv() == "other"
            # Wait for the app's close before ours: when both sides close at once, hypercorn's trio
            # worker sends two frames on one stream and dies (BusyResourceError, a hypercorn race
            # that needs no middleware: 8 of 200 bare FastAPI servers), refusing the next connect.
            with pytest.raises(ConnectionClosedOK):
                ws.recv()
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url, additional_headers={"x-api-key": "sk-wrong-0123456789abcdef"})
        assert refused.value.response.status_code in (401, 403)


def test_lifespan_passes_through() -> None:
    """The app's own lifespan runs under the middleware."""
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    gateway = tlb.Gateway.from_config(CONFIG)
    with serve(TenantMiddleware(app, gateway=gateway), "uvicorn"):
        pass
    assert events == ["lifespan.startup", "lifespan.shutdown"]
