"""RingHash: ketama-style weighted virtual nodes; removal moves no key between survivors."""

from __future__ import annotations

from collections import Counter

import pytest

import tenantlb as tlb
from tenantlb.balancing import EndpointState
from tenantlb.testing import ManualClock

URLS = [f"http://10.2.{i // 250}.{i % 250}:8000" for i in range(100)]
KEYS = [b"session-%d" % i for i in range(100_000)]


def states(urls: list[str], weights: list[float] | None = None) -> list[EndpointState]:
    weights = weights or [1.0] * len(urls)
    return [
        EndpointState(tlb.Endpoint(u, weight=w), 0.0) for u, w in zip(urls, weights, strict=True)
    ]


def bound(balancer: tlb.RingHash, candidates: list[EndpointState]) -> tlb.RingHash:
    balancer.bind(ManualClock())
    balancer.rebuild(candidates)
    return balancer


def test_removing_one_of_100_moves_no_key_between_survivors() -> None:
    """Removing one of 100 endpoints moves only its own keys (100k keys measured)."""
    candidates = states(URLS)
    balancer = bound(tlb.RingHash(), candidates)
    before = [balancer.pick(k) for k in KEYS]
    removed = candidates[42]
    balancer.rebuild([c for c in candidates if c is not removed])
    after = [balancer.pick(k) for k in KEYS]
    assert all(a is b for b, a in zip(before, after, strict=True) if b is not removed)
    assert removed not in after
    assert 0 < sum(1 for b in before if b is removed) < 0.03 * len(KEYS)


def test_adding_back_restores_the_mapping() -> None:
    """Adding the endpoint back returns every key to where it was."""
    candidates = states(URLS[:20])
    balancer = bound(tlb.RingHash(), candidates)
    before = [balancer.pick(k) for k in KEYS[:5000]]
    balancer.rebuild(candidates[1:])
    balancer.rebuild(candidates)
    assert [balancer.pick(k) for k in KEYS[:5000]] == before


def test_weight_change_moves_keys_only_to_that_endpoint() -> None:
    """Raising one endpoint's weight moves keys only to it, never between the others."""
    candidates = states(URLS[:10])
    balancer = bound(tlb.RingHash(), candidates)
    before = [balancer.pick(k) for k in KEYS[:20_000]]
    candidates[3].weight = 1.5  # what slow start or set_weight does to the live state
    balancer.rebuild(candidates)
    after = [balancer.pick(k) for k in KEYS[:20_000]]
    assert all(a is b or a is candidates[3] for b, a in zip(before, after, strict=True))


def test_ring_size_and_weighted_node_counts() -> None:
    """The ring holds at least min_ring_size nodes, in proportion to the weights."""
    balancer = bound(tlb.RingHash(min_ring_size=1000), states(URLS[:3], [5, 1, 1]))
    nodes = Counter(balancer._owners)
    assert sum(nodes.values()) >= 1000
    assert nodes[0] == 5 * nodes[1] == 5 * nodes[2]


def test_max_ring_size_caps_the_ring() -> None:
    """max_ring_size bounds the number of virtual nodes."""
    balancer = bound(tlb.RingHash(min_ring_size=64, max_ring_size=64), states(URLS[:3], [5, 1, 1]))
    assert len(balancer._hashes) <= 64


def test_large_ring_shares_follow_weights() -> None:
    """With a large ring, shares of 100k keys are within one percentage point of the weights."""
    weights = [5.0, 1.0, 1.0, 3.0]
    balancer = bound(tlb.RingHash(min_ring_size=2**16), states(URLS[:4], weights))
    picks = Counter(balancer.pick(k) for k in KEYS)
    for c in balancer._candidates:
        assert picks[c] / len(KEYS) == pytest.approx(c.weight / 10, abs=0.01)


def test_same_mapping_in_any_order() -> None:
    """Two instances with the endpoints in different orders agree on every key."""
    first = bound(tlb.RingHash(), states(URLS[:20]))
    second = bound(tlb.RingHash(), states(list(reversed(URLS[:20]))))
    assert all(first.pick(k).url == second.pick(k).url for k in KEYS[:2000])  # type: ignore[union-attr]


def test_pool_key_affinity_and_keyless_spread() -> None:
    """Through a pool, a key always reaches the same endpoint; key=None spreads over all."""
    pool = tlb.Pool(URLS[:5], tlb.RingHash(seed=1), clock=ManualClock())
    urls = set()
    for _ in range(20):
        with pool.acquire(key="10.0.0.7") as lease:
            urls.add(lease.url)
            lease.record(status=200)
    assert len(urls) == 1
    spread = Counter(pool.acquire().url for _ in range(2000))
    assert len(spread) == 5


def test_empty_observe_after_removal_and_clone() -> None:
    """No candidate picks None; a late record is harmless; a clone keeps the sizes."""
    balancer = bound(tlb.RingHash(), [])
    assert balancer.pick(b"k") is None
    assert balancer.pick(None) is None
    pool = tlb.Pool(URLS[:3], tlb.RingHash(16, 4096), clock=ManualClock())
    lease = pool.acquire(key="k")
    pool.remove(lease.url)
    lease.record(status=200)
    clone = pool.balancer.clone()
    assert isinstance(clone, tlb.RingHash)
    assert (clone.min_ring_size, clone.max_ring_size) == (16, 4096)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((0,), ValueError, "min_ring_size must be between 1"),
        ((1024, 512), ValueError, "min_ring_size must be <= max_ring_size"),
        ((1024, 2**24), ValueError, "max_ring_size must be between"),
        ((1024.0,), TypeError, "min_ring_size must be an int"),
    ],
)
def test_bad_sizes(args: tuple[object, ...], error: type[Exception], match: str) -> None:
    """Ring sizes out of range or of the wrong type are refused with the field named."""
    with pytest.raises(error, match=match):
        tlb.RingHash(*args)  # type: ignore[arg-type]
