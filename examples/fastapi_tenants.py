"""FastAPI behind `TenantMiddleware`: API keys, per-tenant limits, `request.state.tenant`.

    pip install 'tenantlb[asgi]' fastapi && python examples/fastapi_tenants.py

The app serves the request itself (no upstream pool): the middleware authenticates the tenant,
applies its rate limit and concurrency cap, hands the tenant to the route in
``request.state.tenant``, adds the RateLimit headers to the response, and answers refusals with
RFC 9457 problem+json.
"""

from __future__ import annotations

import anyio
import httpx
from _serve import serving
from fastapi import FastAPI, Request

import tenantlb as tlb
from tenantlb.adapters.asgi import TenantMiddleware

registry = tlb.TenantRegistry(
    [
        tlb.Tenant(
            "acme", api_keys=[tlb.hash_api_key("sk-acme-123")], limits=[tlb.Rate(5, per=60)]
        ),
        tlb.Tenant("globex", api_keys=[tlb.hash_api_key("sk-globex-456")], max_concurrency=10),
    ]
)
gateway = tlb.Gateway(registry=registry, pools={})

app = FastAPI()
app.add_middleware(TenantMiddleware, gateway=gateway)


@app.get("/whoami")
async def whoami(request: Request) -> dict[str, str]:
    tenant: tlb.Tenant = request.state.tenant
    return {"tenant": tenant.id}


async def main() -> None:
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        acme = {"x-api-key": "sk-acme-123"}
        statuses = []
        for _ in range(6):  # acme may make 5 requests a minute
            response = await client.get("/whoami", headers=acme)
            statuses.append(response.status_code)
        print("acme:", statuses, "| RateLimit:", response.headers.get("ratelimit"))
        assert statuses == [200] * 5 + [429]
        problem = response.json()
        print(
            "refusal:",
            response.headers["content-type"],
            problem["title"],
            "| Retry-After:",
            response.headers["retry-after"],
        )
        assert response.headers["content-type"] == "application/problem+json"

        ok = await client.get("/whoami", headers={"x-api-key": "sk-globex-456"})
        print("globex:", ok.status_code, ok.json())
        assert ok.json() == {"tenant": "globex"}

        wrong = await client.get("/whoami", headers={"x-api-key": "sk-wrong"})
        print("wrong key:", wrong.status_code, wrong.json()["title"])
        assert wrong.status_code == 401
        assert "sk-wrong" not in wrong.text


if __name__ == "__main__":
    anyio.run(main)
