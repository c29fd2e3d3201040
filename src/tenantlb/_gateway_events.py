"""`GatewayEvents`: a gateway's subscribers and the per-tenant counters behind its stats.

The gateway owns one; admissions count on the per-tenant counters it hands out and call it to
build events. State-change subscribers get the store's and services' events (outages, discovery
failures); per-request subscribers also get ``admitted``, ``refused``, ``rate_limit`` and
``retry``. Hot paths test `traffic` for emptiness and build no event while nobody asked for them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import final

from ._clock import default_clock
from ._errors import RequestRejected
from ._events import PER_REQUEST_KINDS, Event, EventHandler, emit
from ._ticket import TenantStats, _reason, _TenantCounters
from .balancing import Lease, Pool, PoolSubset
from .ratelimit import Decision
from .tenants import Tenant

__all__ = ["GatewayEvents"]


@final
class GatewayEvents:
    """Subscribers and counters of one gateway (guarded by the gateway's lock)."""

    __slots__ = ("__weakref__", "_counters", "_lock", "_refusals", "clock", "handlers", "traffic")

    def __init__(self, on_event: EventHandler | None, lock: threading.Lock) -> None:
        self.clock = default_clock
        self._lock = lock
        # Copy-on-write lists: emitters iterate the list they read, never one being changed.
        self.handlers: list[EventHandler] = [on_event] if on_event is not None else []
        self.traffic: list[EventHandler] = []
        self._counters: dict[str, _TenantCounters] = {}
        self._refusals: dict[str, int] = {}

    def subscribe(self, handler: EventHandler, *, per_request: bool) -> Callable[[], None]:
        """See `Gateway.subscribe`."""
        if not callable(handler):
            msg = f"handler must be callable, got {type(handler).__name__}"
            raise TypeError(msg)
        with self._lock:
            self.handlers = [*self.handlers, handler]
            if per_request:
                self.traffic = [*self.traffic, handler]

        def unsubscribe() -> None:
            with self._lock:
                self.handlers = [h for h in self.handlers if h is not handler]
                self.traffic = [h for h in self.traffic if h is not handler]

        return unsubscribe

    def emit(self, event: Event) -> None:
        """See `Gateway.emit`."""
        if not isinstance(event, Event):
            msg = f"event must be an Event, got {type(event).__name__}"
            raise TypeError(msg)
        handlers = self.traffic if event.kind in PER_REQUEST_KINDS else self.handlers
        if handlers:
            emit(handlers, (event,))

    def relay(self, event: Event) -> None:
        """Pass a store's or service's own event (an outage, a recovery) to the state subscribers."""
        handlers = self.handlers
        if handlers:
            emit(handlers, (event,))

    def weak_relay(self) -> EventHandler:
        """`relay`, holding this object weakly: a store may outlive many gateways (reloads)."""
        ref = weakref.ref(self)

        def relay(event: Event) -> None:
            alive = ref()
            if alive is not None:
                alive.relay(event)

        return relay

    def refused(self, exc: RequestRejected, tenant: Tenant | None, pool: str) -> None:
        """Count a refusal (per tenant when known) and tell per-request subscribers."""
        reason = _reason(exc)
        with self._lock:
            self._refusals[reason] = self._refusals.get(reason, 0) + 1
            if tenant is not None:
                counters = self._counters.get(tenant.id)
                if counters is None:
                    counters = self._counters[tenant.id] = _TenantCounters()
                counters.refused[reason] = counters.refused.get(reason, 0) + 1
        traffic = self.traffic
        if traffic:
            event = Event(
                kind="refused",
                pool=pool,
                tenant=None if tenant is None else tenant.id,
                reason=reason,
                status=exc.status,
                at=self.clock(),
            )
            emit(traffic, (event,))

    def decision(self, tenant: Tenant, pool: str, decision: Decision) -> None:
        """Tell per-request subscribers a rate-limit decision (call only while `traffic`)."""
        event = Event(
            kind="rate_limit",
            pool=pool,
            tenant=tenant.id,
            allowed=decision.allowed,
            remaining=decision.remaining,
            retry_after=decision.retry_after,
            at=self.clock(),
        )
        emit(self.traffic, (event,))

    def counters(self, tenant_id: str) -> _TenantCounters:
        """The live counters of *tenant_id* (kept across reloads); admissions count on them."""
        with self._lock:
            counters = self._counters.get(tenant_id)
            if counters is None:
                counters = self._counters[tenant_id] = _TenantCounters()
        return counters

    def admitted(
        self, tenant: Tenant, pool: str, target: Pool | PoolSubset | None, lease: Lease | None
    ) -> None:
        """Tell per-request subscribers an admission (call only while `traffic`)."""
        if lease is not None:
            lease.tenant = tenant.id  # the pool's outcome event names the tenant
        event = Event(
            kind="admitted",
            pool=pool,
            url=None if lease is None else lease.url,
            tenant=tenant.id,
            panic=False if target is None else target.panic,
            at=self.clock() if lease is None else lease.started,
        )
        emit(self.traffic, (event,))

    def snapshot(
        self,
    ) -> tuple[int, int, Mapping[str, int], Mapping[str, TenantStats]]:
        """(admitted, in flight, refusals by reason, per-tenant stats), frozen."""
        by_tenant: dict[str, TenantStats] = {}
        with self._lock:
            for tenant_id, c in self._counters.items():
                finished = c.finished  # first: every request it counts is in `admitted` already
                admitted = c.admitted
                if admitted or c.refused:  # counters exist from a tenant's first request on
                    by_tenant[tenant_id] = TenantStats(
                        tenant=tenant_id,
                        admitted=admitted,
                        in_flight=admitted - finished,
                        refused=MappingProxyType(dict(c.refused)),
                    )
            refused = dict(self._refusals)
        return (
            sum(t.admitted for t in by_tenant.values()),
            sum(t.in_flight for t in by_tenant.values()),
            MappingProxyType(refused),
            MappingProxyType(by_tenant),
        )
