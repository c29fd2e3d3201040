"""A standalone gateway from a TOML file: `ProxyApp` under uvicorn in front of two backends.

    pip install 'tenantlb[asgi,httpx]' && python examples/gateway_proxy.py

Loads examples/gateway_proxy.toml (one pool with health checks and outlier detection, one tenant
with a key, a rate limit and a concurrency cap), starts the two backends it names, serves the
gateway, and sends requests through it: admitted ones are balanced over both backends, the
over-limit ones get 429 with problem+json, a wrong key gets 401.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
from _serve import free_port, serving

import tenantlb as tlb
from tenantlb.adapters.asgi import ProxyApp

CONFIG = Path(__file__).with_name("gateway_proxy.toml")


def backend(name: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = name.encode()
        headers = [(b"content-length", str(len(body)).encode()), (b"x-backend", body)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def main() -> None:
    gateway = tlb.load_config(CONFIG)
    pool = gateway.pools["api"]
    urls = [e.url for e in pool.endpoints]
    async with anyio.create_task_group():
        ports = [int(url.rsplit(":", 1)[1]) for url in urls]
        async with (
            serving(backend("backend-1"), ports[0]),
            serving(backend("backend-2"), ports[1]),
            gateway,  # runs the health checker from the file
            serving(ProxyApp(gateway), free_port()) as gateway_url,
            httpx.AsyncClient(base_url=gateway_url) as client,
        ):
            statuses: Counter[int] = Counter()
            served: Counter[str] = Counter()
            key = {"x-api-key": "sk-acme-proxy-example"}
            for _ in range(30):  # 20 a minute are allowed
                response = await client.get("/v1/items", headers=key)
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    served[response.headers["x-backend"]] += 1
            print("statuses:", dict(statuses), "| served by:", dict(served))
            assert statuses[200] == 20
            assert statuses[429] == 10
            assert set(served) == {"backend-1", "backend-2"}
            wrong = await client.get("/v1/items", headers={"x-api-key": "nope"})
            print("wrong key:", wrong.status_code, wrong.headers["content-type"])
            assert wrong.status_code == 401
        print("in flight at the end:", pool.stats().in_flight)


if __name__ == "__main__":
    anyio.run(main)
