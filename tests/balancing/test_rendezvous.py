"""Rendezvous: weighted highest random weight; removal moves no key between survivors."""

from __future__ import annotations

from collections import Counter

import pytest

import tenantlb as tlb
from tenantlb.balancing import EndpointState
from tenantlb.testing import ManualClock

URLS = [f"http://10.3.{i // 250}.{i % 250}:8000" for i in range(100)]
KEYS = [b"tenant-%d" % i for i in range(100_000)]


def states(urls: list[str], weights: list[float] | None = None) -> list[EndpointState]:
    weights = weights or [1.0] * len(urls)
    return [
        EndpointState(tlb.Endpoint(u, weight=w), 0.0) for u, w in zip(urls, weights, strict=True)
    ]


def bound(balancer: tlb.Rendezvous, candidates: list[EndpointState]) -> tlb.Rendezvous:
    balancer.bind(ManualClock())
    balancer.rebuild(candidates)
    return balancer


def test_removing_one_of_100_moves_no_key_between_survivors() -> None:
    """Removing one of 100 endpoints moves only its own keys (100k keys measured)."""
    candidates = states(URLS)
    balancer = bound(tlb.Rendezvous(cache_size=0), candidates)
    before = [balancer.pick(k) for k in KEYS]
    removed = candidates[7]
    balancer.rebuild([c for c in candidates if c is not removed])
    after = [balancer.pick(k) for k in KEYS]
    assert all(a is b for b, a in zip(before, after, strict=True) if b is not removed)
    assert removed not in after
    sigma = (100_000 * 0.01 * 0.99) ** 0.5
    assert all(abs(n - 1000) < 6 * sigma for n in Counter(before).values())


def test_weighted_shares_follow_weights() -> None:
    """Over 100k keys, weighted shares are within one percentage point of weight/total."""
    weights = [5.0, 1.0, 1.0, 3.0]
    balancer = bound(tlb.Rendezvous(), states(URLS[:4], weights))
    picks = Counter(balancer.pick(k) for k in KEYS)
    for c in balancer._candidates:
        assert picks[c] / len(KEYS) == pytest.approx(c.weight / 10, abs=0.01)


def test_weight_change_moves_keys_only_to_that_endpoint() -> None:
    """Raising one endpoint's weight moves keys only to it."""
    candidates = states(URLS[:10], [2.0] * 10)
    balancer = bound(tlb.Rendezvous(), candidates)
    before = [balancer.pick(k) for k in KEYS[:20_000]]
    candidates[4].weight = 3.0
    balancer.rebuild(candidates)
    after = [balancer.pick(k) for k in KEYS[:20_000]]
    assert all(a is b or a is candidates[4] for b, a in zip(before, after, strict=True))
    assert sum(1 for a in after if a is candidates[4]) > sum(
        1 for b in before if b is candidates[4]
    )


def test_cache_gives_the_same_answer_and_is_cleared_on_rebuild() -> None:
    """Cached picks equal computed ones, and a rebuild never serves a removed endpoint."""
    candidates = states(URLS[:10])
    cached = bound(tlb.Rendezvous(cache_size=100), candidates)
    plain = bound(tlb.Rendezvous(cache_size=0), candidates)
    for k in KEYS[:500] * 2:
        assert cached.pick(k) is plain.pick(k)
    gone = cached.pick(KEYS[0])
    cached.rebuild([c for c in candidates if c is not gone])
    assert cached.pick(KEYS[0]) is not gone


def test_same_mapping_in_any_order() -> None:
    """Two instances with the endpoints in different orders agree on every key."""
    first = bound(tlb.Rendezvous(), states(URLS[:20], [float(i % 3 + 1) for i in range(20)]))
    second = bound(
        tlb.Rendezvous(), list(reversed(states(URLS[:20], [float(i % 3 + 1) for i in range(20)])))
    )
    assert all(first.pick(k).url == second.pick(k).url for k in KEYS[:2000])  # type: ignore[union-attr]


def test_keyless_picks_are_weighted_random() -> None:
    """key=None picks at random in proportion to the weights."""
    balancer = bound(tlb.Rendezvous(seed=5), states(URLS[:2], [3.0, 1.0]))
    picks = Counter(balancer.pick(None) for _ in range(40_000))
    assert picks[balancer._candidates[0]] / 40_000 == pytest.approx(0.75, abs=0.01)


def test_walk_starts_with_the_pick_and_lists_everyone() -> None:
    """walk() yields every candidate once, starting with the one pick() returns."""
    from tenantlb.balancing._hashing import hash64

    balancer = bound(tlb.Rendezvous(), states(URLS[:8]))
    order = list(balancer.walk(hash64(b"abc")))
    assert order[0] is balancer.pick(b"abc")
    assert sorted(s.url for s in order) == sorted(URLS[:8])


def test_empty_observe_after_removal_and_clone() -> None:
    """No candidate picks None; a late record is harmless; a clone keeps the cache size."""
    balancer = bound(tlb.Rendezvous(), [])
    assert balancer.pick(b"k") is None
    assert balancer.pick(None) is None
    pool = tlb.Pool(URLS[:3], tlb.Rendezvous(cache_size=8), clock=ManualClock())
    lease = pool.acquire(key="k")
    pool.remove(lease.url)
    lease.record(status=200)
    assert pool.acquire(key="k").url != lease.url
    clone = pool.balancer.clone()
    assert isinstance(clone, tlb.Rendezvous)
    assert clone.cache_size == 8


@pytest.mark.parametrize(
    ("size", "error", "match"),
    [
        (-1, ValueError, "cache_size must be >= 0, got -1"),
        ("8", TypeError, "cache_size must be an int"),
    ],
)
def test_bad_cache_size(size: object, error: type[Exception], match: str) -> None:
    """A negative or non-int cache size is refused with the value named."""
    with pytest.raises(error, match=match):
        tlb.Rendezvous(cache_size=size)  # type: ignore[arg-type]


def test_docstring_states_the_uncached_cost() -> None:
    """The docstring warns that an uncached key is O(n) and what that costs at 1,000 endpoints."""
    doc = " ".join((tlb.Rendezvous.__doc__ or "").split())
    assert "O(n) per uncached key" in doc
    assert "1,000 endpoints" in doc
