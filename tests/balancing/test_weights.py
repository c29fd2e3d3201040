"""Every weighted strategy respects weights within one percentage point over 100k picks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

import tenantlb as tlb
from tenantlb.balancing import Balancer
from tenantlb.testing import ManualClock

WEIGHTS = {
    "http://10.6.0.1:8000": 5,
    "http://10.6.0.2:8000": 1,
    "http://10.6.0.3:8000": 1,
    "http://10.6.0.4:8000": 3,
}

# (factory, keyed): keyed strategies are measured over 100k distinct keys, the others keyless.
WEIGHTED: dict[str, tuple[Callable[[], Balancer], bool]] = {
    "RoundRobin": (tlb.RoundRobin, False),
    "WeightedRandom": (lambda: tlb.WeightedRandom(seed=21), False),
    "LeastRequest": (lambda: tlb.LeastRequest(seed=22), False),
    "Maglev": (tlb.Maglev, True),
    "RingHash": (lambda: tlb.RingHash(min_ring_size=2**16), True),
    "Rendezvous": (lambda: tlb.Rendezvous(cache_size=0), True),
    "BoundedLoad": (tlb.BoundedLoad, True),
}


@pytest.mark.parametrize("name", list(WEIGHTED))
def test_shares_follow_weights(name: str) -> None:
    """Sequential requests through a pool land on endpoints in proportion to their weights."""
    factory, keyed = WEIGHTED[name]
    endpoints = [tlb.Endpoint(u, weight=w) for u, w in WEIGHTS.items()]
    pool = tlb.Pool(endpoints, factory(), clock=ManualClock())
    picks: Counter[str] = Counter()
    for i in range(100_000):
        with pool.acquire(key=b"k%d" % i if keyed else None) as lease:
            picks[lease.url] += 1
            lease.record(status=200)
    total = sum(WEIGHTS.values())
    for url, weight in WEIGHTS.items():
        assert picks[url] / 100_000 == pytest.approx(weight / total, abs=0.01), (url, picks)
