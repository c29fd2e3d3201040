"""`PeakEWMA`: latency-aware picking (Finagle's peak exponentially weighted moving average)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import final

from .._validate import positive
from ._balancer import BalancerBase, EndpointState

__all__ = ["PeakEWMA"]

# A cost floor, so that a zero-latency sample (a manual clock, a cached reply) still lets the
# number of requests in flight tell endpoints apart.
_MIN_COST = 1e-6
_exp = math.exp
_log = math.log
_NO_SAMPLE = -math.inf  # EndpointState.ewma_score before the first sample
# ln(in_flight + 1) for the common small counts: a tuple index instead of a call.
_COUNTS = 256
_LOG_COUNT = tuple(math.log(k + 1) for k in range(_COUNTS))


@final
class PeakEWMA(BalancerBase):
    """Send each request where it is expected to finish first (Finagle's / linkerd's Peak-EWMA).

    Each endpoint's *cost* is a moving average of its round-trip time that is peak-sensitive: a
    sample slower than the average replaces it at once, a faster one pulls it down with weight
    ``1 - exp(-Δt/τ)`` (Δt since the previous sample, τ = ``decay``), so the estimate reacts to a
    slowdown immediately and forgets it over about τ seconds. While an endpoint receives no samples
    its cost decays toward zero with the same τ, so an endpoint that was slow is probed again
    after a while instead of being shunned forever. An endpoint without samples costs
    ``default_rtt``.

    A request goes to the cheaper of two random candidates (power of two choices), where
    ``load = cost * (in_flight + 1) / weight``: O(1) a pick. Weights (and slow start) bias the
    choice, but shares are not proportional to weights: latency decides. The average lives on the
    pool's `EndpointState` (``ewma``, ``ewma_at``) and is timed with the pool's clock.

    Failures (5xx, 429, errors) are penalised: a failed request counts as a sample of
    ``max(latency, failure_penalty, 2 * current cost)``, so an endpoint that fails fast (an
    instant 503) looks slow, not fast, and each further failure doubles its cost. Set
    ``failure_penalty`` well above your normal latency.

    Args:
        decay: τ, the time constant of the average in seconds (> 0). Default 10 s, as in Finagle.
        default_rtt: The cost of an endpoint with no sample yet, in seconds (> 0).
        failure_penalty: The smallest latency a failed request counts as, in seconds (> 0).
        seed: Seed for the random choice of the two candidates (None: from the OS).

    Raises:
        ValueError: A non-positive or non-finite number.
    """

    def __init__(
        self,
        decay: float = 10.0,
        *,
        default_rtt: float = 0.030,
        failure_penalty: float = 1.0,
        seed: int | None = None,
    ) -> None:
        positive("decay", decay)
        positive("default_rtt", default_rtt)
        positive("failure_penalty", failure_penalty)
        self.decay = float(decay)
        self.default_rtt = float(default_rtt)
        self.failure_penalty = float(failure_penalty)
        self._seed = seed
        self._rng = random.Random(seed)
        self._candidates: Sequence[EndpointState] = ()
        self._log_weights: tuple[float, ...] = ()

    def __repr__(self) -> str:
        return (
            f"PeakEWMA(decay={self.decay!r}, default_rtt={self.default_rtt!r},"
            f" failure_penalty={self.failure_penalty!r})"
        )

    def clone(self) -> PeakEWMA:
        return PeakEWMA(
            self.decay,
            default_rtt=self.default_rtt,
            failure_penalty=self.failure_penalty,
            seed=self._seed,
        )

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        self._candidates = tuple(candidates)
        self._log_weights = tuple(math.log(c.weight) for c in candidates)

    def pick(self, key: bytes | None) -> EndpointState | None:
        candidates = self._candidates
        n = len(candidates)
        if n <= 1:
            return candidates[0] if n else None
        # Two distinct candidates from one draw: the integer part picks the first, the fraction
        # (still 30+ random bits for any realistic n) the second.
        r = self._rng.random() * n
        i = int(r)
        j = int((r - i) * (n - 1))
        if j >= i:
            j += 1
        a = candidates[i]
        b = candidates[j]
        score_a = a.ewma_score
        score_b = b.ewma_score
        if score_a == _NO_SAMPLE or score_b == _NO_SAMPLE:
            return self._pick_cold(a, b)
        # Compare ln(load) = ln(cost) + elapsed decay + ln(in_flight + 1) - ln(weight): the
        # decay to "now" is the same -now/tau on both sides, so no clock read and no exp().
        in_a = a.in_flight
        in_b = b.in_flight
        log_weights = self._log_weights
        load_a = score_a + (_LOG_COUNT[in_a] if in_a < _COUNTS else _log(in_a + 1)) - log_weights[i]
        load_b = score_b + (_LOG_COUNT[in_b] if in_b < _COUNTS else _log(in_b + 1)) - log_weights[j]
        return a if load_a <= load_b else b

    def _pick_cold(self, a: EndpointState, b: EndpointState) -> EndpointState:
        # One candidate has no sample yet: it costs default_rtt, undecayed, so compare at now.
        load_a = self.cost(a) * (a.in_flight + 1) / a.weight
        load_b = self.cost(b) * (b.in_flight + 1) / b.weight
        return a if load_a <= load_b else b

    def observe(self, state: EndpointState, latency: float, failed: bool) -> None:
        clock = self._clock
        now = clock() if clock is not None else state.ewma_at
        cost = state.ewma
        if failed:
            current = self.default_rtt if cost < 0.0 else cost
            latency = max(latency, self.failure_penalty, 2.0 * current)
        tau = self.decay
        if cost < 0.0 or latency > cost:
            cost = latency  # first sample, or a peak: adopt it at once
        else:
            elapsed = now - state.ewma_at
            if elapsed > 0.0:
                w = _exp(-elapsed / tau)
                cost = cost * w + latency * (1.0 - w)
        state.ewma = cost
        state.ewma_at = now
        # What pick compares: ln(cost decayed to time 0), i.e. ln(cost) + ewma_at / tau.
        state.ewma_score = _log(cost if cost > _MIN_COST else _MIN_COST) + now / tau

    def cost(self, state: EndpointState) -> float:
        """The current latency estimate of *state* in seconds (decayed to the clock's now)."""
        cost = state.ewma
        if cost < 0.0:
            return self.default_rtt
        clock = self._clock
        idle = clock() - state.ewma_at if clock is not None else 0.0
        if idle > 0.0:
            cost *= _exp(-idle / self.decay)
        return max(cost, _MIN_COST)
