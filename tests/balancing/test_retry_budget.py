"""RetryBudget: retries within a share of recent requests plus a floor, over a sliding window."""

from __future__ import annotations

import threading

import pytest

import tenantlb as tlb
from tenantlb.testing import ManualClock


def drain(budget: tlb.RetryBudget) -> int:
    n = 0
    while budget.try_withdraw():
        n += 1
        assert n < 100_000
    return n


def test_ratio_of_requests(clock: ManualClock) -> None:
    """With no floor, 100 requests allow 20 retries at ratio 0.2, and no more."""
    budget = tlb.RetryBudget(ratio=0.2, min_retries_per_second=0, clock=clock)
    for _ in range(100):
        budget.deposit()
    assert drain(budget) == 20
    stats = budget.stats()
    assert stats == tlb.RetryBudgetStats(requests=100, retries=20, exhausted=1, available=0)


def test_floor_without_traffic(clock: ManualClock) -> None:
    """A client without traffic may still retry min_retries_per_second * ttl times per window."""
    budget = tlb.RetryBudget(ratio=0.2, ttl=10.0, min_retries_per_second=1.5, clock=clock)
    assert budget.stats().available == 15
    assert drain(budget) == 15


def test_floor_and_ratio_add_up(clock: ManualClock) -> None:
    """The reserve comes on top of the deposits."""
    budget = tlb.RetryBudget(ratio=0.5, ttl=2.0, min_retries_per_second=1, clock=clock)
    for _ in range(10):
        budget.deposit()
    assert drain(budget) == 5 + 2


def test_deposits_expire_after_ttl(clock: ManualClock) -> None:
    """Requests older than ttl no longer buy retries."""
    budget = tlb.RetryBudget(ratio=1.0, ttl=10.0, min_retries_per_second=0, clock=clock)
    for _ in range(10):
        budget.deposit()
    clock.advance(5.0)
    assert budget.stats().available == 10
    clock.advance(5.5)
    assert budget.stats().available == 0
    assert not budget.try_withdraw()


def test_withdrawals_expire_and_refill(clock: ManualClock) -> None:
    """An exhausted budget recovers once its retries leave the window."""
    budget = tlb.RetryBudget(ratio=0.0, ttl=1.0, min_retries_per_second=3, clock=clock)
    assert drain(budget) == 3
    clock.advance(0.5)
    assert not budget.try_withdraw()
    clock.advance(0.6)
    assert drain(budget) == 3
    clock.advance(100.0)  # a long idle jump clears everything at once
    assert drain(budget) == 3


def test_sliding_not_fixed_window(clock: ManualClock) -> None:
    """Deposits leave the window slice by slice, not all at a boundary."""
    budget = tlb.RetryBudget(ratio=1.0, ttl=10.0, min_retries_per_second=0, clock=clock)
    for _ in range(4):
        budget.deposit()
        clock.advance(3.0)
    # deposits at t=0, 3, 6, 9; now t=12: the one at 0 has left, three remain
    assert budget.stats().available == 3


def test_zero_budget_never_retries(clock: ManualClock) -> None:
    """ratio=0 and no floor disables retries; each refusal is counted."""
    budget = tlb.RetryBudget(ratio=0, min_retries_per_second=0, clock=clock)
    budget.deposit()
    assert not budget.try_withdraw()
    assert not budget.try_withdraw()
    assert budget.stats().exhausted == 2


def test_thread_safe() -> None:
    """Concurrent threads never withdraw more than was deposited."""
    clock = ManualClock(0.0)
    budget = tlb.RetryBudget(ratio=0.5, min_retries_per_second=0, clock=clock)
    granted = []

    def work() -> None:
        mine = 0
        for _ in range(2000):
            budget.deposit()
            if budget.try_withdraw():
                mine += 1
        granted.append(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = budget.stats()
    assert stats.requests == 8000
    assert sum(granted) == stats.retries == 4000
    assert stats.retries + stats.exhausted == 8000


def test_stats_are_frozen(clock: ManualClock) -> None:
    """The snapshot cannot be changed."""
    stats = tlb.RetryBudget(clock=clock).stats()
    with pytest.raises(AttributeError):
        stats.retries = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ratio": -0.1}, ValueError, "ratio must be >= 0"),
        ({"ratio": float("inf")}, ValueError, "ratio must be >= 0 and finite"),
        ({"ratio": "0.2"}, TypeError, "ratio must be a number, got str"),
        ({"ttl": 0}, ValueError, "ttl must be > 0"),
        ({"ttl": True}, TypeError, "ttl must be a number, got bool"),
        ({"min_retries_per_second": -1}, ValueError, "min_retries_per_second must be >= 0"),
        ({"clock": 3.0}, TypeError, "clock must be a callable"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    """Bad parameters raise TypeError / ValueError naming the parameter and the value."""
    with pytest.raises(error, match=match):
        tlb.RetryBudget(**kwargs)  # type: ignore[arg-type]


def test_repr() -> None:
    """The repr shows the configuration."""
    assert repr(tlb.RetryBudget()) == "RetryBudget(ratio=0.2, ttl=10, min_retries_per_second=10)"
