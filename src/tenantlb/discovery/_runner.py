"""`Discovery`: keep a pool's membership in step with a `DiscoverySource`, safely, in an anyio task.

Each round asks the source for the endpoints and applies the answer with `Pool.update`, so
endpoints that stay keep their live state (requests, latency EWMA, health, ejection). The safety
rules are Envoy's for DNS clusters:

- A failed round (an exception, a timeout) never touches the pool: the last good set stays. The
  failure is counted, logged once when an outage starts and once when it ends, and reported as a
  ``discovery_failed`` / ``discovery_recovered`` `Event`.
- An empty answer is applied only with ``allow_empty=True``; otherwise it is refused like a
  failure (a resolver hiccup must not take every endpoint away).
- A sharp drop (ten endpoints to one) is applied: it is the truth. The pool's panic threshold
  still protects the survivors if too few of them are healthy.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Literal, final

import anyio
import attrs

from .._clock import Clock, default_clock
from .._errors import DiscoveryError
from .._events import Event, EventHandler, EventKind, emit
from .._validate import FieldTypeError, FieldValueError, seconds
from ..balancing import Endpoint, Pool
from ._source import DiscoveryResult, DiscoverySource, EndpointCache, as_endpoints

if TYPE_CHECKING:
    from typing import Self

    from anyio.abc import TaskGroup

__all__ = ["Discovery", "DiscoveryStats", "Outcome"]

logger = logging.getLogger("tenantlb.discovery")

Outcome = Literal["updated", "unchanged", "failed", "empty"]

_DEFAULT_MIN_INTERVAL = 1.0
_AUTO_JITTER = 0.1  # jitter=None: up to 10% of each delay, so many processes do not ask in step
_MAX_BACKOFF_DOUBLINGS = 30


@final
@attrs.define(frozen=True, kw_only=True)
class DiscoveryStats:
    """A snapshot of a discovery runner.

    Attributes:
        pool: The name of the pool it feeds.
        source: A description of the source (``"DNS A/AAAA svc.internal port 8000"``).
        running: True inside ``async with``.
        refreshes: Rounds finished (forced ones included).
        updates: Rounds that changed the pool.
        failures: Rounds that failed (lookup error, invalid answer, timeout).
        empty_refused: Empty answers not applied (``allow_empty=False``).
        consecutive_failures: The current run of failed or refused rounds (0 when healthy).
        outages: Outages begun: runs of failed or refused rounds, each logged once.
        in_outage: True while the last round failed or was refused.
        last_outcome: ``"updated"``, ``"unchanged"``, ``"failed"``, ``"empty"`` or None.
        last_error: The last failure's message, kept after recovery; None if none yet.
        last_refresh_at: Clock reading at the end of the last round, or None.
        last_success_at: Clock reading at the end of the last applied round, or None.
        endpoints: Size of the last endpoint set applied, or None before the first.
        ttl: The last answer's TTL hint in seconds, or None.
        next_delay: Seconds the runner waits after the last round before the next one.
    """

    pool: str
    source: str
    running: bool
    refreshes: int
    updates: int
    failures: int
    empty_refused: int
    consecutive_failures: int
    outages: int
    in_outage: bool
    last_outcome: Outcome | None
    last_error: str | None
    last_refresh_at: float | None
    last_success_at: float | None
    endpoints: int | None
    ttl: float | None
    next_delay: float | None


class Discovery:
    """Refresh a pool from a `DiscoverySource` every ``interval`` seconds, as an anyio task.

    ```python
    async with tlb.Discovery(pool, MySource(), interval=10.0):
        ...  # the pool follows the source
    ```

    ``async with`` runs one round before its body starts (so a pool built empty is filled), then
    one round per interval in the background. The delay after a round is ``interval``, shortened
    to the answer's TTL hint when that is shorter (never below ``min_interval``); after a failed or
    refused round it backs off from ``min_interval``, doubling up to ``interval``. A random
    ``[0, jitter]`` is added to every delay. `refresh` forces a round at once.

    The runner owns the pool's membership: each answer replaces it (through `Pool.update`, so kept
    endpoints keep their stats). `DNSDiscovery` and `FileDiscovery` are this runner with a
    built-in source; pass your own source (Consul, Kubernetes endpoints) to this class.

    Args:
        pool: The `Pool` to keep up to date.
        source: A `DiscoverySource`: an object with ``async def resolve()``.
        interval: Seconds between rounds (> 0).
        min_interval: Lower bound for TTL-driven and retry delays (> 0, <= interval); default
            1 second, or *interval* if that is shorter.
        jitter: Up to this many random seconds added to each delay (>= 0); default None adds up
            to 10% of each delay.
        timeout: Seconds one round may take (> 0); a slower source counts as failed.
        allow_empty: Apply empty answers (empty the pool); default False keeps the last set.
        clock: Seconds as a float, for the timestamps in `stats` (default `time.monotonic`).
        rng: Source of jitter (default: a private `random.Random`).
        on_event: A handler called with each ``discovery_failed`` / ``discovery_recovered`` `Event`.

    Raises:
        TypeError: *pool* is not a `Pool`, *source* has no async ``resolve``, or a number is not one.
        ValueError: interval, min_interval or timeout <= 0, min_interval > interval, or jitter < 0.
    """

    def __init__(
        self,
        pool: Pool,
        source: DiscoverySource,
        *,
        interval: float = 30.0,
        min_interval: float | None = None,
        jitter: float | None = None,
        timeout: float = 5.0,
        allow_empty: bool = False,
        clock: Clock = default_clock,
        rng: random.Random | None = None,
        on_event: EventHandler | None = None,
    ) -> None:
        if not isinstance(pool, Pool):
            msg = f"pool must be a tenantlb.Pool, got {type(pool).__name__}"
            raise FieldTypeError(msg, field="pool")
        resolve = getattr(source, "resolve", None)
        if resolve is None or not inspect.iscoroutinefunction(resolve):
            msg = f"source must have an async resolve() method (DiscoverySource), got {source!r}"
            raise FieldTypeError(msg, field="source")
        self.interval = seconds("interval", interval)
        if min_interval is None:
            self.min_interval = min(_DEFAULT_MIN_INTERVAL, self.interval)
        else:
            self.min_interval = seconds("min_interval", min_interval)
            if self.min_interval > self.interval:
                msg = f"min_interval must be <= interval ({self.interval:g}), got {min_interval!r}"
                raise FieldValueError(msg, field="min_interval")
        self.jitter = None if jitter is None else seconds("jitter", jitter, allow_zero=True)
        self.timeout = seconds("timeout", timeout)
        if not isinstance(allow_empty, bool):
            msg = f"allow_empty must be a bool, got {type(allow_empty).__name__}"
            raise FieldTypeError(msg, field="allow_empty")
        self.allow_empty = allow_empty
        self.pool = pool
        self.source: DiscoverySource = source
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._handlers: list[EventHandler] = [on_event] if on_event is not None else []
        self._cache = EndpointCache()
        self._lock: anyio.Lock | None = None
        self._tg: TaskGroup | None = None
        self._due = 0.0
        self._refreshes = 0
        self._updates = 0
        self._failures = 0
        self._empty_refused = 0
        self._consecutive = 0
        self._outages = 0
        self._outcome: Outcome | None = None
        self._last_error: str | None = None
        self._last_refresh_at: float | None = None
        self._last_success_at: float | None = None
        self._endpoints: int | None = None
        self._ttl: float | None = None
        self._delay: float | None = None

    def __repr__(self) -> str:
        state = "running" if self._tg is not None else "stopped"
        return f"<{type(self).__name__} pool={self.pool.name!r} source={self.source!r} interval={self.interval:g} {state}>"

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._tg is not None:
            msg = f"{type(self).__name__} is already running"
            raise RuntimeError(msg)
        await self.refresh()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._run, name=f"tenantlb discovery for pool {self.pool.name!r}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        if tg is None:
            return None
        tg.cancel_scope.cancel()
        try:
            return await tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None

    # -- public --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True inside ``async with``."""
        return self._tg is not None

    async def refresh(self) -> DiscoveryStats:
        """Run one round now (also outside ``async with``); the background schedule restarts from it.

        Rounds never overlap: a round already running (the background one) finishes first.

        Returns:
            The stats after the round. A source's failure is not raised: it is in
            ``last_outcome`` / ``last_error``, and the pool is as it was.
        """
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            await self._round()
        return self.stats()

    def stats(self) -> DiscoveryStats:
        """A frozen snapshot of the runner's counters and last outcome."""
        return DiscoveryStats(
            pool=self.pool.name,
            source=_describe(self.source),
            running=self._tg is not None,
            refreshes=self._refreshes,
            updates=self._updates,
            failures=self._failures,
            empty_refused=self._empty_refused,
            consecutive_failures=self._consecutive,
            outages=self._outages,
            in_outage=self._consecutive > 0,
            last_outcome=self._outcome,
            last_error=self._last_error,
            last_refresh_at=self._last_refresh_at,
            last_success_at=self._last_success_at,
            endpoints=self._endpoints,
            ttl=self._ttl,
            next_delay=self._delay,
        )

    def subscribe(self, handler: EventHandler) -> Callable[[], None]:
        """Call *handler* with every future discovery `Event`; returns a function that unsubscribes it."""
        self._handlers.append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return unsubscribe

    # -- rounds --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await anyio.sleep_until(self._due)
            if anyio.current_time() < self._due:
                continue  # a forced refresh moved the next round back
            try:
                await self.refresh()
            except Exception:  # our own bug must not take the caller's task group down
                logger.exception("tenantlb discovery for pool %r failed", self.pool.name)
                self._due = anyio.current_time() + self.interval

    async def _round(self) -> None:
        wanted: dict[str, Endpoint] | None = None
        ttl: float | None = None
        error = ""
        try:
            with anyio.fail_after(self.timeout):
                answer = await self.source.resolve()
            if isinstance(answer, DiscoveryResult):
                endpoints, ttl = answer.endpoints, answer.ttl
            else:
                endpoints = as_endpoints(answer, "endpoints", self._cache)
            wanted = _unique(endpoints)
        except TimeoutError:
            error = f"timed out after {self.timeout:g}s"
        except Exception as exc:
            error = _message(exc)
        self._cache.rotate()
        now = self._clock()
        self._refreshes += 1
        self._last_refresh_at = now
        if wanted is None:
            self._failures += 1
            self._failed(now, "failed", error)
        elif not wanted and not self.allow_empty:
            self._empty_refused += 1
            self._failed(now, "empty", "empty answer refused (allow_empty=False)")
        else:
            self._ttl = ttl
            self._applied(now, wanted)
        self._delay = self._next_delay()
        self._due = anyio.current_time() + self._delay

    def _applied(self, now: float, wanted: dict[str, Endpoint]) -> None:
        if _same(self.pool, wanted):
            self._outcome = "unchanged"
        else:
            self.pool.update(wanted.values())
            self._updates += 1
            self._outcome = "updated"
        self._endpoints = len(wanted)
        self._last_success_at = now
        if self._consecutive:
            failed, self._consecutive = self._consecutive, 0
            logger.info(
                "tenantlb discovery for pool %r recovered after %d failed refresh%s; %d endpoints",
                self.pool.name,
                failed,
                "" if failed == 1 else "es",
                len(wanted),
            )
            reason = f"recovered after {failed} failed refreshes"
            self._event("discovery_recovered", reason, now)

    def _failed(self, now: float, outcome: Outcome, error: str) -> None:
        self._outcome = outcome
        self._last_error = error
        self._consecutive += 1
        if self._consecutive > 1:
            return  # one log line and one event per outage
        self._outages += 1
        kept = len(self.pool)
        logger.error(
            "tenantlb discovery for pool %r from %s failed: %s; keeping its %d endpoints",
            self.pool.name,
            _describe(self.source),
            error,
            kept,
        )
        self._event("discovery_failed", f"{error}; kept {kept} endpoints", now)

    def _event(self, kind: EventKind, reason: str, now: float) -> None:
        if self._handlers:
            emit(
                list(self._handlers), [Event(kind=kind, pool=self.pool.name, reason=reason, at=now)]
            )

    def _next_delay(self) -> float:
        if self._consecutive:
            doublings = min(self._consecutive - 1, _MAX_BACKOFF_DOUBLINGS)
            base = min(self.interval, self.min_interval * 2.0**doublings)
        elif self._ttl is not None:
            base = min(self.interval, max(self.min_interval, self._ttl))
        else:
            base = self.interval
        spread = base * _AUTO_JITTER if self.jitter is None else self.jitter
        return base + self._rng.uniform(0.0, spread) if spread else base


def _unique(endpoints: tuple[Endpoint, ...]) -> dict[str, Endpoint]:
    wanted: dict[str, Endpoint] = {}
    for endpoint in endpoints:
        if endpoint.url in wanted:
            msg = f"the source listed {endpoint.url!r} twice"
            raise ValueError(msg)
        wanted[endpoint.url] = endpoint
    return wanted


def _same(pool: Pool, wanted: dict[str, Endpoint]) -> bool:
    # Pool.update always rebuilds the balancer (a Maglev table is 65537 slots), so skip no-ops.
    current = pool.endpoints
    if len(current) != len(wanted):
        return False
    for endpoint in current:
        new = wanted.get(endpoint.url)
        if new is not endpoint and (
            new is None or new != endpoint or new.metadata != endpoint.metadata
        ):
            return False
    return True


def _message(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        return _message(exc.exceptions[0])
    if isinstance(exc, DiscoveryError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe(source: object) -> str:
    # A source's own repr if it has one; "<X object at 0x...>" says less than the class name.
    if type(source).__repr__ is object.__repr__:
        return type(source).__name__
    return repr(source)
