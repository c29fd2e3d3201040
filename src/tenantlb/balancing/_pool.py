"""`Pool`: endpoints, their live state and a balancer.

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
Acquisition, snapshots and subsets' shared parts live in `_balanced`, leases in `_lease`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Literal, final

import attrs
from cachetools import LRUCache

from .._clock import Clock, default_clock
from .._errors import EndpointNotFound
from .._events import PER_REQUEST_KINDS, Event, EventHandler, EventKind, emit, log_state_changes
from .._validate import FieldTypeError, FieldValueError, between, seconds
from ._balanced import PoolCore, _Balanced
from ._balancer import Balancer, EndpointState, OutcomeObserver
from ._endpoint import Endpoint, normalize_url
from ._slow_start import SlowStart
from ._subset import PoolSubset

__all__ = ["Pool"]

_INF = math.inf


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
        outlier_detector: Passive outlier detection: ``"default"`` (the default) gives the pool an
            `OutlierDetector` with Envoy's defaults, so a pool avoids failing endpoints out of the
            box (as Linkerd's failure accrual does); pass your own `OutlierDetector` (or any
            `OutcomeObserver`) to tune it, or None to turn it off.
        on_event: A handler called with each state-change `Event` (more, and per-request
            events, with `subscribe`).

    Raises:
        ValueError: Duplicate endpoints, or a threshold outside 0-1.
        TypeError: An endpoint that is neither a str nor an `Endpoint`, a threshold that is not a
            number, or a balancer that does not implement `Balancer`.
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
        outlier_detector: OutcomeObserver | Literal["default"] | None = "default",
        on_event: EventHandler | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            msg = f"name must be a non-empty str, got {name!r}"
            raise FieldValueError(msg, field="name")
        threshold = between("panic_threshold", panic_threshold, 0, 1)
        checked: object = slow_start  # callers may not be type-checked
        if checked is not None and not isinstance(checked, SlowStart):
            msg = f"slow_start must be a SlowStart or None, got {type(slow_start).__name__}"
            raise FieldTypeError(msg, field="slow_start")
        if isinstance(endpoints, str | Endpoint):
            msg = "endpoints must be an iterable of URLs or Endpoints, not a single one"
            raise TypeError(msg)
        if balancer is None:
            from ._peak_ewma import PeakEWMA

            balancer = PeakEWMA()
        if not isinstance(balancer, Balancer):
            msg = f"balancer must implement the Balancer protocol, got {type(balancer).__name__}"
            raise FieldTypeError(msg, field="balancer")
        self._slow_start = slow_start
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
        if outlier_detector == "default":
            from ._outlier import OutlierDetector

            outlier_detector = OutlierDetector()
        elif outlier_detector is not None and not hasattr(outlier_detector, "attach"):
            msg = (
                "outlier_detector must be an OutlierDetector (an OutcomeObserver), 'default' or "
                f"None, got {outlier_detector!r}"
            )
            raise TypeError(msg)
        self._outlier_detector = outlier_detector
        core = PoolCore(
            name=name,
            clock=clock,
            panic_threshold=threshold,
            observer=outlier_detector,
            tick=self._tick,
        )
        balancer.bind(clock)
        super().__init__(core, balancer, list(self._states.values()), now)
        if outlier_detector is not None:
            outlier_detector.attach(self)

    @property
    def outlier_detector(self) -> OutcomeObserver | None:
        """The pool's passive outlier detector (an `OutlierDetector` unless turned off)."""
        return self._outlier_detector

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
        with self._changing(membership=True) as change:
            if endpoint.url in self._states:
                msg = f"duplicate endpoint {endpoint.url!r} in pool {self._name!r}"
                raise ValueError(msg)
            self._insert(endpoint, change)
        return endpoint

    def remove(self, url: str | Endpoint) -> Endpoint:
        """Remove the endpoint at *url*; leases already held on it still release normally.

        Raises:
            EndpointNotFound: The pool has no such endpoint.
        """
        with self._changing(membership=True) as change:
            state = self._lookup(url)
            del self._states[state.url]
            change.add("endpoint_removed", state.url)
        return state.endpoint

    def set_weight(self, url: str | Endpoint, weight: float) -> None:
        """Change one endpoint's weight, keeping its live stats.

        Raises:
            EndpointNotFound: The pool has no such endpoint.
            ValueError: *weight* is not > 0.
        """
        with self._changing() as change:
            state = self._lookup(url)
            state.endpoint = attrs.evolve(state.endpoint, weight=weight)
            self._reweigh(state, change.now)
            change.add("weight_changed", state.url, f"weight {weight:g}")

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
        with self._changing(membership=True) as change:
            for url in [u for u in self._states if u not in wanted]:
                del self._states[url]
                change.add("endpoint_removed", url)
            for url, endpoint in wanted.items():
                state = self._states.get(url)
                if state is None:
                    self._insert(endpoint, change)
                elif state.endpoint != endpoint or state.endpoint.metadata != endpoint.metadata:
                    reweigh = state.endpoint.weight != endpoint.weight
                    state.endpoint = endpoint
                    if reweigh:
                        self._reweigh(state, change.now)
                        change.add("weight_changed", url, f"weight {endpoint.weight:g}")

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
        duration = seconds("duration", duration)
        with self._changing() as change:
            state = self._lookup(url)
            was = state.ejected_until > 0.0
            state.ejected_until = change.now + duration
            self._core.next_tick = min(self._core.next_tick, state.ejected_until)
            if not was:
                change.add("ejected", state.url, reason)
        return not was

    def uneject(self, url: str | Endpoint, reason: str = "") -> bool:
        """End an ejection early (e.g. a passing active health check). True if it was ejected."""
        with self._changing() as change:
            state = self._lookup(url)
            if state.ejected_until <= 0.0:
                return False
            state.ejected_until = 0.0
            change.add("unejected", state.url, reason)
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
                subset = PoolSubset(self, self._core, self._balancer.clone(), key, self._members)
                self._subsets[key] = subset
                self._live.add(subset)
            return subset

    def subscribe(self, handler: EventHandler, *, per_request: bool = False) -> Callable[[], None]:
        """Call *handler* with every future `Event`; returns a function that unsubscribes it.

        Args:
            handler: Called synchronously, outside the pool's lock, with each event; keep it quick.
            per_request: Also deliver ``pick`` and ``outcome`` (one each per request, subsets'
                included). Without such a subscriber the pool builds no per-request event.

        Raises:
            TypeError: *handler* is not callable.
        """
        if not callable(handler):
            msg = f"handler must be callable, got {type(handler).__name__}"
            raise TypeError(msg)
        with self._lock:  # in place: subsets and leases share the per-request list
            self._handlers.append(handler)
            if per_request:
                self._traffic.append(handler)

        def unsubscribe() -> None:
            with self._lock:
                for handlers in (self._handlers, self._traffic):
                    if handler in handlers:
                        handlers.remove(handler)

        return unsubscribe

    def emit(self, event: Event) -> None:
        """Deliver *event* to this pool's subscribers, as if the pool had emitted it.

        For client adapters: one that retries on another endpoint emits ``retry`` (``url`` the
        endpoint that failed, ``reason`` the error's type name) and, when its `RetryBudget` says
        no, ``retry_budget_exhausted``. Per-request kinds reach only subscribers that asked for
        them; state changes are also logged.

        Raises:
            TypeError: *event* is not an `Event`.
        """
        if not isinstance(event, Event):
            msg = f"event must be an Event, got {type(event).__name__}"
            raise TypeError(msg)
        if event.kind in PER_REQUEST_KINDS:
            if self._traffic:
                emit(tuple(self._traffic), (event,))
            return
        log_state_changes((event,))
        if self._handlers:
            emit(list(self._handlers), (event,))

    # -- internals -----------------------------------------------------------------------------------

    @contextmanager
    def _changing(self, *, membership: bool = False, now: float | None = None) -> Iterator[_Change]:
        # The one sequence every mutation follows: take the lock, change states and record events,
        # recompute candidates here and in every live subset if anything changed, release the
        # lock, then emit the events (handlers never run under the lock). An exception inside
        # changes nothing further and emits nothing.
        change = _Change(self._name, self._clock() if now is None else now, membership)
        with self._lock:
            yield change
            if change.dirty:
                self._apply(change)
        if change.events:
            log_state_changes(change.events)
            if self._handlers:
                emit(list(self._handlers), change.events)

    def _apply(self, change: _Change) -> None:
        # Caller holds the lock.
        now, events = change.now, change.events
        members: list[EndpointState] | None = None
        if change.membership:
            self._members = members = list(self._states.values())
            self._generation += 1
        self._recompute(now, events)
        for subset in list(self._live):
            subset._refresh(now, events, members)

    def _lookup(self, url: str | Endpoint) -> EndpointState:
        key = url.url if isinstance(url, Endpoint) else normalize_url(url)
        state = self._states.get(key)
        if state is None:
            msg = f"no endpoint {key!r} in pool {self._name!r}"
            raise EndpointNotFound(msg)
        return state

    def _insert(self, endpoint: Endpoint, change: _Change) -> None:
        state = EndpointState(endpoint, change.now)
        self._states[endpoint.url] = state
        if self._slow_start is not None:
            state.slow_start_from = change.now
            self._reweigh(state, change.now)
        change.add("endpoint_added", endpoint.url)

    def _reweigh(self, state: EndpointState, now: float) -> None:
        weight = float(state.endpoint.weight)
        ramp = self._slow_start
        if ramp is not None and state.slow_start_from is not None:
            factor = ramp.factor(now - state.slow_start_from)
            if factor >= 1.0:
                state.slow_start_from = None
            else:
                weight *= factor
                self._core.next_tick = min(self._core.next_tick, now + ramp.step)
        state.weight = weight

    def _set_health(self, url: str | Endpoint, healthy: bool, reason: str) -> bool:
        with self._changing() as change:
            state = self._lookup(url)
            if state.healthy == healthy:
                return False
            state.healthy = healthy
            if healthy and self._slow_start is not None:
                state.slow_start_from = change.now
                self._reweigh(state, change.now)
            change.add("healthy" if healthy else "unhealthy", state.url, reason)
        return True

    def _tick(self, now: float) -> None:
        # A deadline passed: end ejections that ran out, step slow-start weights.
        core = self._core
        with self._changing(now=now) as change:
            if now < core.next_tick:
                return
            core.next_tick = _INF
            for state in self._members:
                if state.ejected_until:
                    if state.ejected_until <= now:
                        state.ejected_until = 0.0
                        change.add("unejected", state.url, "ejection time elapsed")
                    else:
                        core.next_tick = min(core.next_tick, state.ejected_until)
                if state.slow_start_from is not None:
                    self._reweigh(state, now)
                    change.dirty = True


@final
class _Change:
    """One mutation of a pool in progress: its time, the events it records, whether it needs a
    recompute (any event does) and whether membership changed."""

    __slots__ = ("dirty", "events", "membership", "now", "pool")

    def __init__(self, pool: str, now: float, membership: bool) -> None:
        self.pool = pool
        self.now = now
        self.membership = membership
        self.dirty = membership
        self.events: list[Event] = []

    def add(self, kind: EventKind, url: str, reason: str = "") -> None:
        self.events.append(Event(kind=kind, pool=self.pool, url=url, reason=reason, at=self.now))
        self.dirty = True


def _as_endpoint(item: object, where: str) -> Endpoint:
    if isinstance(item, Endpoint):
        return item
    if isinstance(item, str):
        return Endpoint(item)
    msg = f"{where} must be a URL str or an Endpoint, got {type(item).__name__}"
    raise TypeError(msg)
