"""Priority tiers: traffic stays in tier 0 while it is healthy and spills over as Envoy's does."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

import tenantlb as tlb
from tenantlb.balancing import Balancer
from tenantlb.balancing._priority import tier_loads
from tenantlb.testing import ManualClock

BALANCERS: dict[str, Callable[[], Balancer]] = {
    "RoundRobin": tlb.RoundRobin,
    "WeightedRandom": tlb.WeightedRandom,
    "LeastRequest": tlb.LeastRequest,
    "PeakEWMA": tlb.PeakEWMA,
    "RingHash": tlb.RingHash,
    "Maglev": lambda: tlb.Maglev(table_size=4099),
    "Rendezvous": tlb.Rendezvous,
    "BoundedLoad": lambda: tlb.BoundedLoad(tlb.Maglev(table_size=4099)),
}
PRIMARY = ["http://p0-a:8000", "http://p0-b:8000"]
BACKUP = ["http://p1-a:8000", "http://p1-b:8000"]


def tiered_pool(balancer: Balancer) -> tlb.Pool:
    endpoints = [tlb.Endpoint(u) for u in PRIMARY] + [tlb.Endpoint(u, priority=1) for u in BACKUP]
    return tlb.Pool(endpoints, balancer=balancer, clock=ManualClock(0.0))


def tier0_share(pool: tlb.Pool, n: int = 20_000) -> float:
    hits: Counter[str] = Counter()
    for i in range(n):
        with pool.acquire(key=f"user-{i}") as lease:
            hits[lease.endpoint.url] += 1
            lease.record(status=200)
    return sum(hits[u] for u in PRIMARY) / n


def test_tier_loads_follow_envoys_formula() -> None:
    """Health = available share x 1.4 capped at 100 %; lower tiers take what is left."""
    assert tier_loads([2, 2], [2, 2]) == [1.0, 0.0]
    assert tier_loads([1, 2], [2, 2]) == pytest.approx([0.7, 0.3])
    assert tier_loads([0, 2], [2, 2]) == [0.0, 1.0]
    assert tier_loads([0, 0], [2, 2]) == [1.0, 0.0]  # nothing anywhere: tier 0
    # both degraded: normalised by the total health (14 % + 14 %)
    assert tier_loads([1, 1], [10, 10]) == pytest.approx([0.5, 0.5])
    assert tier_loads([3, 1, 4], [10, 10, 4]) == pytest.approx([0.42, 0.14, 0.44])


@pytest.mark.parametrize("name", list(BALANCERS))
def test_whole_tier_zero_takes_everything(name: str) -> None:
    """With tier 0 whole, tier 1 gets nothing."""
    assert tier0_share(tiered_pool(BALANCERS[name]()), 2000) == 1.0


@pytest.mark.parametrize("name", list(BALANCERS))
def test_one_of_two_primaries_ejected_spills_30_percent(name: str) -> None:
    """One of two tier-0 endpoints ejected: 70 % stays in tier 0, 30 % goes to tier 1."""
    pool = tiered_pool(BALANCERS[name]())
    pool.eject(PRIMARY[0], 3600.0, "test")
    assert tier0_share(pool) == pytest.approx(0.70, abs=0.02)
    assert dict(pool.stats().priority_loads) == pytest.approx({0: 0.7, 1: 0.3})


@pytest.mark.parametrize("name", list(BALANCERS))
def test_tier_zero_gone_sends_everything_to_tier_one(name: str) -> None:
    """Tier 0 all ejected or unhealthy: every request goes to tier 1."""
    pool = tiered_pool(BALANCERS[name]())
    pool.eject(PRIMARY[0], 3600.0, "test")
    pool.mark_unhealthy(PRIMARY[1], "test")
    assert tier0_share(pool, 2000) == 0.0
    pool.mark_healthy(PRIMARY[1], "back")
    pool.uneject(PRIMARY[0], "back")
    assert tier0_share(pool, 2000) == 1.0


def test_panic_applies_per_tier() -> None:
    """A tier with too few available endpoints balances over all of them, and the pool says so."""
    tier0 = [tlb.Endpoint(f"http://p0-{i}:8000") for i in range(4)]
    tier1 = [tlb.Endpoint(f"http://p1-{i}:8000", priority=1) for i in range(4)]
    pool = tlb.Pool([*tier0, *tier1], balancer=tlb.RoundRobin(), clock=ManualClock(0.0))
    for e in tier1[:3]:
        pool.eject(e.url, 3600.0, "test")
    for e in tier0[:3]:
        pool.mark_unhealthy(e.url, "test")
    # tier 0: 1/4 available -> health 35 %; tier 1: 1/4 -> 35 %: normalised 50/50, both in panic
    assert pool.panic
    seen = Counter()
    for _ in range(800):
        with pool.acquire() as lease:
            seen[lease.endpoint.url] += 1
            lease.record(status=200)
    assert set(seen) == {e.url for e in tier0 + tier1}  # panic: every endpoint of each tier


def test_keys_stay_in_their_tier() -> None:
    """A hash key always lands in the same tier (and on the same endpoint) while nothing changes."""
    pool = tiered_pool(tlb.RingHash())
    pool.eject(PRIMARY[0], 3600.0, "test")
    first = {}
    for i in range(200):
        with pool.acquire(key=f"k{i}") as lease:
            first[i] = lease.endpoint.url
            lease.record(status=200)
    for i in range(200):
        with pool.acquire(key=f"k{i}") as lease:
            assert lease.endpoint.url == first[i]
            lease.record(status=200)


def test_single_tier_pools_report_no_loads_and_update_can_add_a_tier() -> None:
    """A one-tier pool reports no tier loads; update() moving an endpoint to tier 1 takes effect."""
    pool = tlb.Pool(PRIMARY + BACKUP, balancer=tlb.RoundRobin(), clock=ManualClock(0.0))
    assert pool.stats().priority_loads == ()
    pool.update([*PRIMARY, *(tlb.Endpoint(u, priority=1) for u in BACKUP)])
    assert dict(pool.stats().priority_loads) == {0: 1.0, 1: 0.0}
    assert tier0_share(pool, 1000) == 1.0
    assert [e.priority for e in pool.stats().endpoints] == [0, 0, 1, 1]


def test_in_flight_returns_to_zero_with_tiers() -> None:
    """Leases in a tiered pool release exactly once (BoundedLoad's running totals included)."""
    pool = tiered_pool(tlb.BoundedLoad(tlb.Maglev(table_size=4099)))
    pool.eject(PRIMARY[0], 3600.0, "test")
    leases = [pool.acquire(key=f"k{i}") for i in range(500)]
    for lease in leases:
        lease.release()
    assert pool.stats().in_flight == 0


def test_bad_priority_is_a_typed_error() -> None:
    """priority must be an int between 0 and 127."""
    with pytest.raises(TypeError, match="priority must be an int"):
        tlb.Endpoint("http://a:1", priority=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority must be between 0 and 127, got -1"):
        tlb.Endpoint("http://a:1", priority=-1)


def test_config_accepts_priority() -> None:
    """`{ url = ..., priority = 1 }` in a pool's endpoints makes a backup tier."""
    gateway = tlb.Gateway.from_config(
        {
            "pools": {
                "llm": {
                    "endpoints": [
                        "http://primary:8000",
                        {"url": "http://fallback:8000", "priority": 1},
                    ]
                }
            },
            "tenants": [{"id": "acme", "upstream": "llm"}],
        }
    )
    assert [e.priority for e in gateway.pools["llm"].endpoints] == [0, 1]
    with pytest.raises(tlb.ConfigError, match=r"pools\.llm\.endpoints\[0\]"):
        tlb.Gateway.from_config(
            {"pools": {"llm": {"endpoints": [{"url": "http://p:1", "priority": -2}]}}}
        )
