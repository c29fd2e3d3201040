"""`Pool`: endpoints, their live state and a balancer; `Lease`: one request's hold on an endpoint.

```python
pool = Pool(["http://10.0.0.1:8000", Endpoint("http://10.0.0.2:8000", weight=2)])
with pool.acquire() as lease:
    response = send(lease.endpoint.url)
    lease.record(status=response.status_code)
```

Availability follows Envoy: the balancer sees only endpoints that are healthy and not ejected, unless
fewer than ``panic_threshold`` of them are, in which case it balances across all of them (panic mode)
rather than overload the few that remain. Slow start ramps an endpoint's weight after it joins, or
returns to health, with Envoy's formula (see `SlowStart`).

Picking and recording are synchronous and never block beyond a short, uncontended lock, so one pool
serves threads, asyncio and trio alike. Time-driven changes (an ejection running out, a slow-start
step) are applied lazily at the next acquisition that finds a deadline passed: no background task.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, final

import attrs
from cachetools import LRUCache

from .._clock import Clock, default_clock
from .._errors import EndpointNotFound, NoHealthyEndpoint
from .._events import Event, EventHandler, EventKind, emit
from ._balancer import Balancer, BalancerBase, EndpointState, OutcomeObserver
from ._endpoint import Endpoint, normalize_url

if TYPE_CHECKING:
    from typing import Self

__all__ = ["EndpointStats", "Lease", "Pool", "PoolStats", "PoolSubset", "SlowStart"]

_INF = math.inf


@final
@attrs.define(frozen=True, kw_only=True)
class SlowStart:
    """Ramp a new endpoint's weight up over ``window`` seconds (Envoy's slow start mode).

    ``weight * max(min_weight_percent / 100, time_factor ** (1 / aggression))`` with
    ``time_factor = max(seconds_since_start, 1) / window``. An endpoint enters slow start when it is
    added to a running pool or returns to health; endpoints the pool starts with do not (they are all
    equally cold). Weighted strategies honour it; hashing strategies see the ramped weight too, so
    keys may move during the window.

    Attributes:
        window: Length of the ramp in seconds (> 0).
        aggression: Curve shape (> 0); 1.0 is linear, larger ramps faster early on.
        min_weight_percent: Floor of the ramped weight, in percent of the full weight (0-100].
    """

    window: float
    aggression: float = 1.0
    min_weight_percent: float = 10.0

    def __attrs_post_init__(self) -> None:
        for name in ("window", "aggression"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                msg = f"slow_start.{name} must be > 0, got {value!r}"
                raise ValueError(msg)
        pct = self.min_weight_percent
        if not (isinstance(pct, int | float) and 0 < pct <= 100):
            msg = f"slow_start.min_weight_percent must be in (0, 100], got {pct!r}"
            raise ValueError(msg)

    def factor(self, age: float) -> float:
        """The weight multiplier for an endpoint *age* seconds into its slow start (1.0 when done)."""
        time_factor = max(age, 1.0) / self.window
        if time_factor >= 1.0:
            return 1.0
        ramped: float = time_factor ** (1.0 / self.aggression)
        return max(self.min_weight_percent / 100.0, ramped)

    @property
    def step(self) -> float:
        """How often ramped weights are recomputed: 1/20 of the window, at least 50 ms."""
        return max(self.window / 20.0, 0.05)


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


class _Balanced:
    """What a pool and its subsets share: candidate selection, acquisition and release."""

    _lock: threading.Lock
    _clock: Clock
    _root: Pool
    _members: list[EndpointState]
    _candidates: Sequence[EndpointState]
    _balancer: Balancer
    _observe: Callable[[EndpointState, float, bool], None] | None
    _on_acquire: Callable[[EndpointState], None] | None
    _on_release: Callable[[EndpointState], None] | None
    _observer: OutcomeObserver | None
    _panic: bool
    _panic_threshold: float
    _name: str

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
        root = self._root
        if now >= root._next_tick:
            root._tick(now)
        if key is not None and type(key) is not bytes:
            key = _key_bytes(key)
        lock = self._lock
        lock.acquire()  # not `with`: this is the hot path, and acquire/release is half the cost
        try:
            state = self._balancer.pick(key)
            if state is None or exclude:
                state = self._pick_excluding(state, exclude)
            state.in_flight += 1
            if self._on_acquire is not None:
                self._on_acquire(state)
        finally:
            lock.release()
        return Lease(self, state, now)

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

    def _release(self, state: EndpointState) -> None:
        with self._lock:
            state.in_flight -= 1
            if self._on_release is not None:
                self._on_release(state)

    def _adopt(self, balancer: Balancer) -> None:
        self._balancer = balancer
        # Most strategies ignore outcomes; skipping their no-op observe() saves a call per record.
        observe = getattr(type(balancer), "observe", None)
        self._observe = None if observe is BalancerBase.observe else balancer.observe
        # Optional in-flight hooks (BoundedLoad keeps a running total with them).
        self._on_acquire = getattr(balancer, "acquired", None)
        self._on_release = getattr(balancer, "released", None)

    def _recompute(self, now: float, events: list[Event]) -> None:
        # Caller holds the lock. Envoy: panic when the available share drops below the threshold.
        members = self._members
        available = [s for s in members if s.healthy and not s.ejected_until]
        panic = bool(members) and len(available) < self._panic_threshold * len(members)
        if panic != self._panic:
            self._panic = panic
            kind: EventKind = "panic_entered" if panic else "panic_left"
            reason = f"{len(available)}/{len(members)} endpoints available"
            events.append(Event(kind=kind, pool=self._name, reason=reason, at=now))
        self._candidates = members if panic else available
        self._balancer.rebuild(self._candidates)

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
                )
                for s in self._members
            )
            panic = self._panic
            available = sum(1 for s in self._members if s.healthy and not s.ejected_until)
        return PoolStats(
            name=self._name,
            balancer=type(self._balancer).__name__,
            endpoints=endpoints,
            total=len(endpoints),
            available=available,
            in_flight=sum(e.in_flight for e in endpoints),
            panic=panic,
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


@final
class Pool(_Balanced):
    """A set of endpoints, their live state and a balancer.

    Args:
        endpoints: URL strings or `Endpoint` objects; duplicates are an error.
        balancer: The strategy (default `PeakEWMA`); each pool needs its own instance.
        name: A label for events, stats and errors.
        clock: Seconds as a float (default `time.monotonic`); latency and deadlines use it.
        panic_threshold: Fraction (0-1) of endpoints that must be available before the pool stops
            balancing across all of them; 0 disables panic mode. Default 0.5 as in Envoy.
        slow_start: Ramp new endpoints up with `SlowStart`; None (default) disables it.
        outlier_detector: Something implementing `OutcomeObserver` (``tenantlb.OutlierDetector``).
        on_event: A handler called with each `Event` (more with `subscribe`).

    Raises:
        ValueError: Duplicate endpoints, or a bad threshold.
        TypeError: An endpoint that is neither a str nor an `Endpoint`.
    """

    def __init__(
        self,
        endpoints: Iterable[str | Endpoint] = (),
        balancer: Balancer | None = None,
        *,
        name: str = "default",
        clock: Clock = default_clock,
        panic_threshold: float = 0.5,
        slow_start: SlowStart | None = None,
        outlier_detector: OutcomeObserver | None = None,
        on_event: EventHandler | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            msg = f"name must be a non-empty str, got {name!r}"
            raise ValueError(msg)
        if isinstance(panic_threshold, bool) or not (
            isinstance(panic_threshold, int | float) and 0.0 <= panic_threshold <= 1.0
        ):
            msg = f"panic_threshold must be between 0 and 1, got {panic_threshold!r}"
            raise ValueError(msg)
        checked: object = slow_start  # callers may not be type-checked
        if checked is not None and not isinstance(checked, SlowStart):
            msg = f"slow_start must be a SlowStart or None, got {type(slow_start).__name__}"
            raise TypeError(msg)
        if isinstance(endpoints, str | Endpoint):
            msg = "endpoints must be an iterable of URLs or Endpoints, not a single one"
            raise TypeError(msg)
        if balancer is None:
            from ._peak_ewma import PeakEWMA

            balancer = PeakEWMA()
        if not isinstance(balancer, Balancer):
            msg = f"balancer must implement the Balancer protocol, got {type(balancer).__name__}"
            raise TypeError(msg)
        self._name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._root = self
        self._panic = False
        self._panic_threshold = float(panic_threshold)
        self._slow_start = slow_start
        self._next_tick = _INF
        self._generation = 0
        self._handlers: list[EventHandler] = [on_event] if on_event is not None else []
        # The cache keeps recent subsets alive; the weak set reaches every subset still in use,
        # including ones the cache has evicted, so none of them goes stale.
        self._subsets: LRUCache[frozenset[str], PoolSubset] = LRUCache(maxsize=4096)
        self._live: weakref.WeakSet[PoolSubset] = weakref.WeakSet()
        now = clock()
        self._states: dict[str, EndpointState] = {}
        for i, item in enumerate(endpoints):
            endpoint = _as_endpoint(item, f"endpoints[{i}]")
            if endpoint.url in self._states:
                msg = f"duplicate endpoint {endpoint.url!r} in pool {name!r}"
                raise ValueError(msg)
            self._states[endpoint.url] = EndpointState(endpoint, now)
        self._members = list(self._states.values())
        self._candidates = ()
        balancer.bind(clock)
        self._adopt(balancer)
        self._observer = outlier_detector
        self._recompute(now, [])
        if outlier_detector is not None:
            outlier_detector.attach(self)

    def __repr__(self) -> str:
        return f"<Pool {self._name!r} endpoints={len(self._members)} balancer={type(self._balancer).__name__}>"

    @property
    def clock(self) -> Clock:
        """The pool's clock (latency, ejection and slow-start deadlines use it)."""
        return self._clock

    @property
    def generation(self) -> int:
        """A counter that grows with every membership change (add, remove, update)."""
        return self._generation

    # -- membership ------------------------------------------------------------------------------

    def add(self, endpoint: str | Endpoint) -> Endpoint:
        """Add one endpoint (it enters slow start if the pool has it configured).

        Raises:
            ValueError: The URL is invalid or already in the pool.
        """
        endpoint = _as_endpoint(endpoint, "endpoint")
        now = self._clock()
        events: list[Event] = []
        with self._lock:
            if endpoint.url in self._states:
                msg = f"duplicate endpoint {endpoint.url!r} in pool {self._name!r}"
                raise ValueError(msg)
            self._insert(endpoint, now, events)
            self._changed(now, events, membership=True)
        self._emit(events)
        return endpoint

    def remove(self, url: str | Endpoint) -> Endpoint:
        """Remove the endpoint at *url*; leases already held on it still release normally.

        Raises:
            EndpointNotFound: The pool has no such endpoint.
        """
        now = self._clock()
        events: list[Event] = []
        with self._lock:
            state = self._lookup(url)
            del self._states[state.url]
            events.append(Event(kind="endpoint_removed", pool=self._name, url=state.url, at=now))
            self._changed(now, events, membership=True)
        self._emit(events)
        return state.endpoint

    def set_weight(self, url: str | Endpoint, weight: float) -> None:
        """Change one endpoint's weight, keeping its live stats.

        Raises:
            EndpointNotFound: The pool has no such endpoint.
            ValueError: *weight* is not > 0.
        """
        now = self._clock()
        events: list[Event] = []
        with self._lock:
            state = self._lookup(url)
            state.endpoint = attrs.evolve(state.endpoint, weight=weight)
            self._reweigh(state, now)
            reason = f"weight {weight:g}"
            events.append(
                Event(kind="weight_changed", pool=self._name, url=state.url, reason=reason, at=now)
            )
            self._changed(now, events)
        self._emit(events)

    def update(self, endpoints: Iterable[str | Endpoint]) -> None:
        """Make the pool hold exactly *endpoints*, applying the difference.

        Kept endpoints keep their live stats (in-flight, latency, health); new ones are added (with
        slow start if configured), missing ones removed, changed weights or labels applied.
        Validation happens first: on a bad list nothing changes.

        Raises:
            ValueError: An invalid URL or a duplicate in *endpoints*.
        """
        if isinstance(endpoints, str | Endpoint):
            msg = "endpoints must be an iterable of URLs or Endpoints, not a single one"
            raise TypeError(msg)
        wanted: dict[str, Endpoint] = {}
        for i, item in enumerate(endpoints):
            endpoint = _as_endpoint(item, f"endpoints[{i}]")
            if endpoint.url in wanted:
                msg = f"duplicate endpoint {endpoint.url!r} in update of pool {self._name!r}"
                raise ValueError(msg)
            wanted[endpoint.url] = endpoint
        now = self._clock()
        events: list[Event] = []
        with self._lock:
            for url in [u for u in self._states if u not in wanted]:
                del self._states[url]
                events.append(Event(kind="endpoint_removed", pool=self._name, url=url, at=now))
            for url, endpoint in wanted.items():
                state = self._states.get(url)
                if state is None:
                    self._insert(endpoint, now, events)
                elif state.endpoint != endpoint or state.endpoint.metadata != endpoint.metadata:
                    reweigh = state.endpoint.weight != endpoint.weight
                    state.endpoint = endpoint
                    if reweigh:
                        self._reweigh(state, now)
                        reason = f"weight {endpoint.weight:g}"
                        events.append(
                            Event(
                                kind="weight_changed",
                                pool=self._name,
                                url=url,
                                reason=reason,
                                at=now,
                            )
                        )
            self._changed(now, events, membership=True)
        self._emit(events)

    # -- health hooks (used by tenantlb.health) ---------------------------------------------------

    def mark_unhealthy(self, url: str | Endpoint, reason: str = "") -> bool:
        """Take an endpoint out of rotation (active health checks). Returns True if it changed."""
        return self._set_health(url, False, reason)

    def mark_healthy(self, url: str | Endpoint, reason: str = "") -> bool:
        """Put an endpoint back in rotation (with slow start if configured). True if it changed."""
        return self._set_health(url, True, reason)

    def eject(self, url: str | Endpoint, duration: float, reason: str = "") -> bool:
        """Eject an endpoint for *duration* seconds (outlier detection). True if it was not ejected.

        The ejection ends by itself at the first acquisition after it runs out, or with `uneject`.

        Raises:
            EndpointNotFound: The pool has no such endpoint.
            TypeError: *duration* is not a number.
            ValueError: *duration* is not > 0 and finite.
        """
        checked: object = duration  # callers may not be type-checked
        if isinstance(checked, bool) or not isinstance(checked, int | float):
            msg = f"duration must be a number of seconds, got {type(checked).__name__}"
            raise TypeError(msg)
        if not (duration > 0 and math.isfinite(duration)):
            msg = f"duration must be > 0 and finite, got {duration!r}"
            raise ValueError(msg)
        now = self._clock()
        events: list[Event] = []
        with self._lock:
            state = self._lookup(url)
            was = state.ejected_until > 0.0
            state.ejected_until = now + duration
            self._next_tick = min(self._next_tick, state.ejected_until)
            if not was:
                events.append(
                    Event(kind="ejected", pool=self._name, url=state.url, reason=reason, at=now)
                )
                self._changed(now, events)
        self._emit(events)
        return not was

    def uneject(self, url: str | Endpoint, reason: str = "") -> bool:
        """End an ejection early (e.g. a passing active health check). True if it was ejected."""
        now = self._clock()
        events: list[Event] = []
        with self._lock:
            state = self._lookup(url)
            if state.ejected_until <= 0.0:
                return False
            state.ejected_until = 0.0
            events.append(
                Event(kind="unejected", pool=self._name, url=state.url, reason=reason, at=now)
            )
            self._changed(now, events)
        self._emit(events)
        return True

    def state(self, url: str | Endpoint) -> EndpointState:
        """The live state of one endpoint (read-only by convention; mutate through the pool).

        Raises:
            EndpointNotFound: The pool has no such endpoint.
        """
        with self._lock:
            return self._lookup(url)

    # -- subsets and events ------------------------------------------------------------------------

    def subset(self, urls: Iterable[str | Endpoint]) -> PoolSubset:
        """A view that balances only across *urls* (shuffle sharding), sharing live state.

        Subsets share in-flight counts, health, ejections and latency with the pool; each has its
        own balancer (a clone of the pool's) and its own panic status. The 4096 most recent subsets
        are cached by their URL set; a subset you hold keeps following the pool after the cache
        drops it. URLs the pool does not hold are ignored, so a subset shrinks when they leave.
        """
        key = frozenset(normalize_url(u.url if isinstance(u, Endpoint) else u) for u in urls)
        with self._lock:
            subset = self._subsets.get(key)
            if subset is None:
                subset = PoolSubset(self, key)
                self._subsets[key] = subset
                self._live.add(subset)
            return subset

    def subscribe(self, handler: EventHandler) -> Callable[[], None]:
        """Call *handler* with every future `Event`; returns a function that unsubscribes it."""
        self._handlers.append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return unsubscribe

    # -- internals -----------------------------------------------------------------------------------

    def _emit(self, events: list[Event]) -> None:
        if events and self._handlers:
            emit(list(self._handlers), events)

    def _lookup(self, url: str | Endpoint) -> EndpointState:
        key = url.url if isinstance(url, Endpoint) else normalize_url(url)
        state = self._states.get(key)
        if state is None:
            msg = f"no endpoint {key!r} in pool {self._name!r}"
            raise EndpointNotFound(msg)
        return state

    def _insert(self, endpoint: Endpoint, now: float, events: list[Event]) -> None:
        state = EndpointState(endpoint, now)
        self._states[endpoint.url] = state
        if self._slow_start is not None:
            state.slow_start_from = now
            self._reweigh(state, now)
        events.append(Event(kind="endpoint_added", pool=self._name, url=endpoint.url, at=now))

    def _reweigh(self, state: EndpointState, now: float) -> None:
        weight = float(state.endpoint.weight)
        ramp = self._slow_start
        if ramp is not None and state.slow_start_from is not None:
            factor = ramp.factor(now - state.slow_start_from)
            if factor >= 1.0:
                state.slow_start_from = None
            else:
                weight *= factor
                self._next_tick = min(self._next_tick, now + ramp.step)
        state.weight = weight

    def _set_health(self, url: str | Endpoint, healthy: bool, reason: str) -> bool:
        now = self._clock()
        events: list[Event] = []
        with self._lock:
            state = self._lookup(url)
            if state.healthy == healthy:
                return False
            state.healthy = healthy
            if healthy and self._slow_start is not None:
                state.slow_start_from = now
                self._reweigh(state, now)
            kind: EventKind = "healthy" if healthy else "unhealthy"
            events.append(Event(kind=kind, pool=self._name, url=state.url, reason=reason, at=now))
            self._changed(now, events)
        self._emit(events)
        return True

    def _changed(self, now: float, events: list[Event], *, membership: bool = False) -> None:
        # Caller holds the lock: recompute candidates here and in every live subset.
        if membership:
            self._members = list(self._states.values())
            self._generation += 1
        self._recompute(now, events)
        for subset in list(self._live):
            subset._refresh(now, events, membership=membership)

    def _tick(self, now: float) -> None:
        # A deadline passed: end ejections that ran out, step slow-start weights.
        events: list[Event] = []
        with self._lock:
            if now < self._next_tick:
                return
            self._next_tick = _INF
            changed = False
            for state in self._members:
                if state.ejected_until:
                    if state.ejected_until <= now:
                        state.ejected_until = 0.0
                        changed = True
                        events.append(
                            Event(
                                kind="unejected",
                                pool=self._name,
                                url=state.url,
                                reason="ejection time elapsed",
                                at=now,
                            )
                        )
                    else:
                        self._next_tick = min(self._next_tick, state.ejected_until)
                if state.slow_start_from is not None:
                    self._reweigh(state, now)
                    changed = True
            if changed:
                self._changed(now, events)
        self._emit(events)


@final
class PoolSubset(_Balanced):
    """A view of a `Pool` restricted to some of its endpoints (see `Pool.subset`).

    It acquires and records like a pool; membership, weights and health are managed on the pool.
    """

    def __init__(self, pool: Pool, urls: frozenset[str]) -> None:
        self._root = pool
        self._urls = urls
        self._name = pool.name
        self._clock = pool._clock
        self._lock = pool._lock
        self._observer = pool._observer
        self._panic = False
        self._panic_threshold = pool._panic_threshold
        balancer = pool._balancer.clone()
        balancer.bind(pool._clock)
        self._adopt(balancer)
        self._candidates = ()
        self._members = []
        self._refresh(pool._clock(), [], membership=True)

    def __repr__(self) -> str:
        return f"<PoolSubset of {self._name!r} endpoints={len(self._members)}>"

    @property
    def pool(self) -> Pool:
        """The pool this subset views."""
        return self._root

    def _refresh(self, now: float, events: list[Event], *, membership: bool) -> None:
        if membership:
            self._members = [s for s in self._root._members if s.url in self._urls]
        self._recompute(now, events)


@final
class Lease:
    """One request's hold on an endpoint; release it exactly once.

    Use it as a context manager. Inside, call `record` with the outcome; leaving the block without
    recording (an exception, a cancellation) releases the endpoint without counting an outcome, so
    a cancelled request neither rewards nor punishes the endpoint.

    Attributes:
        endpoint: The `Endpoint` picked.
        started: The pool clock's reading when the lease was taken.
        latency: Seconds from `started` to `record`, or None until recorded.
    """

    __slots__ = ("_open", "_owner", "_state", "endpoint", "latency", "started")

    def __init__(self, owner: _Balanced, state: EndpointState, started: float) -> None:
        self._owner = owner
        self._state = state
        self._open = True
        self.endpoint = state.endpoint
        self.started = started
        self.latency: float | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._open:
            self._open = False
            self._owner._release(self._state)

    @property
    def url(self) -> str:
        """The picked endpoint's URL (same as ``lease.endpoint.url``)."""
        return self._state.url

    @property
    def released(self) -> bool:
        """True once the lease was recorded or released."""
        return not self._open

    def record(self, *, status: int | None = None, error: BaseException | None = None) -> None:
        """Report the outcome and release the endpoint.

        A status >= 500, a 429 or an *error* counts as a failure for the balancer; the outlier
        detector (if any) sees the status and error as given.

        Args:
            status: The HTTP status of the response, if one arrived.
            error: The exception that ended the request (connect error, timeout), if any.

        Raises:
            RuntimeError: The lease was already recorded or released.
            ValueError: Neither *status* nor *error* given, or a status outside 100-599.
        """
        if not self._open:
            msg = "lease already released; record() and release() may be called once"
            raise RuntimeError(msg)
        if status is not None:
            if type(status) is not int or not 100 <= status <= 599:
                msg = f"status must be an int between 100 and 599, got {status!r}"
                raise ValueError(msg)
            failed = status >= 500 or status == 429 or error is not None
        elif error is None:
            msg = "record() needs status= or error="
            raise ValueError(msg)
        else:
            failed = True
        self._open = False
        owner = self._owner
        state = self._state
        now = owner._clock()
        self.latency = latency = now - self.started
        lock = owner._lock
        lock.acquire()  # hot path: see _Balanced.acquire
        try:
            state.in_flight -= 1
            state.requests += 1
            if failed:
                state.failures += 1
            if owner._on_release is not None:
                owner._on_release(state)
            observe = owner._observe
            if observe is not None:
                observe(state, latency, failed)
        finally:
            lock.release()
        observer = owner._observer
        # The observer sees failures, watched endpoints, and everything once its wake_at is due.
        if observer is not None and (
            error is not None
            or status >= 500  # type: ignore[operator]  # status is an int when error is None
            or state.watched
            or now >= observer.wake_at
        ):
            observer.observe(state, status, error, now)

    def release(self) -> None:
        """Release without an outcome (idempotent; the context manager calls it for you)."""
        if self._open:
            self._open = False
            self._owner._release(self._state)

    def __repr__(self) -> str:
        state = "released" if not self._open else "held"
        return f"<Lease {self._state.url} {state}>"


def _key_bytes(key: object) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    msg = f"key must be str, bytes or None, got {type(key).__name__}"
    raise TypeError(msg)


def _as_endpoint(item: object, where: str) -> Endpoint:
    if isinstance(item, Endpoint):
        return item
    if isinstance(item, str):
        return Endpoint(item)
    msg = f"{where} must be a URL str or an Endpoint, got {type(item).__name__}"
    raise TypeError(msg)
