"""WeightedRandom: independent picks proportional to weight, by the alias method."""

from __future__ import annotations

from collections import Counter

import pytest

import tenantlb as tlb
from tenantlb.balancing import EndpointState
from tenantlb.testing import ManualClock

URLS = [f"http://10.0.2.{i}:8000" for i in range(1, 101)]


def bound(weights: list[float], seed: int) -> tuple[tlb.WeightedRandom, list[EndpointState]]:
    candidates = [
        EndpointState(tlb.Endpoint(URLS[i], weight=w), 0.0) for i, w in enumerate(weights)
    ]
    balancer = tlb.WeightedRandom(seed=seed)
    balancer.bind(ManualClock())
    balancer.rebuild(candidates)
    return balancer, candidates


@pytest.mark.parametrize(
    "weights",
    [[5, 1, 1], [1, 1, 1, 1], [0.1, 10, 3.5], [float(i) for i in range(1, 51)]],
)
def test_shares_follow_weights(weights: list[float]) -> None:
    """Over 100k picks (fixed seed) every share is within one percentage point of weight/total."""
    balancer, candidates = bound(weights, seed=11)
    picks = Counter(balancer.pick(None) for _ in range(100_000))
    total = sum(weights)
    for c in candidates:
        assert picks[c] / 100_000 == pytest.approx(c.weight / total, abs=0.01)


def test_alias_tables_are_exact() -> None:
    """The alias tables give each endpoint exactly its probability (no sampling involved)."""
    weights = [7.0, 1.0, 2.5, 0.5, 4.0]
    balancer, _ = bound(weights, seed=0)
    n = len(weights)
    mass = [0.0] * n
    for i in range(n):
        mass[i] += balancer._prob[i] / n
        mass[balancer._alias[i]] += (1.0 - balancer._prob[i]) / n
    total = sum(weights)
    assert mass == pytest.approx([w / total for w in weights])


def test_rebuild_follows_new_weights() -> None:
    """After a weight change the pool's picks follow the new weights."""
    pool = tlb.Pool(URLS[:2], tlb.WeightedRandom(seed=12), clock=ManualClock())
    pool.set_weight(URLS[0], 9)
    picks = Counter()
    for _ in range(10_000):
        with pool.acquire() as lease:
            picks[lease.url] += 1
            lease.record(status=200)
    assert picks[URLS[0]] / 10_000 == pytest.approx(0.9, abs=0.02)


def test_empty_and_single() -> None:
    """No candidate picks None; one candidate is always picked."""
    balancer, _ = bound([], seed=1)
    assert balancer.pick(None) is None
    balancer, (only,) = bound([3], seed=1)
    assert balancer.pick(None) is only


def test_observe_after_removal_is_harmless() -> None:
    """Recording a lease whose endpoint was removed meanwhile does not fail."""
    pool = tlb.Pool(URLS[:2], tlb.WeightedRandom(), clock=ManualClock())
    lease = pool.acquire()
    pool.remove(lease.url)
    lease.record(status=500)
    assert pool.acquire().url != lease.url


def test_clone_is_unbound() -> None:
    """A clone can be bound to another pool."""
    balancer = tlb.WeightedRandom(seed=3)
    balancer.bind(ManualClock())
    balancer.clone().bind(ManualClock())
    with pytest.raises(RuntimeError, match="already bound"):
        balancer.bind(ManualClock())
