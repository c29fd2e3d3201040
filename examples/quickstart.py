"""Quickstart: a pool, a balancer, leases, and a per-tenant gateway — all in memory.

Run: python examples/quickstart.py
"""

from __future__ import annotations

from collections import Counter

import anyio

import tenantlb as tlb

# 1. A pool of endpoints with smooth weighted round robin: weights 5/1/1 give "a a b a c a a".
pool = tlb.Pool(
    [tlb.Endpoint("http://a", weight=5), "http://b", "http://c"],
    balancer=tlb.RoundRobin(),
)
picks = []
for _ in range(7):
    with pool.acquire() as lease:  # a Lease: released exactly once, even on errors
        picks.append(lease.endpoint.url.removeprefix("http://"))
        lease.record(status=200)  # latency is measured by the lease
print("round robin:", " ".join(picks))

# 2. A rate limit: 5 requests a second, checked atomically with an hourly cap.
limiter = tlb.RateLimiter([tlb.Rate(5, per=1.0), tlb.Rate(1000, per=3600)])
decisions = [limiter.acquire_nowait("acme") for _ in range(7)]
print("rate limit:", ["allowed" if d.allowed else "denied" for d in decisions])
print("headers on denial:", decisions[-1].headers())

# 3. A gateway: tenants with API keys (stored as digests), limits and their own upstream.
KEY = "sk-acme-0123456789abcdef"
registry = tlb.TenantRegistry(
    [
        tlb.Tenant(
            "acme",
            api_keys=[tlb.hash_api_key(KEY)],
            upstream="shared",
            limits=[tlb.Rate(3, per=60)],
        )
    ]
)
gateway = tlb.Gateway(
    registry=registry,
    pools={"shared": tlb.Pool(["http://10.0.0.1:8000", "http://10.0.0.2:8000"], name="shared")},
)


async def main() -> None:
    outcomes: Counter[str] = Counter()
    for _ in range(5):
        request = tlb.RequestInfo("POST", "/v1/chat", [("x-api-key", KEY)])
        try:
            async with gateway.admit(request) as ticket:
                # send the request to ticket.endpoint.url here; add ticket.headers to the response
                ticket.record(status=200)
                outcomes[ticket.endpoint.url] += 1
        except tlb.RateLimited as exc:
            outcomes[f"429 (retry after {exc.decision.retry_after:.0f} s)"] += 1
    try:
        async with gateway.admit(
            tlb.RequestInfo("GET", "/", [("x-api-key", "sk-wrong-key-000000")])
        ):
            pass
    except tlb.Unauthenticated as exc:
        outcomes[f"{exc.status} {exc.title}"] += 1
    print("gateway:", dict(outcomes))


anyio.run(main)
