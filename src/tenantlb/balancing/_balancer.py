"""The extension points of balancing: the `Balancer` and `OutcomeObserver` protocols, and the live
per-endpoint state (`EndpointState`) they both read.

A pool owns one balancer. Whenever the set of candidates changes (membership, health, ejection,
weights, panic), the pool calls ``rebuild(candidates)``; each acquisition calls ``pick(key)`` under the
pool's lock; each recorded outcome calls ``observe(...)``. ``pick`` must be O(1) or O(log n) for n
candidates (FULL_SCAN modes excepted and documented); ``rebuild`` may be O(n) or O(table size).

Two more hooks, ``acquired(state)`` after a lease is taken through this balancer's pool (or
subset) and ``released(state)`` after it is given back, also run under the lock; `BoundedLoad` keeps
its running in-flight total with them. `BalancerBase` gives no-op ``observe``, ``acquired`` and
``released``, and the pool skips calling a no-op it inherits, so a strategy pays only for the hooks
it overrides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

from .._clock import Clock
from ._endpoint import Endpoint

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = ["Balancer", "BalancerBase", "EndpointState", "OutcomeObserver"]


@final
class EndpointState:
    """The live state of one endpoint in a pool, shared by its balancer, its subsets and health.

    Mutated only under the pool's lock. Balancers read ``weight`` (the effective weight, after slow
    start), ``in_flight`` and ``key``; PeakEWMA keeps its moving average in ``ewma`` / ``ewma_at``
    (and ``ewma_score``, the same in the log domain, base 2, for clock-free comparisons).
    """

    __slots__ = (
        "added_at",
        "ejected_until",
        "endpoint",
        "ewma",
        "ewma_at",
        "ewma_score",
        "failures",
        "healthy",
        "in_flight",
        "key",
        "requests",
        "slow_start_from",
        "url",
        "watched",
        "weight",
    )

    def __init__(self, endpoint: Endpoint, now: float) -> None:
        self.endpoint = endpoint
        self.url = endpoint.url
        self.key = endpoint.url.encode()
        self.weight = float(endpoint.weight)
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.healthy = True
        self.ejected_until = 0.0  # 0.0 = not ejected
        self.added_at = now
        self.slow_start_from: float | None = None
        self.ewma = -1.0  # < 0: no sample yet (PeakEWMA uses its default RTT)
        self.ewma_score = -math.inf  # PeakEWMA's log2(ewma) + ewma_at * log2(e) / decay; -inf: none
        # Set by the outcome observer to see this endpoint's successes too (see OutcomeObserver).
        self.watched = False
        self.ewma_at = now

    @property
    def ejected(self) -> bool:
        """True while the endpoint is ejected (by outlier detection or `Pool.eject`)."""
        return self.ejected_until > 0.0

    def __repr__(self) -> str:
        return (
            f"<EndpointState {self.url} weight={self.weight:g} in_flight={self.in_flight}"
            f" healthy={self.healthy} ejected={self.ejected}>"
        )


@runtime_checkable
class Balancer(Protocol):
    """A load-balancing strategy; one instance serves one pool (or one pool subset)."""

    def bind(self, clock: Clock) -> None:
        """Called once by the pool that adopts this balancer, with the pool's clock."""

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        """Adopt a new candidate list (possibly empty)."""

    def pick(self, key: bytes | None) -> EndpointState | None:
        """Return a candidate for a request with hash *key* (None if no key), or None if empty."""

    def observe(self, state: EndpointState, latency: float, failed: bool) -> None:
        """Learn from a finished request (latency in seconds; failed = 5xx, 429 or error).

        An implementation may take a fourth positional parameter named ``now``: the pool then
        passes the clock reading that ended the latency, so the balancer need not read the clock
        again.
        """

    def acquired(self, state: EndpointState) -> None:
        """A lease on *state* was taken through this balancer's pool (or subset)."""

    def released(self, state: EndpointState) -> None:
        """A lease on *state* taken through this balancer's pool (or subset) was given back."""

    def clone(self) -> Balancer:
        """A fresh, unbound balancer with the same settings (pool subsets use one each)."""


class BalancerBase:
    """Convenience base for balancers: stores the clock, guards against sharing, no-op hooks.

    Subclasses implement ``rebuild``, ``pick`` and ``clone``, and override ``observe``,
    ``acquired`` or ``released`` if they need them.
    """

    _clock: Clock | None = None

    def bind(self, clock: Clock) -> None:
        """Remember the pool's *clock*.

        Raises:
            RuntimeError: The balancer is already bound to a pool.
        """
        if self._clock is not None:
            msg = (
                f"{type(self).__name__} is already bound to a pool; "
                "give each pool its own balancer instance"
            )
            raise RuntimeError(msg)
        self._clock = clock

    def observe(self, state: EndpointState, latency: float, failed: bool) -> None:
        """Ignore outcomes (the pool skips calling this no-op); latency-aware strategies override."""
        return None

    def acquired(self, state: EndpointState) -> None:
        """Ignore acquisitions (the pool skips calling this no-op)."""
        return None

    def released(self, state: EndpointState) -> None:
        """Ignore releases (the pool skips calling this no-op)."""
        return None


class OutcomeObserver(Protocol):
    """Something a pool reports every recorded outcome to (the outlier detector implements it).

    ``balancing`` defines this protocol so that ``health`` can implement it without ``balancing``
    importing ``health``.

    Attributes:
        wake_at: A pool clock reading from which on every outcome is reported (for work due at a
            time, like the end of an interval); ``-inf`` to see the next one, ``inf`` for never.
    """

    wake_at: float

    def attach(self, pool: Pool) -> None:
        """Called once when a pool adopts the observer."""

    def observe(
        self, state: EndpointState, status: int | None, error: BaseException | None, now: float
    ) -> None:
        """Called after a recorded failure (an error or a status >= 500), after any outcome of
        an endpoint whose ``state.watched`` the observer set, and after any outcome once the
        pool clock reaches `wake_at`; outside the pool lock.

        Skipping the successes of unwatched endpoints keeps ``record()`` lean: an observer that
        needs a success (to end a run of failures) sets ``state.watched = True`` until it has it.
        """
