"""`LeastRequest`: fewest requests in flight, by power of two choices (Envoy's least request)."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from typing import final

from .._validate import count, positive
from ._balancer import BalancerBase, EndpointState

__all__ = ["LeastRequest"]


@final
class LeastRequest(BalancerBase):
    """Prefer the endpoint with the fewest requests in flight (Envoy's ``LEAST_REQUEST``).

    When all candidates have the same weight, each pick draws ``choices`` random candidates and
    takes the one with the fewest requests in flight: "power of two choices" for the default 2,
    O(choices) a pick, and nearly as good as a full scan at spreading load (Mitzenmacher).

    When weights differ, Envoy's formula applies: the effective weight of an endpoint is
    ``weight / (in_flight + 1) ** active_request_bias``, and picks follow earliest-deadline-first
    scheduling over effective weights, each re-evaluated when the endpoint is picked: O(log n) a
    pick, exactly proportional to the weights while nothing is in flight, and shifting traffic
    away from endpoints that accumulate requests. A bias of 0 ignores load (plain weighted round
    robin); larger biases react more strongly.

    ``full_scan=True`` is the documented O(n) mode: every pick scans all candidates for the
    smallest ``in_flight`` (equal weights) or the largest effective weight (weights differ); ties go
    to the candidate after the previous pick, so idle endpoints are used in turn.

    Args:
        choices: How many random candidates to compare (>= 2); the two of P2C are distinct.
        active_request_bias: Exponent of the in-flight penalty for weighted endpoints (>= 0).
        full_scan: Scan every candidate on each pick instead of sampling (O(n)).
        seed: Seed for the random draws (None: from the OS).

    Raises:
        TypeError: ``choices`` is not an int.
        ValueError: ``choices`` < 2 or a negative or non-finite bias.
    """

    def __init__(
        self,
        choices: int = 2,
        *,
        active_request_bias: float = 1.0,
        full_scan: bool = False,
        seed: int | None = None,
    ) -> None:
        count("choices", choices, minimum=2)
        bias = positive("active_request_bias", active_request_bias, allow_equal=True)
        self.choices = choices
        self.active_request_bias = float(bias)
        self.full_scan = bool(full_scan)
        self._seed = seed
        self._rng = random.Random(seed)
        self._candidates: tuple[EndpointState, ...] = ()
        self._weighted = False
        self._heap: list[tuple[float, int, EndpointState]] = []
        self._next = 0

    def __repr__(self) -> str:
        return (
            f"LeastRequest(choices={self.choices}, active_request_bias={self.active_request_bias!r},"
            f" full_scan={self.full_scan})"
        )

    def clone(self) -> LeastRequest:
        return LeastRequest(
            self.choices,
            active_request_bias=self.active_request_bias,
            full_scan=self.full_scan,
            seed=self._seed,
        )

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        self._candidates = tuple(candidates)
        weights = {c.weight for c in candidates}
        self._weighted = len(weights) > 1
        self._heap = []
        if self._weighted and not self.full_scan:
            # Random offsets in [0, 1/w): no endpoint always goes first after a rebuild.
            rand = self._rng.random
            self._heap = [
                (rand() / self._effective(c), i, c) for i, c in enumerate(self._candidates)
            ]
            heapq.heapify(self._heap)
        if self._candidates:
            self._next %= len(self._candidates)

    def pick(self, key: bytes | None) -> EndpointState | None:
        candidates = self._candidates
        n = len(candidates)
        if n <= 1:
            return candidates[0] if n else None
        if self.full_scan:
            return self._scan(candidates, n)
        if self._weighted:
            heap = self._heap
            deadline, order, state = heap[0]
            heapq.heapreplace(heap, (deadline + 1.0 / self._effective(state), order, state))
            return state
        rand = self._rng.random
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        best = candidates[i]
        other = candidates[j]
        if other.in_flight < best.in_flight:
            best = other
        for _ in range(self.choices - 2):
            other = candidates[int(rand() * n)]
            if other.in_flight < best.in_flight:
                best = other
        return best

    def _effective(self, state: EndpointState) -> float:
        # Envoy: weight / (active_requests + 1) ^ active_request_bias.
        bias = self.active_request_bias
        if bias == 0.0:
            return state.weight
        if bias == 1.0:
            return state.weight / (state.in_flight + 1)
        penalty: float = (state.in_flight + 1) ** bias
        return state.weight / penalty

    def _scan(self, candidates: tuple[EndpointState, ...], n: int) -> EndpointState:
        start = self._next
        best_index = start
        if self._weighted:
            best_value = -1.0
            for k in range(n):
                i = (start + k) % n
                value = self._effective(candidates[i])
                if value > best_value:
                    best_index, best_value = i, value
        else:
            least = math.inf
            for k in range(n):
                i = (start + k) % n
                in_flight = candidates[i].in_flight
                if in_flight < least:
                    best_index, least = i, in_flight
        self._next = (best_index + 1) % n
        return candidates[best_index]
