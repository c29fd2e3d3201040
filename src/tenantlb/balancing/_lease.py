"""`Lease`: one request's hold on an endpoint, and `LeaseOwner`, all a lease needs from its pool.

A lease is taken by `Pool.acquire` (or a subset's) and given back exactly once, by `Lease.record`
with the outcome or by `Lease.release` without one. It talks to the pool only through the
`LeaseOwner` the pool (or subset) hands it: the shared lock and clock, the balancer's outcome and
release hooks, and the outcome observer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, final

from .._clock import Clock
from .._events import Event, EventHandler, emit
from ._balancer import EndpointState, OutcomeObserver

if TYPE_CHECKING:
    from typing import Self

logger = logging.getLogger("tenantlb")

__all__ = ["Lease", "LeaseOwner"]


@final
class LeaseOwner:
    """What a lease needs from the pool (or pool subset) it was taken from.

    One per pool or subset, fixed once its balancer is adopted. ``observe`` and ``on_release`` are
    None when the balancer does not use them, so a lease skips the call. ``observe_now``: the
    balancer's ``observe`` takes the outcome's clock reading as a fourth argument, ``now``.
    """

    __slots__ = (
        "clock",
        "lock",
        "name",
        "observe",
        "observe_now",
        "observer",
        "on_release",
        "traffic",
    )

    def __init__(
        self,
        *,
        lock: threading.Lock,
        clock: Clock,
        observe: Callable[..., None] | None,
        observe_now: bool = False,
        on_release: Callable[[EndpointState], None] | None,
        observer: OutcomeObserver | None,
        name: str = "default",
        traffic: list[EventHandler] | None = None,
    ) -> None:
        self.lock = lock
        self.clock = clock
        self.observe = observe
        self.observe_now = observe_now
        self.on_release = on_release
        self.observer = observer
        self.name = name
        self.traffic: list[EventHandler] = [] if traffic is None else traffic

    def recorded(
        self,
        lease: Lease,
        status: int | None,
        error: BaseException | None,
        latency: float,
        now: float,
    ) -> None:
        """Emit the ``outcome`` event (called only while there are per-request subscribers)."""
        event = Event(
            kind="outcome",
            pool=self.name,
            url=lease.url,
            tenant=lease.tenant,
            status=status,
            latency=latency,
            reason="" if error is None else type(error).__name__,
            at=now,
        )
        emit(tuple(self.traffic), (event,))

    def release(self, state: EndpointState) -> None:
        """Give *state*'s in-flight slot back without an outcome."""
        with self.lock:
            state.in_flight -= 1
            if self.on_release is not None:
                self.on_release(state)


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

    # _tenant stays unset (and costs nothing) unless someone tags the lease: see `tenant`.
    __slots__ = ("_open", "_owner", "_state", "_tenant", "endpoint", "latency", "started")
    _tenant: str | None

    def __init__(self, owner: LeaseOwner, state: EndpointState, started: float) -> None:
        self._owner = owner
        self._state = state
        self._open = True
        self.endpoint = state.endpoint
        self.started = started
        self.latency: float | None = None

    @property
    def tenant(self) -> str | None:
        """The tenant id the lease serves, or None; named in its ``outcome`` event.

        A `Gateway` sets it while it has per-request subscribers.
        """
        try:
            return self._tenant
        except AttributeError:
            return None

    @tenant.setter
    def tenant(self, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            msg = f"tenant must be a str or None, got {type(value).__name__}"
            raise TypeError(msg)
        self._tenant = value

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._open:
            self._open = False
            self._owner.release(self._state)

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
        now = owner.clock()
        self.latency = latency = now - self.started
        lock = owner.lock
        lock.acquire()  # not `with`: this is the hot path, and acquire/release is half the cost
        try:
            state.in_flight -= 1
            state.requests += 1
            if failed:
                state.failures += 1
            if owner.on_release is not None:
                owner.on_release(state)
            observe = owner.observe
            if observe is not None:
                if owner.observe_now:
                    observe(state, latency, failed, now)  # saves the balancer a clock read
                else:
                    observe(state, latency, failed)
        finally:
            lock.release()
        observer = owner.observer
        # The observer sees failures, watched endpoints, and everything once its wake_at is due.
        if observer is not None and (
            error is not None
            or status >= 500  # type: ignore[operator]  # status is an int when error is None
            or state.watched
            or now >= observer.wake_at
        ):
            try:
                observer.observe(state, status, error, now)
            except Exception:  # a detector's failure must not fail the request it observed
                logger.exception("tenantlb outcome observer %r failed on %s", observer, state.url)
        if owner.traffic:
            owner.recorded(self, status, error, latency, now)

    def release(self) -> None:
        """Release without an outcome (idempotent; the context manager calls it for you)."""
        if self._open:
            self._open = False
            self._owner.release(self._state)

    def __repr__(self) -> str:
        state = "released" if not self._open else "held"
        return f"<Lease {self._state.url} {state}>"
