"""aiohttp on both sides: a server with `tenant_middleware`, a client with `balancing_middleware`.

    pip install 'tenantlb[aiohttp]' && python examples/aiohttp_app.py

Two aiohttp servers run the same app behind `tenant_middleware` (API keys, a per-tenant rate
limit; the handler reads the tenant from ``request[TENANT_KEY]``). One `ClientSession` with
`balancing_middleware` spreads requests to the logical host ``api`` over both servers.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
from aiohttp import web

import tenantlb as tlb
from tenantlb.adapters.aiohttp import TENANT_KEY, balancing_middleware, tenant_middleware

registry = tlb.TenantRegistry(
    [tlb.Tenant("acme", api_keys=[tlb.hash_api_key("sk-acme-aio")], limits=[tlb.Rate(10, per=60)])]
)


def make_app(name: str) -> web.Application:
    gateway = tlb.Gateway(registry=registry, pools={})  # each server process has its own

    async def hello(request: web.Request) -> web.Response:
        tenant: tlb.Tenant = request[TENANT_KEY]
        return web.json_response({"server": name, "tenant": tenant.id})

    app = web.Application(middlewares=[tenant_middleware(gateway)])
    app.router.add_get("/hello", hello)
    return app


async def main() -> None:
    runners = []
    urls = []
    for name in ("server-1", "server-2"):
        runner = web.AppRunner(make_app(name))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        urls.append(f"http://127.0.0.1:{port}")
    pool = tlb.Pool(urls, balancer=tlb.RoundRobin())
    try:
        async with aiohttp.ClientSession(middlewares=[balancing_middleware({"api": pool})]) as s:
            served: Counter[str] = Counter()
            statuses: Counter[int] = Counter()
            for _ in range(24):  # each server allows acme 10 a minute: 20 in all
                async with s.get("http://api/hello", headers={"x-api-key": "sk-acme-aio"}) as r:
                    statuses[r.status] += 1
                    if r.status == 200:
                        served[(await r.json())["server"]] += 1
            print("statuses:", dict(statuses), "| served by:", dict(served))
            assert statuses == {200: 20, 429: 4}
            async with s.get("http://api/hello") as r:
                print("no key:", r.status, r.headers["content-type"], r.headers["www-authenticate"])
                assert r.status == 401
        print("in flight at the end:", pool.stats().in_flight)
        assert pool.stats().in_flight == 0
    finally:
        for runner in runners:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
