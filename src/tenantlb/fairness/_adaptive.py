"""`AdaptiveConcurrency`: Envoy's gradient controller finds the concurrency limit from latency.

Envoy's adaptive concurrency filter (``envoy.filters.http.adaptive_concurrency``, gradient
controller), computed lazily from an injectable clock instead of timers:

- **Sampling windows.** Latencies of finished requests are collected for ``update_interval``
  seconds; at the end of the window their ``percentile`` (``sample_aggregate_percentile``, p50)
  is *sampleRTT* and the limit is recomputed::

      gradient  = clamp((minRTT + buffer) / sampleRTT, 0.5, 2.0)   buffer = minRTT * buffer%
      limit'    = gradient * limit
      new limit = clamp(limit' + sqrt(limit'), min_limit, max_limit)   (sqrt: burst headroom)

- **minRTT.** The ideal latency is measured by pinning the limit to ``min_limit`` (Envoy's
  ``min_concurrency``, 3) until ``min_rtt_requests`` (50) requests *started after the pin* have
  finished; their percentile is minRTT and the previous limit comes back. It is re-measured every
  ``min_rtt_interval`` seconds, each start delayed by a random ``[0, jitter%]`` of the interval
  (so a fleet does not measure in lockstep), and also after the limit has sat at ``min_limit`` for
  five windows in a row (the backend may have become slower for good). A fixed ``min_rtt`` skips
  the measurement.

A window, and the start or end of a measurement, is evaluated in the first `record` or `limit`
read after its time has come: no background task, the same answers under a manual clock.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from types import TracebackType
from typing import final

import anyio.lowlevel
import attrs

from .._clock import Clock, default_clock
from .._errors import OverCapacity
from .._events import Event, EventHandler, EventKind, emit
from .._validate import FieldTypeError, FieldValueError, count, percent, seconds

__all__ = ["AdaptiveConcurrency", "AdaptiveConcurrencyStats"]

_MIN_WINDOWS_BEFORE_REMEASURE = 5  # Envoy: limit at its minimum for 5 windows re-measures minRTT


@final
@attrs.define(frozen=True, kw_only=True)
class AdaptiveConcurrencyStats:
    """A snapshot of an `AdaptiveConcurrency`.

    Attributes:
        limit: The concurrency limit now (``min_limit`` while minRTT is measured).
        min_rtt: The last measured (or the fixed) minimum round-trip time, None before the first
            measurement ends.
        sample_rtt: The aggregate latency of the last sampling window, None before the first.
        measuring_min_rtt: Whether the limit is pinned to measure minRTT now.
        in_flight: Requests holding a slot through `AdaptiveConcurrency.acquire` (not those of a
            `FairQueue` it is the capacity of: see `FairQueueStats`).
        rejected: Requests `acquire` refused because the limit was reached.
        windows: Sampling windows that updated the limit.
        min_rtt_measurements: minRTT measurements completed.
    """

    limit: int
    min_rtt: float | None
    sample_rtt: float | None
    measuring_min_rtt: bool
    in_flight: int
    rejected: int
    windows: int
    min_rtt_measurements: int


@final
class AdaptiveConcurrency:
    """A concurrency limit that follows the upstream's latency (Envoy's gradient controller).

    Alone, it admits or refuses (503, as Envoy does) without queuing:

    ```python
    import anyio
    import tenantlb as tlb

    limit = tlb.AdaptiveConcurrency(min_limit=3, max_limit=200)

    async def main() -> None:
        async with limit.acquire():      # raises OverCapacity when `limit.limit` are in flight
            await anyio.sleep(0.001)     # ... call the upstream; the latency is recorded
        assert limit.stats().in_flight == 0

    anyio.run(main)
    ```

    As the capacity of a `FairQueue` (``tlb.FairQueue(tlb.AdaptiveConcurrency())``) the queue
    keeps the count, reads `limit` at each decision and reports every hold time to `record`.
    Feed it by hand with ``record(latency)`` when requests are measured elsewhere.

    Args:
        min_limit: The lowest limit, and the one pinned while minRTT is measured (Envoy's
            ``min_concurrency``, 3). The limit starts here.
        max_limit: The highest limit (Envoy's ``max_concurrency_limit``, 1000).
        update_interval: Seconds per sampling window (Envoy's ``concurrency_update_interval``).
        percentile: Which percentile of a window's latencies is its sampleRTT (and of the
            measurement's, minRTT), 0-100 (Envoy's ``sample_aggregate_percentile``, 50).
        buffer: Latency allowance over minRTT before the limit shrinks, in percent (25).
        min_rtt_interval: Seconds between minRTT measurements (60).
        min_rtt_requests: Requests measured for one minRTT (Envoy's ``request_count``, 50).
        jitter: Random delay of each measurement, in percent of *min_rtt_interval* (10).
        min_rtt: A fixed minRTT in seconds; never measure (Envoy's ``fixed_value``).
        clock: Time source; latencies passed to `record` must be in the same time base.
        rng: Source of the jitter (default: a private `random.Random`).
        name: Names it in events (``Event.pool``), e.g. the upstream it guards.
        on_event: A handler called with each `Event` (more with `subscribe`):
            ``"concurrency_limit_changed"`` after a window changed the limit,
            ``"min_rtt_measuring"`` when the limit is pinned to measure minRTT and
            ``"min_rtt_measured"`` when the measurement ends.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: A count < 1, *min_limit* > *max_limit*, a duration <= 0, a percentage
            outside 0-100.
    """

    __slots__ = (
        "_at_min",
        "_buffer",
        "_clock",
        "_epoch",
        "_fixed_min_rtt",
        "_handlers",
        "_in_flight",
        "_interval",
        "_jitter",
        "_limit",
        "_lock",
        "_max",
        "_measurements",
        "_measuring",
        "_min",
        "_min_rtt",
        "_name",
        "_next_measure",
        "_pending",
        "_percentile",
        "_rejected",
        "_requests",
        "_rng",
        "_rtt_samples",
        "_sample_rtt",
        "_samples",
        "_update_interval",
        "_window_end",
        "_windows",
    )

    def __init__(
        self,
        *,
        min_limit: int = 3,
        max_limit: int = 1000,
        update_interval: float = 0.1,
        percentile: float = 50.0,
        buffer: float = 25.0,
        min_rtt_interval: float = 60.0,
        min_rtt_requests: int = 50,
        jitter: float = 10.0,
        min_rtt: float | None = None,
        clock: Clock = default_clock,
        rng: random.Random | None = None,
        name: str = "adaptive",
        on_event: EventHandler | None = None,
    ) -> None:
        self._min = count("min_limit", min_limit)
        self._max = count("max_limit", max_limit)
        if self._max < self._min:
            msg = f"max_limit must be >= min_limit ({self._min}), got {max_limit}"
            raise FieldValueError(msg, field="max_limit")
        self._update_interval = seconds("update_interval", update_interval)
        self._percentile = percent("percentile", percentile) / 100.0
        self._buffer = percent("buffer", buffer) / 100.0
        self._interval = seconds("min_rtt_interval", min_rtt_interval)
        self._requests = count("min_rtt_requests", min_rtt_requests)
        self._jitter = percent("jitter", jitter) / 100.0
        self._fixed_min_rtt = None if min_rtt is None else seconds("min_rtt", min_rtt)
        if not callable(clock):
            msg = f"clock must be callable, got {type(clock).__name__}"
            raise FieldTypeError(msg, field="clock")
        if rng is not None and not isinstance(rng, random.Random):
            msg = f"rng must be a random.Random or None, got {type(rng).__name__}"
            raise FieldTypeError(msg, field="rng")
        if not isinstance(name, str):
            msg = f"name must be a str, got {type(name).__name__}"
            raise FieldTypeError(msg, field="name")
        if on_event is not None and not callable(on_event):
            msg = f"on_event must be callable or None, got {type(on_event).__name__}"
            raise FieldTypeError(msg, field="on_event")
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._name = name
        self._handlers: list[EventHandler] = [on_event] if on_event is not None else []
        self._pending: list[Event] = []
        self._lock = threading.Lock()
        now = clock()
        self._limit = self._min
        self._min_rtt = self._fixed_min_rtt
        self._sample_rtt: float | None = None
        self._samples: list[float] = []
        self._rtt_samples: list[float] = []
        self._window_end = now + self._update_interval
        self._at_min = 0
        self._in_flight = 0
        self._rejected = 0
        self._windows = 0
        self._measurements = 0
        # Envoy measures minRTT first thing; a fixed minRTT never measures.
        self._measuring = self._fixed_min_rtt is None
        self._epoch = now
        self._next_measure = math.inf

    def __repr__(self) -> str:
        return f"AdaptiveConcurrency(limit={self.limit}, min_rtt={self._min_rtt!r})"

    @property
    def limit(self) -> int:
        """The concurrency limit now (``min_limit`` while minRTT is being measured)."""
        with self._lock:
            self._tick(self._clock())
            limit = self._min if self._measuring else self._limit
        if self._pending:
            self._flush()
        return limit

    @property
    def min_rtt(self) -> float | None:
        """The current minRTT estimate in seconds, None until first measured."""
        return self._min_rtt

    def record(self, latency: float) -> None:
        """Feed the latency (seconds) of one finished request.

        Raises:
            TypeError, ValueError: *latency* is not a finite number >= 0.
        """
        latency = seconds("latency", latency, allow_zero=True)
        with self._lock:
            now = self._clock()
            self._tick(now)
            if not self._measuring:
                self._samples.append(latency)
            elif now - latency >= self._epoch:
                # Only requests sent after the limit was pinned show the unloaded latency.
                self._rtt_samples.append(latency)
                if len(self._rtt_samples) >= self._requests:
                    self._finish_measurement(now)
        if self._pending:
            self._flush()

    def subscribe(self, handler: EventHandler) -> Callable[[], None]:
        """Call *handler* with every `Event`; returns a function that unsubscribes it."""
        if not callable(handler):
            msg = f"handler must be callable, got {type(handler).__name__}"
            raise FieldTypeError(msg, field="handler")
        self._handlers.append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return unsubscribe

    def acquire(self) -> _Hold:
        """Hold one slot for the ``async with`` block, or be refused at once (no queue).

        The block's duration is recorded as a latency sample unless it raised.

        Raises:
            OverCapacity: `limit` requests are in flight (503).
        """
        return _Hold(self)

    def acquire_nowait(self) -> _Hold:
        """The sync twin of `acquire`: ``with limit.acquire_nowait(): ...``."""
        return _Hold(self)

    def stats(self) -> AdaptiveConcurrencyStats:
        """A frozen `AdaptiveConcurrencyStats` snapshot."""
        with self._lock:
            self._tick(self._clock())
            stats = AdaptiveConcurrencyStats(
                limit=self._min if self._measuring else self._limit,
                min_rtt=self._min_rtt,
                sample_rtt=self._sample_rtt,
                measuring_min_rtt=self._measuring,
                in_flight=self._in_flight,
                rejected=self._rejected,
                windows=self._windows,
                min_rtt_measurements=self._measurements,
            )
        if self._pending:
            self._flush()
        return stats

    # --- helpers (called with the lock held) ----------------------------------------------------

    def _take(self) -> float:
        with self._lock:
            now = self._clock()
            self._tick(now)
            limit = self._min if self._measuring else self._limit
            full = self._in_flight >= limit
            if full:
                self._rejected += 1
            else:
                self._in_flight += 1
        if self._pending:
            self._flush()
        if full:
            msg = f"the adaptive concurrency limit ({limit}) is reached"
            raise OverCapacity(msg, headers=[("Retry-After", "1")])
        return now

    def _event(self, kind: EventKind, reason: str, at: float) -> None:
        if self._handlers:
            self._pending.append(Event(kind=kind, pool=self._name, reason=reason, at=at))

    def _flush(self) -> None:
        # Handlers run outside the lock (the event protocol's rule).
        with self._lock:
            events, self._pending = self._pending, []
        emit(list(self._handlers), events)

    def _give_back(self, started: float, ok: bool) -> None:
        with self._lock:
            self._in_flight -= 1
        if ok:
            self.record(max(0.0, self._clock() - started))

    def _tick(self, now: float) -> None:
        if self._measuring:
            return  # a measurement ends on its request count, not on time
        if now >= self._next_measure:
            self._start_measurement(now)
            return
        if now >= self._window_end:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        samples = self._samples
        self._window_end = now + self._update_interval
        if not samples or self._min_rtt is None:
            samples.clear()
            return
        sample_rtt = _percentile(samples, self._percentile)
        samples.clear()
        self._sample_rtt = sample_rtt
        target = self._min_rtt * (1.0 + self._buffer)
        gradient = 2.0 if sample_rtt <= 0 else max(0.5, min(2.0, target / sample_rtt))
        scaled = gradient * self._limit
        old = self._limit
        self._limit = max(self._min, min(self._max, int(scaled + math.sqrt(scaled))))
        self._windows += 1
        if self._limit != old:
            reason = (
                f"limit {old} -> {self._limit}: sample RTT {sample_rtt * 1000:.1f} ms, "
                f"min RTT {self._min_rtt * 1000:.1f} ms"
            )
            self._event("concurrency_limit_changed", reason, now)
        if self._limit == self._min:
            self._at_min += 1
            if self._at_min >= _MIN_WINDOWS_BEFORE_REMEASURE and self._fixed_min_rtt is None:
                self._start_measurement(now)
        else:
            self._at_min = 0

    def _start_measurement(self, now: float) -> None:
        self._event("min_rtt_measuring", f"limit pinned to {self._min} to measure min RTT", now)
        self._measuring = True
        self._epoch = now
        self._rtt_samples.clear()
        self._samples.clear()
        self._at_min = 0

    def _finish_measurement(self, now: float) -> None:
        self._min_rtt = min_rtt = _percentile(self._rtt_samples, self._percentile)
        self._rtt_samples.clear()
        self._measuring = False
        self._measurements += 1
        self._window_end = now + self._update_interval
        delay = self._rng.uniform(0.0, self._jitter * self._interval) if self._jitter else 0.0
        self._next_measure = now + self._interval + delay
        reason = f"min RTT {min_rtt * 1000:.1f} ms; limit back to {self._limit}"
        self._event("min_rtt_measured", reason, now)


@final
class _Hold:
    """One slot of a standalone `AdaptiveConcurrency`, as a sync or async context manager."""

    __slots__ = ("_owner", "_started")

    def __init__(self, owner: AdaptiveConcurrency) -> None:
        self._owner = owner
        self._started: float | None = None

    def __enter__(self) -> _Hold:
        if self._started is not None:
            msg = "this acquire() context manager was already entered; call acquire() again"
            raise RuntimeError(msg)
        self._started = self._owner._take()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started is not None:
            self._owner._give_back(self._started, exc_type is None)

    async def __aenter__(self) -> _Hold:
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _percentile(values: list[float], q: float) -> float:
    """The nearest-rank *q*-quantile (0-1) of *values* (not empty)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]
