"""`OutlierDetector`: passive health checking from real traffic, with Envoy's semantics.

A pool reports every recorded outcome to its detector (``Pool(..., outlier_detector=detector)``).
The detector counts consecutive failures per endpoint and, once per ``interval``, each endpoint's
failure percentage; when an endpoint looks like an outlier it asks the pool to eject it for a while.
Everything is synchronous and free of I/O: the per-interval evaluation runs lazily inside the
first ``observe`` call after the interval has passed, so there is no background task.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, final

import attrs

from .._clock import Clock
from .._errors import EndpointNotFound
from .._events import Event
from .._validate import FieldTypeError, count, optional_count, percent, seconds

if TYPE_CHECKING:
    from ._balancer import EndpointState
    from ._pool import Pool

__all__ = ["OutlierDetector", "OutlierDetectorStats", "OutlierEndpointStats"]

_GATEWAY_STATUSES = frozenset({502, 503, 504})


@final
@attrs.define(frozen=True, kw_only=True)
class OutlierEndpointStats:
    """What the detector knows about one endpoint that has failed at least once.

    Attributes:
        url: The endpoint.
        consecutive_5xx: Current run of 5xx responses (and, unless split, local-origin errors).
        consecutive_gateway_failures: Current run of 502/503/504 (and, unless split, errors).
        consecutive_local_origin_failures: Current run of local-origin errors (split mode only).
        ejection_multiplier: The current "times ejected" factor after decay (0 = never/forgiven).
        times_ejected: How many times the detector has ejected it, in total.
        ejected_until: Clock reading when its current ejection ends, or None if not ejected.
    """

    url: str
    consecutive_5xx: int
    consecutive_gateway_failures: int
    consecutive_local_origin_failures: int
    ejection_multiplier: int
    times_ejected: int
    ejected_until: float | None


@final
@attrs.define(frozen=True, kw_only=True)
class OutlierDetectorStats:
    """A snapshot of an `OutlierDetector`.

    Attributes:
        ejections: Ejections performed, in total.
        ejections_refused: Outliers left in rotation because ``max_ejection_percent`` was reached.
        ejected: URLs currently ejected by the detector.
        endpoints: Per-endpoint counters, for endpoints that have failed at least once.
    """

    ejections: int
    ejections_refused: int
    ejected: tuple[str, ...]
    endpoints: tuple[OutlierEndpointStats, ...]


@final
class OutlierDetector:
    """Eject endpoints that fail, following Envoy's outlier detection.

    ```python
    detector = tlb.OutlierDetector(consecutive_5xx=5, base_ejection_time=30.0)
    pool = tlb.Pool(urls, outlier_detector=detector)
    ```

    Detection types (Envoy's names and defaults):

    - **Consecutive 5xx** (``consecutive_5xx``, default 5): that many 5xx responses in a row eject
      the endpoint. Unless ``split_external_local_origin_errors`` is set, local-origin errors
      (``lease.record(error=...)``: connect errors, resets, timeouts) count as 5xx too.
    - **Consecutive gateway failure** (``consecutive_gateway_failure``, default 5): 502, 503 and
      504 (and, unless split, local-origin errors) in a row. Another 5xx breaks the run, as in Envoy.
    - **Consecutive local-origin failure** (``consecutive_local_origin_failure``, default 5): only
      in split mode, errors in a row; any response (whatever its status) breaks the run.
    - **Failure percentage** (``failure_percentage_threshold``, default 85): once per
      ``interval``, an endpoint with at least ``failure_percentage_request_volume`` (50) requests
      in the interval and a failure share >= the threshold is ejected, provided the pool has at
      least ``failure_percentage_minimum_hosts`` (5) endpoints. The evaluation runs in the first
      ``observe`` after the interval ends (lazily; there is no timer). Envoy ships this type with
      ``enforcing_failure_percentage = 0`` (detected, not enforced); here it is enforced unless
      you pass ``failure_percentage_threshold=None``. Any detection type is disabled with None.

    Ejection (Envoy's algorithm): the ejection time is ``base_ejection_time x times ejected``,
    capped at ``max(max_ejection_time, base_ejection_time)``, plus a uniformly random
    ``[0, jitter]`` seconds (Envoy's ``max_ejection_time_jitter``, default 0). While an endpoint
    behaves, its "times ejected" multiplier decreases by one per ``interval`` spent back in
    rotation, so an endpoint that stays healthy for ``max/base x interval`` is back to the base time.
    An ejected endpoint returns by itself when its time runs out (the pool applies it at the next
    acquisition), or earlier when an active health check passes (`HealthChecker`), which also
    clears its counters.

    ``max_ejection_percent`` (default 10) bounds ejections the way Envoy does: an outlier is ejected
    only if afterwards at most ``max_ejection_percent`` % of the pool's endpoints are ejected by
    the detector, except that one endpoint may always be ejected when none is (Envoy: "will eject at
    least one host regardless of the value"). With 10 endpoints and 10 % that is exactly one. An
    outlier refused for that reason stays a candidate: its next failure tries again.

    Ejected endpoints leave the pool's candidates; if too few remain, the pool enters panic mode
    and balances across all endpoints (Envoy's panic threshold) — the detector keeps counting then.

    Thread-safe: ``observe`` may be called from several threads (a pool records outside its lock).

    Args:
        consecutive_5xx: 5xx responses in a row that eject (Envoy default 5); None disables.
        consecutive_gateway_failure: 502/503/504 in a row that eject (default 5); None disables.
        consecutive_local_origin_failure: Local-origin errors in a row that eject, in split mode
            (default 5); None disables.
        split_external_local_origin_errors: Count errors separately from HTTP statuses (Envoy's
            flag of that name, default False).
        failure_percentage_threshold: Failure percentage (0-100) that ejects (default 85);
            None disables failure-percentage detection.
        failure_percentage_minimum_hosts: Pool size needed to apply it (default 5).
        failure_percentage_request_volume: Requests an endpoint needs in an interval (default 50).
        interval: Seconds between evaluations of failure percentages and multiplier decay
            (Envoy default 10 s).
        base_ejection_time: Seconds of the first ejection (Envoy default 30 s).
        max_ejection_time: Cap on an ejection's length (Envoy default 300 s).
        max_ejection_percent: Percentage (0-100) of the pool that may be ejected (default 10).
        jitter: Up to this many random seconds are added to each ejection (default 0).
        clock: Clock for `stats`; defaults to the attached pool's clock (the pool passes its
            own readings to ``observe``, so the detector never mixes clocks).
        rng: Source of jitter (default: a private `random.Random`).

    Raises:
        TypeError: A count or time that is not a number.
        ValueError: A count < 1, a time <= 0, a percentage outside 0-100.
    """

    def __init__(
        self,
        consecutive_5xx: int | None = 5,
        consecutive_gateway_failure: int | None = 5,
        consecutive_local_origin_failure: int | None = 5,
        *,
        split_external_local_origin_errors: bool = False,
        failure_percentage_threshold: float | None = 85,
        failure_percentage_minimum_hosts: int = 5,
        failure_percentage_request_volume: int = 50,
        interval: float = 10.0,
        base_ejection_time: float = 30.0,
        max_ejection_time: float = 300.0,
        max_ejection_percent: float = 10,
        jitter: float = 0.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.consecutive_5xx = optional_count("consecutive_5xx", consecutive_5xx)
        self.consecutive_gateway_failure = optional_count(
            "consecutive_gateway_failure", consecutive_gateway_failure
        )
        self.consecutive_local_origin_failure = optional_count(
            "consecutive_local_origin_failure", consecutive_local_origin_failure
        )
        self.split_external_local_origin_errors = bool(split_external_local_origin_errors)
        self.failure_percentage_threshold = (
            None
            if failure_percentage_threshold is None
            else percent("failure_percentage_threshold", failure_percentage_threshold)
        )
        self.failure_percentage_minimum_hosts = count(
            "failure_percentage_minimum_hosts", failure_percentage_minimum_hosts
        )
        self.failure_percentage_request_volume = count(
            "failure_percentage_request_volume", failure_percentage_request_volume
        )
        self.interval = seconds("interval", interval)
        self.base_ejection_time = seconds("base_ejection_time", base_ejection_time)
        self.max_ejection_time = seconds("max_ejection_time", max_ejection_time)
        self.max_ejection_percent = percent("max_ejection_percent", max_ejection_percent)
        self.jitter = seconds("jitter", jitter, allow_zero=True)
        checked: object = clock  # callers may not be type-checked
        if checked is not None and not callable(checked):
            msg = f"clock must be callable, got {type(clock).__name__}"
            raise FieldTypeError(msg, field="clock")
        self._clock: Clock | None = clock
        self._rng = rng if rng is not None else random.Random()
        self._cap = max(
            1, math.ceil(max(max_ejection_time, base_ejection_time) / base_ejection_time)
        )
        self._lock = threading.Lock()
        self._pool: Pool | None = None
        self._hosts: dict[str, _Host] = {}
        self._baseline: dict[str, int] = {}  # requests per URL at the start of the interval
        # The pool calls observe for any outcome once its clock reaches wake_at (OutcomeObserver):
        # the first outcome starts the first interval, the first after it ends evaluates it.
        self.wake_at = -math.inf
        self._ejections = 0
        self._refused = 0
        self._unsubscribe: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return (
            f"<OutlierDetector consecutive_5xx={self.consecutive_5xx}"
            f" base_ejection_time={self.base_ejection_time:g}"
            f" max_ejection_percent={self.max_ejection_percent:g}>"
        )

    # -- the OutcomeObserver protocol ---------------------------------------------------------

    def attach(self, pool: Pool) -> None:
        """Adopt *pool* (the pool calls this once); a detector serves one pool.

        Raises:
            RuntimeError: The detector is already attached to a pool.
        """
        if self._pool is not None:
            msg = "OutlierDetector is already attached to a pool; give each pool its own detector"
            raise RuntimeError(msg)
        self._pool = pool
        if self._clock is None:
            self._clock = pool.clock
        self._unsubscribe = pool.subscribe(self._on_event)

    def observe(
        self, state: EndpointState, status: int | None, error: BaseException | None, now: float
    ) -> None:
        """Count one outcome (called by the pool after a recorded failure — an error or a 5xx —
        after any outcome of an endpoint whose ``watched`` flag this detector set, and after any
        outcome once the pool clock reaches `wake_at`; outside the pool's lock). Failure
        percentages read the pool's request counts, so other successes need not be seen."""
        if now >= self.wake_at:
            self._sweep(now)
        if error is None and status is not None and status < 500:
            # A success only resets runs. The pool calls us for a success only while the
            # endpoint is `watched`, i.e. while it has a run of failures to reset.
            state.watched = False
            host = self._hosts.get(state.url)
            if host is not None and (host.c5xx or host.cgw or host.clocal):
                with self._lock:
                    host.c5xx = host.cgw = host.clocal = 0
            return
        eject: tuple[str, float, str] | None = None
        with self._lock:
            host = self._hosts.get(state.url)
            if host is None:
                host = self._hosts[state.url] = _Host()
            host.fails += 1
            reason = self._count_failure(host, status, error)
            if reason is not None:
                eject = self._decide(state.url, host, now, reason)
            # Ask the pool for this endpoint's successes while a run is open, so one can end it.
            state.watched = bool(host.c5xx or host.cgw or host.clocal)
        if eject is not None:
            self._eject(*eject)

    # -- public --------------------------------------------------------------------------------

    def stats(self) -> OutlierDetectorStats:
        """A frozen snapshot: ejection totals and per-endpoint counters."""
        clock = self._clock
        with self._lock:
            now = clock() if clock is not None else 0.0
            endpoints = tuple(
                OutlierEndpointStats(
                    url=url,
                    consecutive_5xx=h.c5xx,
                    consecutive_gateway_failures=h.cgw,
                    consecutive_local_origin_failures=h.clocal,
                    ejection_multiplier=self._multiplier(h, now),
                    times_ejected=h.ejections,
                    ejected_until=h.ejected_until if h.ejected_until > now else None,
                )
                for url, h in self._hosts.items()
            )
            return OutlierDetectorStats(
                ejections=self._ejections,
                ejections_refused=self._refused,
                ejected=tuple(e.url for e in endpoints if e.ejected_until is not None),
                endpoints=endpoints,
            )

    # -- internals -----------------------------------------------------------------------------

    def _count_failure(
        self, host: _Host, status: int | None, error: BaseException | None
    ) -> str | None:
        # Caller holds the lock. Returns a reason when a consecutive-failure threshold is reached.
        if status is None:  # a local-origin error
            if self.split_external_local_origin_errors:
                host.clocal += 1
                limit = self.consecutive_local_origin_failure
                if limit is not None and host.clocal >= limit:
                    return f"{host.clocal} consecutive local-origin failures ({_describe(error)})"
                return None
            gateway = True
        else:
            if self.split_external_local_origin_errors:
                host.clocal = 0  # the connection worked
            gateway = status in _GATEWAY_STATUSES
        host.c5xx += 1
        host.cgw = host.cgw + 1 if gateway else 0
        limit = self.consecutive_5xx
        if limit is not None and host.c5xx >= limit:
            return f"{host.c5xx} consecutive 5xx"
        limit = self.consecutive_gateway_failure
        if limit is not None and host.cgw >= limit:
            return f"{host.cgw} consecutive gateway failures"
        return None

    def _multiplier(self, host: _Host, now: float) -> int:
        # Envoy decrements the multiplier at each interval the host spends un-ejected.
        if host.ejected_until > now or not host.multiplier:
            return host.multiplier
        behaved = int((now - host.decay_from) // self.interval)
        return max(0, host.multiplier - behaved)

    def _decide(
        self, url: str, host: _Host, now: float, reason: str
    ) -> tuple[str, float, str] | None:
        # Caller holds the lock: apply max_ejection_percent, then compute the ejection time.
        if host.ejected_until > now:
            return None
        pool = self._pool
        total = len(pool) if pool is not None else 0
        ejected = sum(1 for h in self._hosts.values() if h.ejected_until > now)
        if ejected and (ejected + 1) * 100 > self.max_ejection_percent * total:
            self._refused += 1
            return None
        multiplier = min(self._multiplier(host, now) + 1, self._cap)
        duration = min(
            self.base_ejection_time * multiplier,
            max(self.max_ejection_time, self.base_ejection_time),
        )
        if self.jitter:
            duration += self._rng.uniform(0.0, self.jitter)
        host.multiplier = multiplier
        host.ejections += 1
        host.ejected_until = host.decay_from = now + duration
        host.c5xx = host.cgw = host.clocal = 0
        host.fails = 0
        self._ejections += 1
        return url, duration, f"{reason}; ejected for {duration:.3g}s (x{multiplier})"

    def _eject(self, url: str, duration: float, reason: str) -> None:
        pool = self._pool
        if pool is None:
            return
        try:
            pool.eject(url, duration, reason)
        except EndpointNotFound:  # removed meanwhile
            with self._lock:
                self._hosts.pop(url, None)

    def _sweep(self, now: float) -> None:
        # Once per interval, lazily: evaluate failure percentages, then start a new interval.
        pool = self._pool
        ejections: list[tuple[str, float, str]] = []
        threshold = self.failure_percentage_threshold
        stats = pool.stats() if pool is not None and threshold is not None else None
        with self._lock:
            if now < self.wake_at:
                return  # another thread got here first
            first = self.wake_at == -math.inf
            self.wake_at = now + self.interval
            if stats is None:
                for host in self._hosts.values():
                    host.fails = 0
                return
            requests = {e.url: e.requests for e in stats.endpoints}
            if (
                not first
                and threshold is not None
                and stats.total >= self.failure_percentage_minimum_hosts
            ):
                volume = self.failure_percentage_request_volume
                for url, host in list(self._hosts.items()):
                    if url not in requests:
                        continue
                    count = requests[url] - self._baseline.get(url, 0)
                    if count < volume or host.fails * 100 < threshold * count:
                        continue
                    pct = 100.0 * host.fails / count
                    reason = (
                        f"failure percentage {pct:.0f}% >= {threshold:g}% over {count} requests"
                    )
                    decision = self._decide(url, host, now, reason)
                    if decision is not None:
                        ejections.append(decision)
            for host in self._hosts.values():
                host.fails = 0
            self._baseline = requests
        for decision in ejections:
            self._eject(*decision)

    def _on_event(self, event: Event) -> None:
        url = event.url
        if url is None:
            return
        if event.kind == "endpoint_removed":
            with self._lock:
                self._hosts.pop(url, None)
        elif event.kind == "unejected":
            with self._lock:
                host = self._hosts.get(url)
                if host is not None:
                    # Ended by time (applied lazily) or early by a passing active health check;
                    # Envoy clears the outlier counters either way.
                    if host.ejected_until > event.at:
                        host.decay_from = event.at
                    host.ejected_until = 0.0
                    host.c5xx = host.cgw = host.clocal = 0


class _Host:
    """Per-endpoint counters; mutated under the detector's lock."""

    __slots__ = (
        "c5xx",
        "cgw",
        "clocal",
        "decay_from",
        "ejected_until",
        "ejections",
        "fails",
        "multiplier",
    )

    def __init__(self) -> None:
        self.c5xx = 0
        self.cgw = 0
        self.clocal = 0
        self.fails = 0  # failures in the current interval (failure percentage)
        self.multiplier = 0  # Envoy's "times ejected", decayed lazily from decay_from
        self.ejections = 0
        self.ejected_until = 0.0
        self.decay_from = 0.0


def _describe(error: BaseException | None) -> str:
    return type(error).__name__ if error is not None else "error"
