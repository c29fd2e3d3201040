"""RoundRobin: NGINX's smooth weighted sequence at O(1) a pick."""

from __future__ import annotations

from collections import Counter

import pytest

import tenantlb as tlb


def picks(pool: tlb.Pool, n: int) -> list[str]:
    out = []
    for _ in range(n):
        with pool.acquire() as lease:
            out.append(lease.url.removeprefix("http://"))
    return out


def test_weights_5_1_1_give_the_nginx_sequence() -> None:
    """Weights {5, 1, 1} yield exactly `a a b a c a a` every cycle."""
    pool = tlb.Pool(
        [tlb.Endpoint("http://a", weight=5), tlb.Endpoint("http://b"), tlb.Endpoint("http://c")],
        balancer=tlb.RoundRobin(),
    )
    assert picks(pool, 21) == list("aabacaa" * 3)


def test_equal_weights_rotate() -> None:
    """Equal weights give plain rotation in insertion order."""
    pool = tlb.Pool(["http://a", "http://b", "http://c"], balancer=tlb.RoundRobin())
    assert picks(pool, 7) == list("abcabca")


@pytest.mark.parametrize(
    "weights",
    [
        [1, 2, 3, 4],
        [0.5, 1.5, 2.25],  # fractional: EDF mode
        [1000 + i for i in range(400)],  # too long a period: EDF mode
    ],
)
def test_weights_are_respected_within_one_percent(weights: list[float]) -> None:
    """Over 100k picks each endpoint's share is within 1% of its weight's share."""
    endpoints = [tlb.Endpoint(f"http://e{i}", weight=w) for i, w in enumerate(weights)]
    pool = tlb.Pool(endpoints, balancer=tlb.RoundRobin())
    counts = Counter(picks(pool, 100_000))
    total = sum(weights)
    for i, w in enumerate(weights):
        expected = 100_000 * w / total
        assert abs(counts[f"e{i}"] - expected) <= max(0.01 * expected, 2), (i, counts[f"e{i}"])


def test_no_weight_is_starved_by_frequent_updates() -> None:
    """An update after every few picks never starves the low-weight endpoints."""
    endpoints = [
        tlb.Endpoint("http://a", weight=5),
        tlb.Endpoint("http://b"),
        tlb.Endpoint("http://c"),
    ]
    pool = tlb.Pool(endpoints, balancer=tlb.RoundRobin())
    counts: Counter[str] = Counter()
    for i in range(3000):
        counts.update(picks(pool, 2))
        # flip a label: a rebuild that keeps the same weights
        pool.update([*endpoints[:2], tlb.Endpoint("http://c", zone=str(i % 2))])
    assert counts["b"] > 0.9 * 6000 / 7
    assert counts["c"] > 0.9 * 6000 / 7


def test_no_weight_is_starved_in_edf_mode_after_updates() -> None:
    """With fractional weights (EDF), frequent rebuilds still serve every endpoint its share."""
    endpoints = [tlb.Endpoint("http://a", weight=5.5), tlb.Endpoint("http://b", weight=0.5)]
    pool = tlb.Pool(endpoints, balancer=tlb.RoundRobin())
    counts: Counter[str] = Counter()
    for i in range(5000):
        counts.update(picks(pool, 1))
        pool.update([endpoints[0], tlb.Endpoint("http://b", weight=0.5, zone=str(i % 2))])
    assert counts["b"] > 0.7 * 5000 / 12


def test_empty_round_robin_picks_nothing() -> None:
    """An empty pool raises NoHealthyEndpoint rather than picking."""
    pool = tlb.Pool([], balancer=tlb.RoundRobin())
    with pytest.raises(tlb.NoHealthyEndpoint, match="no endpoints"):
        pool.acquire()


def test_one_balancer_instance_serves_one_pool() -> None:
    """Sharing a balancer between pools is misuse and raises RuntimeError."""
    balancer = tlb.RoundRobin()
    tlb.Pool(["http://a"], balancer=balancer)
    with pytest.raises(RuntimeError, match="already bound"):
        tlb.Pool(["http://b"], balancer=balancer)
