"""Fall back across LLM providers by priority, with per-tenant token quotas.

    pip install 'tenantlb[asgi,httpx]' && python examples/llm_fallback.py

Two fake providers run on loopback: "primary" (tier 0) answers for a while and then fails with
503s; "secondary" (tier 1) keeps answering. The client balances over both with
`AsyncBalancingTransport`; passive outlier detection ejects the failing primary and the pool's
priority tiers send its share to the secondary. Each tenant has a token quota: a call charges an
estimate up front and the real token count from the provider's answer is reconciled afterwards.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import anyio
import httpx
from _serve import serving

import tenantlb as tlb
from tenantlb.adapters.httpx import AsyncBalancingTransport


def provider(name: str, fail_after: int | None) -> Any:
    calls = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if fail_after is not None and calls > fail_after:
            status, payload = 503, {"error": "overloaded"}
        else:
            prompt = json.loads(body)["prompt"]
            used = len(prompt) // 4 + 50  # what a real provider reports in "usage"
            status, payload = 200, {"provider": name, "usage": {"total_tokens": used}}
        data = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return app


tokens = tlb.RateLimiter(tlb.Rate(10_000, per=60.0))  # tokens a minute, per tenant


async def complete(client: httpx.AsyncClient, tenant: str, prompt: str) -> dict[str, Any]:
    estimate = len(prompt) // 4 + 256  # prompt tokens + max_tokens
    if estimate > tokens.max_cost:  # more than the whole quota: it could never be admitted
        return {"provider": None, "refused": f"{estimate} tokens exceed the quota"}
    decision = await tokens.acquire(tenant, cost=estimate)
    if not decision.allowed:
        return {"provider": None, "refused": f"token quota, retry in {decision.retry_after:.0f}s"}
    for _ in range(4):  # a 503 means the provider did no work: try again (3 eject it)
        response = await client.post("/v1/completions", json={"prompt": prompt})
        if response.status_code != 503:
            break
    answer: dict[str, Any] = response.json()
    used = answer.get("usage", {}).get("total_tokens", 0)
    if used < estimate:
        await tokens.refund(tenant, estimate - used)  # reconcile with the real count
    return answer


async def main() -> None:
    async with (
        serving(provider("primary", fail_after=10)) as primary,
        serving(provider("secondary", fail_after=None)) as secondary,
    ):
        pool = tlb.Pool(
            [tlb.Endpoint(primary), tlb.Endpoint(secondary, priority=1)],
            outlier_detector=tlb.OutlierDetector(
                consecutive_5xx=3, base_ejection_time=60.0, max_ejection_percent=100
            ),
        )
        transport = AsyncBalancingTransport({"llm": pool})
        async with httpx.AsyncClient(transport=transport, base_url="http://llm") as client:
            served: Counter[str] = Counter()
            for i in range(30):
                answer = await complete(client, "acme", f"Summarise document {i}. " * 20)
                served[str(answer.get("provider"))] += 1
            print("served by:", dict(served))
            print("tier shares now:", pool.stats().priority_loads)
            assert served["primary"] == 10
            assert served["secondary"] == 20
            left = await tokens.peek("acme")
            print(f"acme has about {left.remaining:.0f} tokens left this minute")
            hog = await complete(client, "hog", "x" * 60_000)  # an estimate over the quota
            print("a 60,000-character prompt:", hog)
            assert hog["provider"] is None


if __name__ == "__main__":
    anyio.run(main)
