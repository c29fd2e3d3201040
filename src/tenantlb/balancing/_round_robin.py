"""`RoundRobin`: smooth weighted round robin, the sequence NGINX produces, at O(1) a pick."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from typing import final

from ._balancer import BalancerBase, EndpointState

__all__ = ["RoundRobin"]

# Largest n x period for which the exact NGINX schedule is precomputed (about 50 ms of work).
_SCHEDULE_BUDGET = 250_000


@final
class RoundRobin(BalancerBase):
    """Smooth weighted round robin (NGINX's algorithm): weights {5, 1, 1} give ``a a b a c a a``.

    NGINX computes each pick in O(n): add every weight to a running "current" value, take the
    largest, subtract the total. The sequence is periodic, so this balancer precomputes one period
    on `rebuild` and each pick is O(1). Equal weights make the schedule plain rotation. When the
    exact schedule would be too large (n x sum of weights / gcd > 250,000, or weights that are not
    whole numbers, e.g. during slow start), it switches to earliest-deadline-first scheduling with
    random start offsets (Envoy's approach): O(log n) a pick, equally smooth in the long run.

    The position in the cycle survives rebuilds (membership, health or weight changes), so a
    low-weight endpoint is never starved by frequent changes.
    """

    def __init__(self) -> None:
        self._schedule: Sequence[EndpointState] | None = ()
        self._cursor = 0
        self._heap: list[tuple[float, int, EndpointState]] = []
        self._rng = random.Random()

    def clone(self) -> RoundRobin:
        return RoundRobin()

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        n = len(candidates)
        previous = self._heap
        self._heap = []
        if n == 0:
            self._schedule = ()
            return
        weights = [c.weight for c in candidates]
        first = weights[0]
        if all(w == first for w in weights):
            self._schedule = tuple(candidates)
        elif all(w.is_integer() for w in weights):
            ints = [int(w) for w in weights]
            divisor = math.gcd(*ints)
            ints = [w // divisor for w in ints]
            if sum(ints) * n <= _SCHEDULE_BUDGET:
                self._schedule = _nginx_schedule(candidates, ints)
            else:
                self._start_edf(candidates, previous)
        else:
            self._start_edf(candidates, previous)
        if self._schedule:
            self._cursor %= len(self._schedule)

    def pick(self, key: bytes | None) -> EndpointState | None:
        schedule = self._schedule
        if schedule is None:
            heap = self._heap
            deadline, order, state = heap[0]
            heapq.heapreplace(heap, (deadline + 1.0 / state.weight, order, state))
            return state
        i = self._cursor
        if i >= len(schedule):
            if not schedule:
                return None
            i = 0
        self._cursor = i + 1
        return schedule[i]

    def _start_edf(
        self, candidates: Sequence[EndpointState], previous: list[tuple[float, int, EndpointState]]
    ) -> None:
        # Survivors keep their deadlines, so frequent rebuilds cannot starve anyone; newcomers
        # start at a random offset in [0, 1/w) from the current virtual time.
        now = previous[0][0] if previous else 0.0
        kept = {id(state): deadline for deadline, _, state in previous}
        rand = self._rng.random
        self._heap = [
            (kept.get(id(c), now + rand() / c.weight), i, c) for i, c in enumerate(candidates)
        ]
        heapq.heapify(self._heap)
        self._schedule = None


def _nginx_schedule(
    candidates: Sequence[EndpointState], weights: list[int]
) -> tuple[EndpointState, ...]:
    # One period of NGINX's smooth weighted round robin; ties go to the earlier endpoint, as there.
    total = sum(weights)
    current = [0] * len(weights)
    order = range(len(weights))
    out: list[EndpointState] = []
    for _ in range(total):
        best = 0
        best_value = -math.inf
        for i in order:
            value = current[i] + weights[i]
            current[i] = value
            if value > best_value:
                best, best_value = i, value
        current[best] -= total
        out.append(candidates[best])
    return tuple(out)
