"""`WeightedRandom`: each pick independent, with probability proportional to weight, O(1)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import final

from ._balancer import BalancerBase, EndpointState

__all__ = ["WeightedRandom"]


@final
class WeightedRandom(BalancerBase):
    """Pick each endpoint at random with probability ``weight / total weight``.

    Uses Vose's alias method: `rebuild` prepares two tables in O(n) and each pick is O(1) (one
    random number, one comparison), whatever the number of endpoints or the spread of weights.
    Unlike `RoundRobin` picks are independent, so short runs are lumpier, but several processes
    need no coordination to spread load the same way.

    Args:
        seed: Seed for the random draws (None: from the OS).
    """

    def __init__(self, *, seed: int | None = None) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self._candidates: tuple[EndpointState, ...] = ()
        self._prob: list[float] = []
        self._alias: list[int] = []
        self._uniform = True

    def __repr__(self) -> str:
        return "WeightedRandom()"

    def clone(self) -> WeightedRandom:
        return WeightedRandom(seed=self._seed)

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        self._candidates = tuple(candidates)
        weights = [c.weight for c in candidates]
        self._uniform = len(set(weights)) <= 1
        if self._uniform:
            self._prob, self._alias = [], []
        else:
            self._prob, self._alias = _alias_tables(weights)

    def pick(self, key: bytes | None) -> EndpointState | None:
        candidates = self._candidates
        n = len(candidates)
        if n == 0:
            return None
        u = self._rng.random() * n
        i = int(u)
        if self._uniform or u - i < self._prob[i]:
            return candidates[i]
        return candidates[self._alias[i]]


def _alias_tables(weights: list[float]) -> tuple[list[float], list[int]]:
    # Vose's alias method: column i keeps itself with probability prob[i], else goes to alias[i].
    n = len(weights)
    total = sum(weights)
    scaled = [w * n / total for w in weights]
    prob = [1.0] * n
    alias = list(range(n))
    small = [i for i, p in enumerate(scaled) if p < 1.0]
    large = [i for i, p in enumerate(scaled) if p >= 1.0]
    while small and large:
        s = small.pop()
        g = large.pop()
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    # Leftovers are 1.0 up to rounding: they keep themselves.
    return prob, alias
