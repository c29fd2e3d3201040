"""Maglev: O(1) table lookups, balanced shares, small disruption when an endpoint leaves."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

import tenantlb as tlb
from tenantlb.balancing import EndpointState
from tenantlb.testing import ManualClock

URLS = [f"http://10.1.{i // 250}.{i % 250}:8000" for i in range(100)]
KEYS = [b"user-%d" % i for i in range(100_000)]


def bound(balancer: tlb.Maglev, candidates: list[EndpointState]) -> tlb.Maglev:
    balancer.bind(ManualClock())
    balancer.rebuild(candidates)
    return balancer


def states(urls: list[str], weights: list[float] | None = None) -> list[EndpointState]:
    weights = weights or [1.0] * len(urls)
    return [
        EndpointState(tlb.Endpoint(u, weight=w), 0.0) for u, w in zip(urls, weights, strict=True)
    ]


def test_table_shares_within_one_percent_of_fair() -> None:
    """With 100 endpoints and 65537 slots every endpoint holds its fair share of slots to within 1%."""
    balancer = bound(tlb.Maglev(), states(URLS))
    slots = Counter(balancer._slots)
    fair = 65537 / 100
    assert len(slots) == 100
    assert all(abs(count - fair) / fair < 0.01 for count in slots.values())


def test_key_shares_are_fair() -> None:
    """Over 100k keys every endpoint's share is within six binomial standard deviations of 1%."""
    balancer = bound(tlb.Maglev(), states(URLS))
    picks = Counter(balancer.pick(k) for k in KEYS)
    sigma = (100_000 * 0.01 * 0.99) ** 0.5
    assert all(abs(n - 1000) < 6 * sigma for n in picks.values())


def test_removing_one_of_100_moves_few_keys() -> None:
    """Removing one of 100 endpoints moves at most 2% of keys and keeps shares within 1% of fair."""
    candidates = states(URLS)
    balancer = bound(tlb.Maglev(), candidates)
    before = [balancer.pick(k) for k in KEYS]
    removed = candidates[37]
    balancer.rebuild([c for c in candidates if c is not removed])
    after = [balancer.pick(k) for k in KEYS]
    moved = sum(1 for b, a in zip(before, after, strict=True) if a is not b)
    between_survivors = sum(
        1 for b, a in zip(before, after, strict=True) if a is not b and b is not removed
    )
    assert removed not in after
    assert moved / len(KEYS) <= 0.02  # measured: 1.6%
    assert between_survivors / len(KEYS) <= 0.01  # measured: 0.6%
    slots = Counter(balancer._slots)
    fair = 65537 / 99
    assert all(abs(count - fair) / fair < 0.01 for count in slots.values())


def test_weights_set_table_shares() -> None:
    """Weighted endpoints hold slots in proportion to their weights (within 1%)."""
    weights = [5.0, 1.0, 1.0, 3.0]
    balancer = bound(tlb.Maglev(), states(URLS[:4], weights))
    slots = Counter(balancer._slots)
    for i, w in enumerate(weights):
        assert slots[i] / 65537 == pytest.approx(w / 10, rel=0.01)


def test_same_key_same_endpoint_across_instances_and_orders() -> None:
    """Two instances with the endpoints in any order map every key the same way."""
    first = bound(tlb.Maglev(), states(URLS[:20]))
    second = bound(tlb.Maglev(), states(list(reversed(URLS[:20]))))
    assert all(first.pick(k).url == second.pick(k).url for k in KEYS[:2000])  # type: ignore[union-attr]


def test_pool_key_affinity_with_str_and_bytes() -> None:
    """Through a pool, a str key and its UTF-8 bytes reach the same endpoint every time."""
    pool = tlb.Pool(URLS[:10], tlb.Maglev(), clock=ManualClock())
    with pool.acquire(key="203.0.113.9") as first:
        first.record(status=200)
    for _ in range(50):
        with pool.acquire(key=b"203.0.113.9") as lease:
            assert lease.url == first.url
            lease.record(status=200)


def test_keyless_picks_are_spread() -> None:
    """key=None picks a random slot, so every endpoint gets some traffic."""
    balancer = bound(tlb.Maglev(seed=1), states(URLS[:5]))
    picks = Counter(balancer.pick(None) for _ in range(5000))
    assert all(800 < n < 1200 for n in picks.values())


def test_small_table_and_empty() -> None:
    """A small prime table works; no candidate picks None."""
    balancer = bound(tlb.Maglev(7), states(URLS[:3]))
    assert {balancer.pick(k) for k in KEYS[:100]} == set(balancer._candidates)
    balancer.rebuild([])
    assert balancer.pick(b"x") is None
    assert balancer.pick(None) is None


def test_rebuild_with_same_members_reuses_the_table() -> None:
    """A health flap back to the same endpoints restores the cached table."""
    candidates = states(URLS[:10])
    balancer = bound(tlb.Maglev(), candidates)
    table = balancer._slots
    balancer.rebuild(candidates[:9])
    balancer.rebuild(candidates)
    assert balancer._slots is table


def test_observe_after_removal_and_clone() -> None:
    """A late record of a removed endpoint is harmless; a clone keeps the table size."""
    pool = tlb.Pool(URLS[:3], tlb.Maglev(1009), clock=ManualClock())
    lease = pool.acquire(key="k")
    pool.remove(lease.url)
    lease.record(status=503)
    assert pool.acquire(key="k").url != lease.url
    clone = pool.balancer.clone()
    assert isinstance(clone, tlb.Maglev)
    assert clone.table_size == 1009


@pytest.mark.parametrize(
    ("size", "error", "match"),
    [
        (65536, ValueError, "table_size must be a prime, got 65536"),
        (1001, ValueError, "table_size must be a prime"),
        (5, ValueError, "table_size must be between 7"),
        (10_000_019, ValueError, "table_size must be between"),
        (65537.0, TypeError, "table_size must be an int"),
    ],
)
def test_bad_table_size(size: object, error: type[Exception], match: str) -> None:
    """A table size that is not a prime in range is refused with the value named."""
    with pytest.raises(error, match=match):
        tlb.Maglev(size)  # type: ignore[arg-type]


def test_too_small_a_table_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A table with fewer than 100 slots an endpoint logs a warning naming the sizes, once."""
    with caplog.at_level(logging.WARNING, logger="tenantlb"):
        pool = tlb.Pool([f"http://m{i}" for i in range(20)], balancer=tlb.Maglev(table_size=1009))
        pool.remove("http://m0")  # 19 endpoints: already warned about more
    warnings = [
        r for r in caplog.records if "Maglev(table_size=1009) with 20 endpoints" in r.getMessage()
    ]
    assert len(warnings) == 1
