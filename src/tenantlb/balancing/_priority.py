"""Priority tiers (Envoy's priority levels): traffic stays in the best tier while it is healthy
enough and spills over to the next tiers in proportion as its endpoints fail.

Envoy's formulas (load balancing > priority levels): a tier's *health* is its available share
times the overprovisioning factor (1.4), capped at 100 %; the health of all tiers, capped at 100 %,
is the *normalised total health*; tier P gets ``min(100 % - load of better tiers, health_P /
normalised total)``. So two tier-0 endpoints with one ejected give tier 0 ``50 % x 1.4 = 70 %`` and
tier 1 the remaining 30 %. When no tier has any available endpoint, everything goes to tier 0.
Panic mode applies per tier: a tier with fewer than ``panic_threshold`` of its endpoints available
balances across all of them.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from typing import final

from .._clock import Clock
from ._balancer import Balancer, EndpointState

__all__ = ["OVERPROVISIONING_FACTOR", "Tiers", "tier_loads"]

OVERPROVISIONING_FACTOR = 1.4


def tier_loads(available: Sequence[int], total: Sequence[int]) -> list[float]:
    """Each tier's share of traffic (0..1) from its available and total endpoint counts."""
    health = [
        min(1.0, OVERPROVISIONING_FACTOR * a / t) if t else 0.0
        for a, t in zip(available, total, strict=True)
    ]
    normalised = min(1.0, sum(health))
    if normalised == 0.0:
        return [1.0] + [0.0] * (len(health) - 1)  # nothing available anywhere: all to tier 0
    loads: list[float] = []
    remaining = 1.0
    for h in health:
        load = min(remaining, h / normalised)
        loads.append(load)
        remaining -= load
    return loads


@final
class Tiers:
    """The tiers of one pool view: a balancer per tier and the cumulative shares to pick by.

    Built by the view under its lock whenever candidates change; `pick` is O(tiers) + the tier
    balancer's own pick. A hash key picks the tier from the key, so a key stays in its tier.
    """

    __slots__ = ("_balancers", "_cumulative", "candidates", "loads", "panic", "priorities")

    def __init__(
        self,
        members: Sequence[EndpointState],
        panic_threshold: float,
        balancers: dict[int, Balancer],
        make: Callable[[], Balancer],
        clock: Clock,
    ) -> None:
        groups: dict[int, list[EndpointState]] = {}
        for state in members:
            groups.setdefault(state.endpoint.priority, []).append(state)
        self.priorities = sorted(groups)
        avail = [
            [s for s in groups[p] if s.healthy and not s.ejected_until] for p in self.priorities
        ]
        self.loads = tier_loads([len(a) for a in avail], [len(groups[p]) for p in self.priorities])
        cumulative: list[tuple[float, Balancer]] = []
        candidates: list[EndpointState] = []
        panic = False
        total = 0.0
        for priority, available, load in zip(self.priorities, avail, self.loads, strict=True):
            group = groups[priority]
            in_panic = len(available) < panic_threshold * len(group)
            chosen = group if in_panic else available
            balancer = balancers.get(priority)
            if balancer is None:
                balancer = balancers[priority] = make()
                balancer.bind(clock)
            balancer.rebuild(chosen)
            candidates.extend(chosen)
            if load > 0.0:
                panic = panic or in_panic
                total += load
                cumulative.append((total, balancer))
        for stale in [p for p in balancers if p not in groups]:
            del balancers[stale]
        self._balancers = balancers
        self._cumulative = tuple(cumulative)
        self.candidates = candidates
        self.panic = panic

    def pick(self, key: bytes | None) -> EndpointState | None:
        """Draw a tier by its share (by the key's hash when there is a key), then pick in it."""
        u = random.random() if key is None else zlib.crc32(key) / 4294967296.0
        cumulative = self._cumulative
        for bound, balancer in cumulative:
            if u < bound:
                return balancer.pick(key)
        return cumulative[-1][1].pick(key) if cumulative else None

    def balancer_of(self, state: EndpointState) -> Balancer | None:
        """The balancer of *state*'s tier (for in-flight hooks)."""
        return self._balancers.get(state.endpoint.priority)
