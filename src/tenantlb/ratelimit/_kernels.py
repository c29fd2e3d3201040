"""Each built-in algorithm's `Algorithm.step`, specialised to one rate as a closure (a *kernel*).

Why: `MemoryStore` decides in-process on every request, and the generic ``step(state, rate, now,
cost)`` pays for a method call, attribute lookups on the rate and a `Step` NamedTuple each time
(~1.5 us of a ~2 us decision). A kernel has the rate's constants in closure cells and returns a
plain tuple ``(allowed, state, remaining, reset_after, retry_after)``, so a decision costs well
under a microsecond, and a few kernels decide several rates atomically.

The formulas are those of `tenantlb.ratelimit._algorithms`, operation for operation, so every
result is bit-identical (tests/ratelimit/test_exactness.py checks it with hypothesis against
`Algorithm.step` over random rates, arrivals and costs). ``max(0.0, x)`` is written
``x if x > 0.0 else 0.0`` and ``min(b, x)`` ``x if x < b else b`` (the same value in every
case, signed zeros and NaN included), and ``float(math.floor(q))`` is ``q // 1.0`` (equal for
every q): no builtin calls. Change a formula there, change it here.
"""

from __future__ import annotations

from collections.abc import Callable

from ._algorithms import EPSILON, GCRA, Algorithm, FixedWindow, SlidingWindow, State, TokenBucket
from ._rate import Rate

__all__ = ["Kernel", "KernelResult", "kernel"]

KernelResult = tuple[bool, State | None, float, float, float]
"""``(allowed, state, remaining, reset_after, retry_after)``: a `Step` as a plain tuple."""

Kernel = Callable[[State | None, float, float], KernelResult]
"""``kernel(state, now, cost)``: `Algorithm.step` for one fixed rate."""


def kernel(algorithm: Algorithm, rate: Rate) -> Kernel | None:
    """The kernel of *algorithm* for *rate*, or None for an algorithm without one (user-defined)."""
    build = _BUILDERS.get(type(algorithm))
    return None if build is None else build(rate)


def _gcra(rate: Rate) -> Kernel:
    interval = rate.per / rate.limit
    tau = rate.burst * interval
    eps = EPSILON * interval

    def step(state: State | None, now: float, cost: float) -> KernelResult:
        tat = state[0] if state is not None and state[0] > now else now
        new = tat + cost * interval
        allow_at = new - tau
        if allow_at - now <= eps:
            remaining = (now - allow_at) / interval
            return True, (new,), remaining if remaining > 0.0 else 0.0, new - now, 0.0
        remaining = (now + tau - tat) / interval
        return False, state, remaining if remaining > 0.0 else 0.0, tat - now, allow_at - now

    return step


def _token_bucket(rate: Rate) -> Kernel:
    refill = rate.limit / rate.per
    burst = rate.burst

    def step(state: State | None, now: float, cost: float) -> KernelResult:
        if state is None:
            tokens = burst
        else:
            tokens = state[0] + (now - state[1]) * refill
            tokens = tokens if tokens < burst else burst
        if cost <= tokens + EPSILON:
            left = tokens - cost
            left = left if left > 0.0 else 0.0
            return True, (left, now), left, (burst - left) / refill, 0.0
        return False, state, tokens, (burst - tokens) / refill, (cost - tokens) / refill

    return step


def _sliding_window(rate: Rate) -> Kernel:
    per, limit = rate.per, rate.limit
    ceiling = limit + EPSILON
    span = 2 * per

    def step(state: State | None, now: float, cost: float) -> KernelResult:
        idx = now / per // 1.0
        prev = cur = 0.0
        if state is not None:
            if state[0] == idx:
                prev, cur = state[1], state[2]
            elif state[0] == idx - 1:
                prev = state[2]
        start = idx * per
        est = prev * (1 - (now - start) / per) + cur
        if est + cost <= ceiling:
            remaining = limit - est - cost
            return (
                True,
                (idx, prev, cur + cost),
                remaining if remaining > 0.0 else 0.0,
                start + span - now,
                0.0,
            )
        room = limit - cur - cost
        if room >= 0 and prev > 0:
            retry = start + per * (1 - room / prev) - now
        elif cur > 0:
            retry = start + per + per * (1 - (limit - cost) / cur) - now
        else:
            retry = start + per - now
        if cur > 0:
            reset = start + span - now
        elif prev > 0:
            reset = start + per - now
        else:
            reset = 0.0
        remaining = limit - est
        return (
            False,
            state,
            remaining if remaining > 0.0 else 0.0,
            reset,
            retry if retry > 0.0 else 0.0,
        )

    return step


def _fixed_window(rate: Rate) -> Kernel:
    per, limit = rate.per, rate.limit
    ceiling = limit + EPSILON

    def step(state: State | None, now: float, cost: float) -> KernelResult:
        idx = now / per // 1.0
        count = state[1] if state is not None and state[0] == idx else 0.0
        left = (idx + 1) * per - now
        if count + cost <= ceiling:
            remaining = limit - count - cost
            return True, (idx, count + cost), remaining if remaining > 0.0 else 0.0, left, 0.0
        remaining = limit - count
        return False, state, remaining if remaining > 0.0 else 0.0, left, left

    return step


_BUILDERS: dict[type[Algorithm], Callable[[Rate], Kernel]] = {
    GCRA: _gcra,
    TokenBucket: _token_bucket,
    SlidingWindow: _sliding_window,
    FixedWindow: _fixed_window,
}
