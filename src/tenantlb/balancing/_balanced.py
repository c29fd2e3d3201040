"""What a `Pool` and its `PoolSubset` views share: candidate selection, acquisition and snapshots.

`PoolCore` is the narrow interface between a pool and its views: the lock, the clock, the name, the
outcome observer, the panic threshold and the deadline of the next time-driven change (with the
pool's function that applies it). A view never reads the pool's private state; the pool pushes
membership changes to its live views.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, final

import attrs

from .._clock import Clock
from .._errors import NoHealthyEndpoint
from .._events import Event, EventHandler, EventKind, emit
from ._balancer import Balancer, BalancerBase, EndpointState, OutcomeObserver
from ._endpoint import Endpoint, normalize_url
from ._lease import Lease, LeaseOwner
from ._priority import Tiers

__all__ = ["EndpointStats", "PoolCore", "PoolStats"]


@final
@attrs.define(frozen=True, kw_only=True)
class EndpointStats:
    """A snapshot of one endpoint's live state."""

    url: str
    weight: float
    effective_weight: float
    zone: str | None
    in_flight: int
    requests: int
    failures: int
    healthy: bool
    ejected: bool
    slow_start: bool
    priority: int = 0


@final
@attrs.define(frozen=True, kw_only=True)
class PoolStats:
    """A snapshot of a pool: its endpoints and whether it is in panic mode."""

    name: str
    balancer: str
    endpoints: tuple[EndpointStats, ...]
    total: int
    available: int
    in_flight: int
    panic: bool
    priority_loads: tuple[tuple[int, float], ...] = ()
    """Each priority tier's share of traffic as ``(priority, share)``; empty with one tier."""


@final
class PoolCore:
    """What a pool shares with its subsets (see the module docstring).

    ``next_tick`` is the pool clock reading at which ``tick(now)`` must run (an ejection running
    out, a slow-start step); every acquisition, on the pool or a subset, checks it.
    """

    __slots__ = (
        "clock",
        "lock",
        "name",
        "next_tick",
        "observer",
        "panic_threshold",
        "tick",
        "traffic",
    )

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        panic_threshold: float,
        observer: OutcomeObserver | None,
        tick: Callable[[float], None],
    ) -> None:
        self.name = name
        self.clock = clock
        self.lock = threading.Lock()
        self.panic_threshold = panic_threshold
        self.observer = observer
        self.next_tick = float("inf")
        self.tick = tick
        # Per-request event subscribers. Mutated in place (under the lock) so that the pool, its
        # subsets and their leases all test the same list; hot paths build nothing while it is empty.
        self.traffic: list[EventHandler] = []


class _Balanced:
    """A balanced view of endpoints: the pool itself or one of its subsets."""

    def __init__(
        self, core: PoolCore, balancer: Balancer, members: list[EndpointState], now: float
    ) -> None:
        self._core = core
        self._name = core.name
        self._clock = core.clock
        self._lock = core.lock
        self._traffic = core.traffic
        self._panic = False
        self._members = members
        self._candidates: Sequence[EndpointState] = ()
        self._balancer = balancer
        self._tiers: Tiers | None = None  # None: one priority level, the common case
        self._tier_balancers: dict[int, Balancer] = {}
        # Most strategies inherit BalancerBase's no-op hooks; skipping those saves a call a request.
        cls: Any = type(balancer)  # Any: mypy sees BalancerBase's functions as other types
        base = BalancerBase
        # In-flight hooks (BoundedLoad's running total) go through _acquired/_released, which
        # route them to the balancer of the endpoint's priority tier.
        hooks = getattr(cls, "acquired", base.acquired) is not base.acquired or (
            getattr(cls, "released", base.released) is not base.released
        )
        self._on_acquire: Callable[[EndpointState], None] | None = self._acquired if hooks else None
        observe = (
            None if getattr(cls, "observe", base.observe) is base.observe else balancer.observe
        )
        self._lease_owner = LeaseOwner(
            lock=core.lock,
            clock=core.clock,
            observe=observe,
            observe_now=observe is not None and _takes_now(observe),
            on_release=self._released if hooks else None,
            observer=core.observer,
            name=core.name,
            traffic=core.traffic,
        )
        self._recompute(now, [])

    @property
    def name(self) -> str:
        """The pool's name, used in events, stats and errors."""
        return self._name

    @property
    def balancer(self) -> Balancer:
        """The strategy this pool (or subset) picks with."""
        return self._balancer

    def acquire(self, key: str | bytes | None = None, exclude: Collection[str] = ()) -> Lease:
        """Pick an endpoint and hold it until the lease is recorded or released.

        Args:
            key: Hash key for hashing balancers (client IP, user id, ...); ignored by the others.
            exclude: Normalised URLs not to pick, as `Lease.url` gives them (e.g. those a retry
                already tried). Excluding makes the pick O(n) when the balancer's first choice
                is excluded.

        Returns:
            A `Lease`; use it as a context manager so it is released exactly once.

        Raises:
            NoHealthyEndpoint: The pool is empty or every candidate is excluded.
            TypeError: *key* is not str, bytes or None, or *exclude* is a single string.
        """
        now = self._clock()
        core = self._core
        if now >= core.next_tick:
            core.tick(now)
        if key is not None and type(key) is not bytes:
            key = _key_bytes(key)
        lock = self._lock
        lock.acquire()  # not `with`: this is the hot path, and acquire/release is half the cost
        try:
            tiers = self._tiers
            state = self._balancer.pick(key) if tiers is None else tiers.pick(key)
            if state is None or exclude:
                state = self._pick_excluding(state, exclude)
            state.in_flight += 1
            if self._on_acquire is not None:
                self._on_acquire(state)
        finally:
            lock.release()
        if self._traffic:
            self._picked(state, now)
        return Lease(self._lease_owner, state, now)

    def _picked(self, state: EndpointState, now: float) -> None:
        event = Event(kind="pick", pool=self._name, url=state.url, panic=self._panic, at=now)
        emit(tuple(self._traffic), (event,))

    def _pick_excluding(
        self, first: EndpointState | None, exclude: Collection[str]
    ) -> EndpointState:
        # Slow path (retries, empty pools): the balancer's choice unless excluded, else the
        # least-loaded candidate not excluded, first one on ties.
        if isinstance(exclude, str | bytes):  # `in` would match substrings of one URL
            msg = f"exclude must be a collection of URLs, not a single {type(exclude).__name__}"
            raise TypeError(msg)
        if first is not None and first.url not in exclude:
            return first
        best: EndpointState | None = None
        for state in self._candidates:
            if state.url not in exclude and (best is None or state.in_flight < best.in_flight):
                best = state
        if best is None:
            if not self._members:
                msg = f"pool {self._name!r} has no endpoints"
            elif not self._candidates:
                msg = f"pool {self._name!r} has no available endpoint ({len(self._members)} down)"
            else:
                msg = f"pool {self._name!r}: all {len(self._candidates)} candidates are excluded"
            raise NoHealthyEndpoint(msg)
        return best

    def _recompute(self, now: float, events: list[Event]) -> None:
        # Caller holds the lock. Envoy: panic when the available share drops below the threshold.
        members = self._members
        available = [s for s in members if s.healthy and not s.ejected_until]
        threshold = self._core.panic_threshold
        tiers: Tiers | None = None
        if members and any(s.endpoint.priority != members[0].endpoint.priority for s in members):
            tiers = Tiers(
                members, threshold, self._tier_balancers, self._balancer.clone, self._clock
            )
            panic = tiers.panic
            self._candidates = tiers.candidates
        else:
            self._tier_balancers.clear()
            panic = bool(members) and len(available) < threshold * len(members)
            self._candidates = members if panic else available
        self._tiers = tiers
        if panic != self._panic:
            self._panic = panic
            kind: EventKind = "panic_entered" if panic else "panic_left"
            reason = f"{len(available)}/{len(members)} endpoints available"
            events.append(Event(kind=kind, pool=self._name, reason=reason, at=now))
        self._balancer.rebuild(self._candidates)

    def _acquired(self, state: EndpointState) -> None:
        # In-flight hooks (BoundedLoad's running total) go to the balancer that picked *state*.
        tiers = self._tiers
        balancer = self._balancer if tiers is None else tiers.balancer_of(state)
        hook = getattr(balancer, "acquired", None)
        if hook is not None:
            hook(state)

    def _released(self, state: EndpointState) -> None:
        tiers = self._tiers
        balancer = self._balancer if tiers is None else tiers.balancer_of(state)
        hook = getattr(balancer, "released", None)
        if hook is not None:
            hook(state)

    def stats(self) -> PoolStats:
        """A frozen snapshot of every endpoint's live state and the pool's panic status."""
        with self._lock:
            endpoints = tuple(
                EndpointStats(
                    url=s.url,
                    weight=s.endpoint.weight,
                    effective_weight=s.weight,
                    zone=s.endpoint.zone,
                    in_flight=s.in_flight,
                    requests=s.requests,
                    failures=s.failures,
                    healthy=s.healthy,
                    ejected=s.ejected_until > 0.0,
                    slow_start=s.slow_start_from is not None,
                    priority=s.endpoint.priority,
                )
                for s in self._members
            )
            panic = self._panic
            tiers = self._tiers
            loads = () if tiers is None else tuple(zip(tiers.priorities, tiers.loads, strict=True))
            available = sum(1 for s in self._members if s.healthy and not s.ejected_until)
        return PoolStats(
            name=self._name,
            balancer=type(self._balancer).__name__,
            endpoints=endpoints,
            total=len(endpoints),
            available=available,
            in_flight=sum(e.in_flight for e in endpoints),
            panic=panic,
            priority_loads=loads,
        )

    @property
    def panic(self) -> bool:
        """True while the pool balances across all endpoints because too few are available."""
        return self._panic

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, url: object) -> bool:
        if isinstance(url, Endpoint):
            url = url.url
        if not isinstance(url, str):
            return False
        try:
            url = normalize_url(url)
        except ValueError:
            return False
        return any(s.url == url for s in self._members)

    def __iter__(self) -> Iterator[Endpoint]:
        return iter([s.endpoint for s in self._members])

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints, in the order they were added."""
        return tuple(s.endpoint for s in self._members)


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _takes_now(observe: Callable[..., None]) -> bool:
    # An observe() with a `now` parameter gets the clock reading the lease took for the latency
    # (PeakEWMA: one clock read less per request); the protocol's three arguments otherwise.
    try:
        now = inspect.signature(observe).parameters.get("now")
    except (TypeError, ValueError):  # no signature to read: call it the protocol's way
        return False
    return now is not None and now.kind in _POSITIONAL


def _key_bytes(key: object) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    msg = f"key must be str, bytes or None, got {type(key).__name__}"
    raise TypeError(msg)
