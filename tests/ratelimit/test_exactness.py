"""Exactness, checked by hypothesis over rates, bursts, costs and arrival patterns on a manual clock.

Bucket algorithms (GCRA, token bucket): in every interval [s, t] the admitted cost is at most
``burst + (t - s) * limit / per``, and a request is denied only if admitting it would break that
bound for some interval ending now (so nothing is under-admitted either). Window algorithms: every
aligned window admits at most ``limit``; a fixed window denies only when its count is full, a
sliding window admits at most ``2 * limit`` in any span of ``per``.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from tenantlb import MemoryStore, Rate, RateLimiter
from tenantlb.testing import ManualClock

TOL = 1e-6  # the algorithms' EPSILON, in cost units

rates = st.builds(
    lambda limit, per, burst_factor: Rate(
        limit, per=per, burst=max(1, round(limit * burst_factor))
    ),
    limit=st.integers(1, 40),
    per=st.sampled_from([0.5, 1.0, 2.0, 10.0, 60.0]),
    burst_factor=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
)
# (gap before the request in fractions of per, cost as a fraction of the capacity)
arrivals = st.lists(
    st.tuples(
        st.one_of(st.just(0.0), st.floats(0.0, 1.5, allow_nan=False)),
        st.one_of(st.just(1.0), st.floats(0.01, 1.0, allow_nan=False)),
    ),
    min_size=1,
    max_size=80,
)


def run(
    algorithm: str,
    rate: Rate,
    pattern: list[tuple[float, float]],
    integral: bool,
    *others: Rate,
) -> list[tuple[float, float, bool]]:
    clock = ManualClock(1000.0)
    lim = RateLimiter([rate, *others], store=MemoryStore(clock), algorithm=algorithm)
    events = []
    for gap, fraction in pattern:
        clock.advance(gap * rate.per)
        cost = fraction * lim.max_cost
        if integral:
            cost = max(1.0, math.floor(cost))
        events.append((clock(), cost, lim.acquire_nowait("k", cost).allowed))
    return events


def check_bucket(rate: Rate, events: list[tuple[float, float, bool]]) -> None:
    refill = rate.limit / rate.per
    admitted = [(t, c) for t, c, ok in events if ok]
    for i, (start, _) in enumerate(admitted):
        total = 0.0
        for t, c in admitted[i:]:
            total += c
            assert total <= rate.burst + (t - start) * refill + TOL, (start, t, total)
    for now, cost, ok in events:
        if ok:
            continue
        # Denied: some interval [s, now] would exceed the envelope with this cost added.
        before = [(t, c) for t, c in admitted if t <= now]
        worst = cost - rate.burst
        for i, (start, _) in enumerate(before):
            spent = sum(c for _, c in before[i:])
            worst = max(worst, spent + cost - rate.burst - (now - start) * refill)
        assert worst > -TOL, (now, cost, worst)


@settings(max_examples=150, deadline=None)
@given(rate=rates, pattern=arrivals, integral=st.booleans())
def test_gcra_is_exact(rate: Rate, pattern: list[tuple[float, float]], integral: bool) -> None:
    """GCRA admits exactly the envelope burst + elapsed * limit / per, never more, never less."""
    check_bucket(rate, run("gcra", rate, pattern, integral))


@settings(max_examples=150, deadline=None)
@given(rate=rates, pattern=arrivals, integral=st.booleans())
def test_token_bucket_is_exact(
    rate: Rate, pattern: list[tuple[float, float]], integral: bool
) -> None:
    """The token bucket admits exactly the same envelope as GCRA."""
    check_bucket(rate, run("token_bucket", rate, pattern, integral))


def windows(rate: Rate, events: list[tuple[float, float, bool]]) -> dict[int, float]:
    spent: dict[int, float] = {}
    for t, c, ok in events:
        if ok:
            index = math.floor(t / rate.per)
            spent[index] = spent.get(index, 0.0) + c
    return spent


@settings(max_examples=150, deadline=None)
@given(rate=rates, pattern=arrivals, integral=st.booleans())
def test_fixed_window_is_exact(
    rate: Rate, pattern: list[tuple[float, float]], integral: bool
) -> None:
    """A fixed window admits at most limit per window and denies only when the window is full."""
    events = run("fixed_window", rate, pattern, integral)
    assert all(total <= rate.limit + TOL for total in windows(rate, events).values())
    spent: dict[int, float] = {}
    for t, c, ok in events:
        index = math.floor(t / rate.per)
        if ok:
            spent[index] = spent.get(index, 0.0) + c
        else:
            assert spent.get(index, 0.0) + c > rate.limit - TOL


@settings(max_examples=150, deadline=None)
@given(rate=rates, pattern=arrivals, integral=st.booleans())
def test_sliding_window_is_bounded(
    rate: Rate, pattern: list[tuple[float, float]], integral: bool
) -> None:
    """A sliding window admits at most limit per aligned window and 2 * limit in any span of per."""
    events = run("sliding_window", rate, pattern, integral)
    assert all(total <= rate.limit + TOL for total in windows(rate, events).values())
    admitted = [(t, c) for t, c, ok in events if ok]
    for i, (start, _) in enumerate(admitted):
        span = sum(c for t, c in admitted[i:] if t < start + rate.per)
        assert span <= 2 * rate.limit + TOL


@settings(max_examples=100, deadline=None)
@given(
    algorithm=st.sampled_from(["gcra", "token_bucket"]),
    rate=rates,
    other=rates,
    pattern=arrivals,
    integral=st.booleans(),
)
def test_two_bucket_rates_each_stay_exact(
    algorithm: str, rate: Rate, other: Rate, pattern: list[tuple[float, float]], integral: bool
) -> None:
    """With two rates (the two-rate fast path), the admitted cost stays within both envelopes."""
    events = run(algorithm, rate, pattern, integral, other)
    for each in (rate, other):
        refill = each.limit / each.per
        admitted = [(t, c) for t, c, ok in events if ok]
        for i, (start, _) in enumerate(admitted):
            total = 0.0
            for t, c in admitted[i:]:
                total += c
                assert total <= each.burst + (t - start) * refill + TOL, (each, start, t, total)


@settings(max_examples=100, deadline=None)
@given(
    algorithm=st.sampled_from(["sliding_window", "fixed_window"]),
    rate=rates,
    other=rates,
    pattern=arrivals,
    integral=st.booleans(),
)
def test_two_window_rates_each_stay_exact(
    algorithm: str, rate: Rate, other: Rate, pattern: list[tuple[float, float]], integral: bool
) -> None:
    """With two rates (the two-rate fast path), every aligned window of each admits at most its limit."""
    events = run(algorithm, rate, pattern, integral, other)
    for each in (rate, other):
        assert all(total <= each.limit + TOL for total in windows(each, events).values())
