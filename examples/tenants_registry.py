"""Tenants: digest-only API keys, resolution, hot reload and shuffle sharding, in one script."""

from __future__ import annotations

import math

import attrs

import tenantlb as tlb

SECRET = "example-server-secret-0123456789"  # in production: from your secret store

# Keys are issued to tenants once; only their digests are stored.
acme_key, beta_key = "sk-acme-7f3a9c2e51d04b86", "sk-beta-0c6e8a4f2b91d357"
registry = tlb.TenantRegistry(
    [
        tlb.Tenant(
            "acme",
            api_keys=[tlb.hash_api_key(acme_key, secret=SECRET)],
            upstream="shared",
            routes={"/v1/embeddings": "gpu"},
            limits=[tlb.Rate(100, per=1.0)],
            shard_size=2,
        ),
        tlb.Tenant("beta", api_keys=[tlb.hash_api_key(beta_key, secret=SECRET)], upstream="shared"),
    ],
    secret=SECRET,
)
print(registry.get("acme"))  # api_keys=<1 digest>: no key, no digest

# Who is calling? The default chain reads x-api-key, then Authorization: Bearer.
request = tlb.RequestInfo(
    "POST", "/v1/embeddings", [(b"authorization", f"Bearer {acme_key}".encode())]
)
tenant = registry.resolve(request)
print(
    f"{tenant.id} -> pool {tenant.upstream_for(request.path)!r} (allowed: {sorted(tenant.upstreams)})"
)

for headers in ([], [("x-api-key", "sk-wrong-0000000000")], [("x-api-key", acme_key + "\r\nX: y")]):
    try:
        registry.resolve(tlb.RequestInfo("GET", "/", headers))
    except tlb.RequestRejected as err:
        print(f"{err.status} {type(err).__name__}: {err}")

# Hot reload: in-flight work keeps its snapshot; new requests see the new one.
snapshot = registry.snapshot()
registry.put(attrs.evolve(tenant, enabled=False))
try:
    registry.resolve(request)
except tlb.Forbidden as err:
    print(f"after reload: {err}")
assert registry.resolve(request, snapshot=snapshot) is tenant

# Shuffle sharding: acme uses 2 of 8 shared endpoints; 28 possible shards.
urls = [f"http://10.0.0.{i}:8000" for i in range(1, 9)]
print("acme's shard:", tenant.shard(urls), f"of C(8, 2) = {math.comb(8, 2)} shards")
moved = sum(
    set(tlb.shuffle_shard(f"t{i}", urls, 2))
    != set(tlb.shuffle_shard(f"t{i}", [*urls, "http://10.0.0.9:8000"], 2))
    for i in range(1000)
)
print(f"adding a 9th endpoint moved {moved / 10:.1f}% of 1000 tenants' shards (ideal 2/9 = 22.2%)")
