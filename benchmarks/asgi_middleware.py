"""TenantMiddleware's cost per request, in-process: key auth + one GCRA limit, over a bare ASGI app.

Measures, in one run and one event loop, microseconds per request for:

- a bare ASGI app (the baseline), and ``TenantMiddleware(app)`` around it: the difference is the
  middleware's overhead (target: <= 10 us a request);
- a Starlette app, the same app behind slowapi's ``SlowAPIMiddleware`` (Starlette/FastAPI's usual
  rate limiter) with the same limit keyed by the API key header, and behind ``TenantMiddleware``.

Each request builds its scope, runs the app and collects its messages, as a server would (the
server's own HTTP parsing is left out). Thread CPU time (steadier than wall time on a shared
machine), best of several interleaved rounds.

Run: python benchmarks/asgi_middleware.py [--requests N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from _report import emit
from slowapi import Limiter
from slowapi.middleware import SlowAPIMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tenantlb as tlb
from tenantlb.adapters.asgi import TenantMiddleware

KEY = "sk-bench-0123456789abcdef"
LIMIT = 1_000_000_000  # requests per second: never reached, every request is allowed and counted


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def gateway() -> tlb.Gateway:
    tenant = tlb.Tenant(
        "bench", api_keys=[tlb.hash_api_key(KEY)], limits=[tlb.Rate(LIMIT, per=1.0)]
    )
    return tlb.Gateway(registry=tlb.TenantRegistry([tenant]), pools={})


def starlette_app() -> Starlette:
    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/v1/chat", home)])


def slowapi_app() -> Any:
    app = starlette_app()
    limiter = Limiter(
        key_func=lambda request: request.headers.get("x-api-key", ""),
        default_limits=[f"{LIMIT}/second"],
    )
    app.state.limiter = limiter
    app.add_middleware(SlowAPIMiddleware)
    return app


def tenantlb_starlette_app() -> Any:
    app = starlette_app()
    app.add_middleware(TenantMiddleware, gateway=gateway())
    return app


def scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/chat",
        "raw_path": b"/v1/chat",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"api.example"),
            (b"user-agent", b"bench/1.0"),
            (b"accept", b"*/*"),
            (b"x-api-key", KEY.encode()),
        ],
        "client": ("203.0.113.9", 50000),
        "server": ("10.0.0.1", 8000),
        "state": {},
    }


async def run(app: Any, n: int) -> float:
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    statuses = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    start = time.thread_time()
    for _ in range(n):
        await app(scope(), receive, send)
    elapsed = time.thread_time() - start
    assert set(statuses) == {200}, set(statuses)
    return elapsed / n * 1e6


async def admit_only(n: int) -> float:
    """The core alone: build the RequestInfo and admit (lease=False), as the middleware does."""
    gw = gateway()
    start = time.thread_time()
    for _ in range(n):
        sc = scope()
        async with gw.admit(
            gw.request(sc["method"], sc["path"], sc["headers"], client=sc["client"]), lease=False
        ) as ticket:
            ticket.record(status=200)
    return (time.thread_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    apps: dict[str, Callable[[], Any]] = {
        "bare ASGI app": lambda: bare,
        "TenantMiddleware(bare)": lambda: TenantMiddleware(bare, gateway=gateway()),
        "Starlette app": starlette_app,
        "Starlette + slowapi": slowapi_app,
        "Starlette + TenantMiddleware": tenantlb_starlette_app,
    }
    built = {name: make() for name, make in apps.items()}
    best = dict.fromkeys(built, float("inf"))
    best["core: gateway.admit(lease=False)"] = float("inf")

    async def measure() -> None:
        for app in built.values():  # warm up: imports, caches, first limiter keys
            await run(app, 200)
        for _ in range(args.rounds):
            for name, app in built.items():
                best[name] = min(best[name], await run(app, args.requests))
            core = "core: gateway.admit(lease=False)"
            best[core] = min(best[core], await admit_only(args.requests))

    asyncio.run(measure())
    print(
        f"ASGI middleware, in-process, best of {args.rounds} rounds x {args.requests} requests (us/request)"
    )
    for name, us in best.items():
        print(f"  {name:32s} {us:8.2f}")
        emit(name, us, "us", better="lower")
    overhead = best["TenantMiddleware(bare)"] - best["bare ASGI app"]
    print(f"TenantMiddleware overhead over a bare app: {overhead:.2f} us/request (target <= 10)")
    core = best["core: gateway.admit(lease=False)"]
    print(f"  of which the core admission {core:.2f} us, the ASGI layer {overhead - core:.2f} us")
    emit("TenantMiddleware overhead over a bare app", overhead, "us", better="lower")
    emit("of which the ASGI layer", overhead - core, "us", better="lower")
    star = best["Starlette app"]
    slow = best["Starlette + slowapi"] - star
    ours = best["Starlette + TenantMiddleware"] - star
    emit("slowapi / TenantMiddleware, added to Starlette", slow / ours, "x", better="higher")
    print(
        f"added to Starlette: slowapi {slow:.2f} us, TenantMiddleware {ours:.2f} us "
        f"({slow / ours:.1f}x less for TenantMiddleware, which also authenticates the key)"
    )


if __name__ == "__main__":
    main()
