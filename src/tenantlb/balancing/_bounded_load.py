"""`BoundedLoad`: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2016)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import final

from .._clock import Clock
from .._validate import positive
from ._balancer import BalancerBase, EndpointState
from ._hashing import hash64
from ._maglev import Maglev
from ._rendezvous import Rendezvous
from ._ring_hash import RingHash

__all__ = ["BoundedLoad"]


@final
class BoundedLoad(BalancerBase):
    """Keep key affinity, but never let one endpoint take more than its bounded share of requests.

    The "consistent hashing with bounded loads" of Google Research, as used by Vimeo and Envoy's
    ``hash_balance_factor``: a key goes to the endpoint the *inner* hashing balancer picks unless
    that endpoint already holds its capacity; then it walks on in the inner balancer's order
    (clockwise on the ring, onwards in the Maglev table, down the rendezvous bids) to the first
    endpoint with room. Keys move away from their home only while it is overloaded.

    Capacity is scaled by weight, as in Envoy (``slots = ceil(total_slots * weight / sum of
    weights)``): an endpoint of weight w may hold
    ``max(1, ceil(balance_factor * (total_in_flight + 1) * w / total_weight))`` requests, so
    a heavier endpoint, which the inner hash already sends more keys, also gets more room. With
    equal weights this is ``ceil(balance_factor * (total_in_flight + 1) / n)``: at the moment it is
    picked, no endpoint holds more than ``ceil(balance_factor * mean in-flight)`` requests (more
    generally, more than ``ceil(balance_factor * its weighted share of the in-flight total)``).
    Weights are the effective ones, so an endpoint in slow start gets less room.

    Cost: the inner pick (O(1) for Maglev, O(log n) for RingHash), plus, when the key's home is
    full, a walk that is short while the bound is loose (about ``1 / (balance_factor - 1)`` steps on
    average, per the paper). The total in flight is kept as a running count through the pool's
    ``acquired`` / ``released`` hooks, so it costs nothing to read; it counts the requests taken
    through this pool (a shuffle-shard subset has its own). ``Rendezvous`` as inner makes every
    busy pick O(n log n).

    With ``key=None`` the home is the inner balancer's random pick and the walk starts at a random
    point, so keyless traffic is spread evenly.

    Args:
        inner: The hashing balancer that gives each key its home and its walk: `RingHash`,
            `Maglev` (default) or `Rendezvous`. It must not be used by another pool.
        balance_factor: How far above the mean an endpoint may go (> 1; Envoy's 1.25 default,
            i.e. ``hash_balance_factor: 125``).

    Raises:
        TypeError: *inner* is not one of the hashing balancers.
        ValueError: ``balance_factor`` <= 1 or not finite.
    """

    def __init__(
        self, inner: RingHash | Maglev | Rendezvous | None = None, balance_factor: float = 1.25
    ) -> None:
        if inner is None:
            inner = Maglev()
        checked: object = inner
        if not isinstance(checked, RingHash | Maglev | Rendezvous):
            msg = f"inner must be a RingHash, Maglev or Rendezvous, got {type(inner).__name__}"
            raise TypeError(msg)
        factor = positive("balance_factor", balance_factor, above=1.0)
        self.inner = inner
        self.balance_factor = float(factor)
        self._candidates: tuple[EndpointState, ...] = ()
        self._members: set[int] = set()  # ids of the candidates, for O(1) membership
        self._total = 0  # requests in flight on the candidates, kept by acquired/released
        self._total_weight = 0.0
        self._uniform = True  # equal weights: the unweighted formula, exact in floating point

    def __repr__(self) -> str:
        return f"BoundedLoad({self.inner!r}, balance_factor={self.balance_factor!r})"

    def bind(self, clock: Clock) -> None:
        super().bind(clock)
        self.inner.bind(clock)

    def clone(self) -> BoundedLoad:
        return BoundedLoad(self.inner.clone(), self.balance_factor)

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        self._candidates = tuple(candidates)
        self._members = {id(state) for state in candidates}
        self._total = sum(state.in_flight for state in candidates)
        self._total_weight = sum(state.weight for state in candidates)
        self._uniform = len({state.weight for state in candidates}) <= 1
        self.inner.rebuild(candidates)

    def acquired(self, state: EndpointState) -> None:
        if id(state) in self._members:
            self._total += 1

    def released(self, state: EndpointState) -> None:
        if id(state) in self._members and self._total > 0:
            self._total -= 1

    def pick(self, key: bytes | None) -> EndpointState | None:
        candidates = self._candidates
        n = len(candidates)
        if n == 0:
            return None
        inner = self.inner
        home = inner.pick(key)
        if home is not None and home.in_flight == 0:
            return home  # capacity is always >= 1: the common, O(1) case
        key_hash = inner.random_hash() if key is None else hash64(key)
        if self._uniform:
            capacity = math.ceil(self.balance_factor * (self._total + 1) / n)
            if home is not None and home.in_flight < capacity:
                return home
            seen: set[int] = set()
            for state in inner.walk(key_hash):
                if state.in_flight < capacity:
                    return state
                seen.add(id(state))
                if len(seen) == n:
                    break
        else:
            # Envoy's weighted slots: ceil(total slots * weight / total weight), at least 1.
            slots = self.balance_factor * (self._total + 1) / self._total_weight
            if home is not None and home.in_flight < max(1, math.ceil(slots * home.weight)):
                return home
            seen = set()
            for state in inner.walk(key_hash):
                if state.in_flight < max(1, math.ceil(slots * state.weight)):
                    return state
                seen.add(id(state))
                if len(seen) == n:
                    break
        # Unreachable in theory (capacities sum to more than the total in flight); kept for safety.
        return min(candidates, key=_in_flight)


def _in_flight(state: EndpointState) -> int:
    return state.in_flight
