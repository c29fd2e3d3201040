"""Hot reloads do not grow the gateway's limiter caches or the store's tables without bound."""

from __future__ import annotations

import pytest

import tenantlb as tlb
from tenantlb.testing import ManualClock


@pytest.mark.anyio
async def test_reloads_with_new_limits_keep_caches_bounded() -> None:
    """2,000 reloads that each change a tenant's limits and max_concurrency leave bounded state."""
    clock = ManualClock()
    store = tlb.MemoryStore(clock)
    registry = tlb.TenantRegistry([], resolvers=[tlb.HeaderResolver("x-tenant")])
    gateway = tlb.Gateway(registry=registry, pools={"p": tlb.Pool(["http://a"])}, store=store)
    info = tlb.RequestInfo("GET", "/", [("x-tenant", "acme")])
    for i in range(2000):
        registry.replace(
            [
                tlb.Tenant(
                    "acme",
                    upstream="p",
                    limits=[tlb.Rate(100 + i, per=1.0)],
                    max_concurrency=1 + i,
                )
            ]
        )
        async with gateway.admit(info):
            pass
        clock.advance(1.0)  # the previous limits' state has recovered
    assert len(gateway._quotas) <= 130  # was 2,000 each
    assert gateway._flow.plans() <= 130  # tenant plans: one per current tenant object
    assert store.stats().limiters <= 130


@pytest.mark.anyio
async def test_a_reload_applies_to_the_next_request() -> None:
    """New limits, concurrency and upstream of a reloaded tenant apply from its next request on."""
    clock = ManualClock()
    registry = tlb.TenantRegistry([], resolvers=[tlb.HeaderResolver("x-tenant")])
    pools = {"a": tlb.Pool(["http://a"], clock=clock), "b": tlb.Pool(["http://b"], clock=clock)}
    gateway = tlb.Gateway(registry=registry, pools=pools, store=tlb.MemoryStore(clock))
    info = tlb.RequestInfo("GET", "/", [("x-tenant", "acme")])
    registry.replace([tlb.Tenant("acme", upstream="a", limits=[tlb.Rate(1, per=60.0)])])
    async with gateway.admit(info) as ticket:
        assert ticket.upstream == "a"
    with pytest.raises(tlb.RateLimited):
        async with gateway.admit(info):
            pass
    registry.replace([tlb.Tenant("acme", upstream="b", max_concurrency=1)])  # no limits now
    async with gateway.admit(info) as ticket:
        assert ticket.upstream == "b"
        with pytest.raises(tlb.OverCapacity):
            async with gateway.admit(info):
                pass
    stats = gateway.stats().by_tenant["acme"]
    assert (stats.admitted, stats.in_flight) == (2, 0)
    assert dict(stats.refused) == {"rate_limited": 1, "over_capacity": 1}
