"""`HealthChecker`: active health checks of a pool's endpoints in an anyio task group.

One check loop runs per endpoint. The checker follows the pool's membership through
`Pool.subscribe`: an added endpoint gets a loop at once, a removed endpoint's loop is cancelled at
once, so no loop outlives its endpoint and no removed endpoint is checked again.
"""

from __future__ import annotations

import inspect
import logging
import random
import threading
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from types import TracebackType
from typing import TYPE_CHECKING, final

import anyio
import attrs

from .._clock import Clock, default_clock
from .._errors import EndpointNotFound
from .._events import Event
from .._validate import FieldValueError, count, seconds
from ..balancing import EndpointState, Pool
from ._probes import HTTPProbe, Probe, ProbeResult

if TYPE_CHECKING:
    from typing import Self

    from anyio.abc import TaskGroup

__all__ = ["EndpointHealth", "HealthChecker", "HealthCheckerStats"]

logger = logging.getLogger("tenantlb.health")


@final
@attrs.define(frozen=True, kw_only=True)
class EndpointHealth:
    """What the checker knows about one endpoint.

    Attributes:
        url: The endpoint.
        healthy: The checker's verdict, or None before the first check finished.
        checks: Checks finished.
        failures: Checks failed (including timeouts).
        consecutive_failures: Current run of failed checks.
        consecutive_successes: Current run of passed checks.
        last_reason: The last check's reason (``"status 200"``, ``"timeout after 1s"``).
        last_checked_at: Clock reading when the last check finished, or None.
        last_duration: Seconds the last check took, or None.
    """

    url: str
    healthy: bool | None
    checks: int
    failures: int
    consecutive_failures: int
    consecutive_successes: int
    last_reason: str
    last_checked_at: float | None
    last_duration: float | None


@final
@attrs.define(frozen=True, kw_only=True)
class HealthCheckerStats:
    """A snapshot of a `HealthChecker`.

    Attributes:
        running: True inside ``async with checker``.
        checks: Checks finished, in total.
        failures: Checks failed, in total (timeouts included).
        timeouts: Checks that hit the timeout.
        tasks: Check loops currently running (one per endpoint while running).
        endpoints: One entry per checked endpoint, in pool order.
    """

    running: bool
    checks: int
    failures: int
    timeouts: int
    tasks: int
    endpoints: tuple[EndpointHealth, ...]


@final
class HealthChecker:
    """Check every endpoint of a pool periodically and mark it healthy or unhealthy (Envoy semantics).

    ```python
    checker = tlb.HealthChecker(pool, probe=tlb.HTTPProbe("/healthz"), interval=5.0, timeout=1.0)
    async with checker:
        ...  # serve traffic; the pool skips endpoints that fail their checks
    ```

    State machine per endpoint, as Envoy's active health checking:

    - The first check decides: a pass marks the endpoint healthy, a failure marks it unhealthy.
    - Afterwards ``unhealthy_threshold`` (default 3) failed checks in a row mark it unhealthy and
      ``healthy_threshold`` (default 2) passed checks in a row mark it healthy again.
    - A failure the probe flags as immediate (`HTTPProbe`: an unexpected HTTP status) marks it
      unhealthy at once; use ``HTTPProbe(retriable_statuses=...)`` to count such statuses instead.
    - A passed check of a healthy endpoint ends an outlier ejection early (Envoy's
      ``successful_active_health_check_uneject_host``, on by default; ``uneject_on_pass=False``
      disables it). The detector then clears its counters.
    - A probe that hangs is cut off after ``timeout``; one that raises or returns something other
      than a bool or `ProbeResult` fails the check. Nothing a probe does stops the checker.

    Endpoints are checked every ``interval`` seconds (measured from the start of one check to the
    start of the next) plus a random ``[0, jitter]``; the first checks
    start at once (spread over ``[0, jitter]`` if jitter is set). With ``no_traffic_interval``, a
    healthy endpoint that received no request since its last check is checked at that slower
    pace instead (Envoy's option of that name).

    ``timeout`` must be shorter than ``interval``: a check must end before the next is due (Envoy
    allows otherwise; here it is a `ValueError` rather than overlapping checks).

    Stopping the checker (leaving ``async with``) puts back in rotation the endpoints it had marked
    unhealthy, since nothing would ever mark them healthy again.

    Args:
        pool: The `Pool` whose endpoints to check.
        probe: An async callable ``(endpoint) -> ProbeResult | bool``; default ``HTTPProbe()``.
        interval: Seconds between checks of one endpoint (> 0; Envoy requires it, no default).
        timeout: Seconds a check may take (> 0 and < interval).
        jitter: Up to this many random seconds added to each interval (>= 0).
        unhealthy_threshold: Failed checks in a row that mark an endpoint unhealthy (>= 1).
        healthy_threshold: Passed checks in a row that mark an unhealthy endpoint healthy (>= 1).
        no_traffic_interval: Slower interval for healthy endpoints without traffic; None = off.
        uneject_on_pass: Whether a passed check ends an outlier ejection (default True).
        clock: Seconds as a float, for the timestamps in `stats` (default `time.monotonic`).
        rng: Source of jitter (default: a private `random.Random`).

    Raises:
        TypeError: *pool* is not a `Pool`, *probe* is not an async callable, or a number is not one.
        ValueError: interval <= 0, timeout <= 0 or >= interval, jitter < 0, a threshold < 1.
    """

    def __init__(
        self,
        pool: Pool,
        probe: Probe | None = None,
        *,
        interval: float = 5.0,
        timeout: float = 1.0,
        jitter: float = 0.0,
        unhealthy_threshold: int = 3,
        healthy_threshold: int = 2,
        no_traffic_interval: float | None = None,
        uneject_on_pass: bool = True,
        clock: Clock = default_clock,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(pool, Pool):
            msg = f"pool must be a tenantlb.Pool, got {type(pool).__name__}"
            raise TypeError(msg)
        if probe is None:
            probe = HTTPProbe()
        elif not _is_async_callable(probe):
            msg = (
                "probe must be an async callable (async def probe(endpoint) -> ProbeResult | bool),"
                f" got {probe!r}"
            )
            raise TypeError(msg)
        self.interval = seconds("interval", interval)
        self.timeout = seconds("timeout", timeout)
        if self.timeout >= self.interval:
            msg = f"timeout must be < interval ({self.interval:g}), got {timeout!r}"
            raise FieldValueError(msg, field="timeout")
        self.jitter = seconds("jitter", jitter, allow_zero=True)
        self.unhealthy_threshold = count("unhealthy_threshold", unhealthy_threshold)
        self.healthy_threshold = count("healthy_threshold", healthy_threshold)
        if no_traffic_interval is not None:
            no_traffic_interval = seconds("no_traffic_interval", no_traffic_interval)
            if no_traffic_interval <= self.timeout:
                msg = f"no_traffic_interval must be > timeout ({self.timeout:g}), got {no_traffic_interval!r}"
                raise FieldValueError(msg, field="no_traffic_interval")
        self.no_traffic_interval = no_traffic_interval
        self.uneject_on_pass = bool(uneject_on_pass)
        self.pool = pool
        self.probe: Probe = probe
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._thread: int | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._checks: dict[str, _Check] = {}
        self._dirty = False
        self._tasks = 0
        self._total = 0
        self._failures = 0
        self._timeouts = 0

    def __repr__(self) -> str:
        state = "running" if self._tg is not None else "stopped"
        return f"<HealthChecker pool={self.pool.name!r} probe={self.probe!r} interval={self.interval:g} {state}>"

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._tg is not None:
            msg = "HealthChecker is already running"
            raise RuntimeError(msg)
        async with AsyncExitStack() as stack:
            if hasattr(self.probe, "__aenter__") and hasattr(self.probe, "__aexit__"):
                await stack.enter_async_context(self.probe)  # type: ignore[arg-type]
            tg = anyio.create_task_group()
            await tg.__aenter__()
            self._tg = tg
            self._stack = stack.pop_all()
        self._thread = threading.get_ident()
        self._unsubscribe = self.pool.subscribe(self._on_event)
        self._reconcile()
        tg.start_soon(self._watch)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, stack = self._tg, self._stack
        if tg is None or stack is None:
            return None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tg.cancel_scope.cancel()
        try:
            suppress = await tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = self._stack = None
            self._thread = None
            checks, self._checks = self._checks, {}
            for check in checks.values():
                if check.healthy is False:
                    self._mark(check, True, "health checker stopped")
            with anyio.CancelScope(shield=True):
                await stack.aclose()
        return suppress

    # -- public --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True inside ``async with checker``."""
        return self._tg is not None

    def stats(self) -> HealthCheckerStats:
        """A frozen snapshot of the checker and each endpoint's check state."""
        endpoints = tuple(
            EndpointHealth(
                url=url,
                healthy=c.healthy,
                checks=c.checks,
                failures=c.failures,
                consecutive_failures=c.consecutive_failures,
                consecutive_successes=c.consecutive_successes,
                last_reason=c.last_reason,
                last_checked_at=c.last_checked_at,
                last_duration=c.last_duration,
            )
            for url, c in list(self._checks.items())
        )
        return HealthCheckerStats(
            running=self._tg is not None,
            checks=self._total,
            failures=self._failures,
            timeouts=self._timeouts,
            tasks=self._tasks,
            endpoints=endpoints,
        )

    # -- membership ----------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.kind not in ("endpoint_added", "endpoint_removed") or event.url is None:
            return
        if threading.get_ident() != self._thread:
            self._dirty = True  # another thread changed the pool: _watch reconciles soon
            return
        if event.kind == "endpoint_removed":
            self._stop(event.url)
        else:
            self._stop(event.url)  # a re-added URL gets a fresh loop
            self._start(event.url)

    def _reconcile(self) -> None:
        # Make the running loops match the pool: one per member, none for anyone else.
        self._dirty = False
        wanted: dict[str, EndpointState] = {}
        for endpoint in self.pool.endpoints:
            try:
                wanted[endpoint.url] = self.pool.state(endpoint)
            except EndpointNotFound:
                continue
        for url, check in list(self._checks.items()):
            if wanted.get(url) is not check.state:
                self._stop(url)
        for url in wanted:
            if url not in self._checks:
                self._start(url)

    def _start(self, url: str) -> None:
        tg = self._tg
        if tg is None:
            return
        try:
            state = self.pool.state(url)
        except EndpointNotFound:
            return
        check = _Check(state)
        self._checks[url] = check
        tg.start_soon(self._run, check, name=f"tenantlb health check {url}")

    def _stop(self, url: str) -> None:
        check = self._checks.pop(url, None)
        if check is not None:
            check.scope.cancel()

    async def _watch(self) -> None:
        # Picks up membership changes made from other threads (their events cannot start tasks).
        period = min(self.interval, 1.0)
        while True:
            await anyio.sleep(period)
            if self._dirty:
                try:
                    self._reconcile()
                except Exception:
                    logger.exception(
                        "tenantlb health checker failed to follow pool %r", self.pool.name
                    )

    # -- one endpoint --------------------------------------------------------------------------

    async def _run(self, check: _Check) -> None:
        self._tasks += 1
        try:
            with check.scope:
                if self.jitter:
                    await anyio.sleep(self._rng.uniform(0.0, self.jitter))
                while True:
                    # A cancel is delivered at the next checkpoint, and calling the probe is none:
                    # a loop woken just before its endpoint was removed must not probe it again.
                    if self._checks.get(check.state.url) is not check:
                        return
                    # Fixed cadence: the next check is due `interval` after this one started
                    # (timeout < interval guarantees the check is over by then).
                    started = anyio.current_time()
                    try:
                        await self._check_once(check)
                    except Exception:  # our own bug must not take the task group down
                        logger.exception("tenantlb health check of %s failed", check.state.url)
                    await anyio.sleep_until(started + self._delay(check))
        finally:
            self._tasks -= 1
            # A probe that keeps per-endpoint resources (HTTPProbe's keep-alive connection)
            # lets go of them when the endpoint stops being checked.
            forget = getattr(self.probe, "forget", None)
            if forget is not None and self._checks.get(check.state.url) is not check:
                with anyio.CancelScope(shield=True), suppress(Exception):
                    await forget(check.state.endpoint)

    async def _check_once(self, check: _Check) -> None:
        clock = self._clock
        started = clock()
        check.requests_seen = check.state.requests
        result: object = None
        timed_out = False
        try:
            with anyio.move_on_after(self.timeout) as scope:
                result = await self.probe(check.state.endpoint)
            timed_out = scope.cancelled_caught
        except Exception as exc:
            result = ProbeResult(healthy=False, reason=f"probe raised {type(exc).__name__}: {exc}")
        now = clock()
        if timed_out:
            self._timeouts += 1
            outcome = ProbeResult(healthy=False, reason=f"timeout after {self.timeout:g}s")
        else:
            outcome = _as_result(result)
        check.checks += 1
        check.last_checked_at = now
        check.last_duration = now - started
        check.last_reason = outcome.reason
        self._total += 1
        if self._checks.get(check.state.url) is not check:
            return  # removed while the probe ran
        if outcome.healthy:
            check.consecutive_failures = 0
            check.consecutive_successes += 1
            if check.healthy is None or (
                not check.healthy and check.consecutive_successes >= self.healthy_threshold
            ):
                self._mark(check, True, _why(check.consecutive_successes, "passed", outcome))
            if check.healthy and self.uneject_on_pass and check.state.ejected_until:
                with suppress(EndpointNotFound):
                    self.pool.uneject(check.state.endpoint, "active health check passed")
        else:
            self._failures += 1
            check.failures += 1
            check.consecutive_successes = 0
            check.consecutive_failures += 1
            if check.healthy is not False and (
                check.healthy is None
                or outcome.immediate
                or check.consecutive_failures >= self.unhealthy_threshold
            ):
                self._mark(check, False, _why(check.consecutive_failures, "failed", outcome))

    def _mark(self, check: _Check, healthy: bool, reason: str) -> None:
        check.healthy = healthy
        try:
            if healthy:
                self.pool.mark_healthy(check.state.endpoint, reason)
            else:
                self.pool.mark_unhealthy(check.state.endpoint, reason)
        except EndpointNotFound:
            pass

    def _delay(self, check: _Check) -> float:
        delay = self.interval
        slow = self.no_traffic_interval
        if slow is not None and check.healthy and check.state.requests == check.requests_seen:
            delay = slow
        if self.jitter:
            delay += self._rng.uniform(0.0, self.jitter)
        return delay


class _Check:
    """One endpoint's check loop state; touched only from the event loop thread."""

    __slots__ = (
        "checks",
        "consecutive_failures",
        "consecutive_successes",
        "failures",
        "healthy",
        "last_checked_at",
        "last_duration",
        "last_reason",
        "requests_seen",
        "scope",
        "state",
    )

    def __init__(self, state: EndpointState) -> None:
        self.state = state
        self.scope = anyio.CancelScope()
        self.healthy: bool | None = None
        self.checks = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.last_reason = ""
        self.last_checked_at: float | None = None
        self.last_duration: float | None = None
        self.requests_seen = 0


def _as_result(result: object) -> ProbeResult:
    if isinstance(result, ProbeResult):
        return result
    if result is True:
        return ProbeResult(healthy=True, reason="passed")
    if result is False:
        return ProbeResult(healthy=False, reason="failed")
    return ProbeResult(
        healthy=False, reason=f"probe returned {type(result).__name__}, not a bool or ProbeResult"
    )


def _why(n: int, verb: str, outcome: ProbeResult) -> str:
    detail = f" ({outcome.reason})" if outcome.reason else ""
    return f"active health check: {n} {verb}{detail}"


def _is_async_callable(obj: object) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - we need the method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)
