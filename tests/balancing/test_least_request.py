"""LeastRequest: P2C on in-flight counts, Envoy's weighted formula, and the full-scan mode."""

from __future__ import annotations

from collections import Counter

import pytest

import tenantlb as tlb
from tenantlb.balancing import EndpointState
from tenantlb.testing import ManualClock

URLS = [f"http://10.0.1.{i}:8000" for i in range(1, 101)]


def states(weights: list[float]) -> list[EndpointState]:
    return [EndpointState(tlb.Endpoint(URLS[i], weight=w), 0.0) for i, w in enumerate(weights)]


def bound(balancer: tlb.LeastRequest, candidates: list[EndpointState]) -> tlb.LeastRequest:
    balancer.bind(ManualClock())
    balancer.rebuild(candidates)
    return balancer


def test_p2c_never_picks_the_busiest_of_two() -> None:
    """With two equal endpoints, the one with more requests in flight is never picked."""
    a, b = states([1, 1])
    balancer = bound(tlb.LeastRequest(seed=1), [a, b])
    a.in_flight = 3
    assert all(balancer.pick(None) is b for _ in range(1000))


def test_p2c_avoids_the_most_loaded() -> None:
    """Among ten equal endpoints, a loaded one is picked only when both draws are it (never)."""
    candidates = states([1] * 10)
    candidates[0].in_flight = 50
    balancer = bound(tlb.LeastRequest(seed=2), candidates)
    picks = Counter(balancer.pick(None) for _ in range(10_000))
    assert picks[candidates[0]] == 0
    assert len(picks) == 9


def test_p2c_keeps_load_even_under_concurrency() -> None:
    """Holding many leases open, P2C keeps the in-flight spread within a few requests."""
    pool = tlb.Pool(URLS[:10], tlb.LeastRequest(seed=3), clock=ManualClock())
    leases = [pool.acquire() for _ in range(1000)]
    counts = [e.in_flight for e in pool.stats().endpoints]
    assert max(counts) - min(counts) <= 4, counts
    for lease in leases:
        lease.release()
    assert pool.stats().in_flight == 0


def test_more_choices_compare_more_candidates() -> None:
    """choices=n-1 on n endpoints picks the idle one most of the time."""
    candidates = states([1] * 4)
    for c in candidates[1:]:
        c.in_flight = 1
    balancer = bound(tlb.LeastRequest(choices=8, seed=4), candidates)
    picks = Counter(balancer.pick(None) for _ in range(10_000))
    assert picks[candidates[0]] > 8_500  # 1 - (3/4)^7 of the draws include it


def test_weighted_shares_follow_weights_when_idle() -> None:
    """With nothing in flight, weighted picks are exactly proportional to the weights."""
    candidates = states([5, 1, 1, 3])
    balancer = bound(tlb.LeastRequest(seed=5), candidates)
    picks = Counter(balancer.pick(None) for _ in range(100_000))
    for c in candidates:
        assert picks[c] / 100_000 == pytest.approx(c.weight / 10, abs=0.001)


def test_weighted_formula_shifts_load() -> None:
    """Envoy's weight / (in_flight + 1) ** bias sends a busy heavy endpoint less than its weight."""
    heavy, light = states([2, 1])
    heavy.in_flight = 5  # effective weight 2/6 < 1/1
    balancer = bound(tlb.LeastRequest(seed=6), [heavy, light])
    picks = Counter(balancer.pick(None) for _ in range(10_000))
    assert picks[light] > picks[heavy] * 2


def test_zero_bias_ignores_load() -> None:
    """active_request_bias=0 is plain weighted round robin."""
    heavy, light = states([2, 1])
    heavy.in_flight = 100
    balancer = bound(tlb.LeastRequest(active_request_bias=0.0, seed=7), [heavy, light])
    picks = Counter(balancer.pick(None) for _ in range(30_000))
    assert picks[heavy] == pytest.approx(20_000, abs=2)


def test_full_scan_picks_the_least_loaded() -> None:
    """full_scan=True always returns the endpoint with the fewest requests in flight."""
    candidates = states([1] * 20)
    for i, c in enumerate(candidates):
        c.in_flight = 20 - i
    balancer = bound(tlb.LeastRequest(full_scan=True), candidates)
    assert balancer.pick(None) is candidates[-1]


def test_full_scan_rotates_ties() -> None:
    """full_scan=True uses idle endpoints in turn rather than always the first."""
    candidates = states([1] * 5)
    balancer = bound(tlb.LeastRequest(full_scan=True), candidates)
    assert [balancer.pick(None) for _ in range(10)] == candidates * 2


def test_full_scan_weighted_picks_largest_effective_weight() -> None:
    """full_scan=True with weights picks the largest weight / (in_flight + 1)."""
    a, b, c = states([4, 2, 1])
    a.in_flight = 3  # 1.0
    b.in_flight = 0  # 2.0
    balancer = bound(tlb.LeastRequest(full_scan=True), [a, b, c])
    assert balancer.pick(None) is b


def test_empty_and_single() -> None:
    """No candidate picks None; one candidate is always picked."""
    balancer = bound(tlb.LeastRequest(), [])
    assert balancer.pick(None) is None
    (only,) = states([1])
    balancer.rebuild([only])
    assert balancer.pick(None) is only


def test_pool_round_trip_and_removal() -> None:
    """Through a pool, leases release, and a removed endpoint's late record is harmless."""
    pool = tlb.Pool(URLS[:3], tlb.LeastRequest(), clock=ManualClock())
    lease = pool.acquire()
    pool.remove(lease.url)
    lease.record(status=200)
    for _ in range(100):
        with pool.acquire() as other:
            assert other.url != lease.url
            other.record(status=200)
    assert pool.stats().in_flight == 0


def test_clone_keeps_settings() -> None:
    """A clone is a fresh, unbound balancer with the same settings."""
    balancer = tlb.LeastRequest(3, active_request_bias=0.5, full_scan=True)
    balancer.bind(ManualClock())
    clone = balancer.clone()
    assert (clone.choices, clone.active_request_bias, clone.full_scan) == (3, 0.5, True)
    clone.bind(ManualClock())


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((1,), {}, ValueError, "choices must be >= 2, got 1"),
        ((0,), {}, ValueError, "choices must be >= 2"),
        ((2.0,), {}, TypeError, "choices must be an int"),
        ((True,), {}, TypeError, "choices must be an int"),
        ((), {"active_request_bias": -0.5}, ValueError, "active_request_bias must be >= 0"),
        ((), {"active_request_bias": float("inf")}, ValueError, "active_request_bias"),
        ((), {"active_request_bias": "1"}, TypeError, "active_request_bias must be a number"),
    ],
)
def test_bad_arguments(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """Too few choices or a bad bias is refused with the field and value named."""
    with pytest.raises(error, match=match):
        tlb.LeastRequest(*args, **kwargs)  # type: ignore[arg-type]
