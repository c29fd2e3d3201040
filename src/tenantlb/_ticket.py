"""`Ticket`: one admitted request, as `Gateway.admit` yields it; `GatewayStats` and `TenantStats`:
snapshots of what a gateway admitted and refused.

The gateway builds a ticket when it admits a request and, when the admission ends, records the
outcome (if the caller did not) and gives back the concurrency slot the ticket holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, final

import attrs

from ._errors import (
    ContentTooLarge,
    Forbidden,
    HeadersTooLarge,
    NoHealthyEndpoint,
    OverCapacity,
    QueueFull,
    QueueTimeout,
    RateLimited,
    RequestRejected,
    StoreUnavailable,
    Unauthenticated,
    UnknownTenant,
)
from ._events import Event, emit
from .balancing import Endpoint, Lease, Pool, PoolStats, PoolSubset
from .fairness import FairQueue, FairQueueStats, Turn
from .ratelimit import Decision, Slot
from .tenants import Tenant

if TYPE_CHECKING:
    from ._admission import TenantPlan

__all__ = ["GatewayStats", "TenantStats", "Ticket"]


@final
class Ticket:
    """An admitted request: who it is for, where to send it, and what to tell the client.

    Attributes:
        tenant: The `Tenant` snapshot the request was admitted under (kept even if the registry
            is reloaded meanwhile); the gateway's ``anonymous`` tenant for requests without
            credentials.
        lease: The `Lease` on the chosen endpoint (replaced by `reroute`), or None when the
            request was admitted without an upstream.
        upstream: The name of the pool the endpoint came from, or None.
        decision: The rate-limit `Decision`, or None if the tenant has no limits.
        max_body_size: The body size limit in bytes that applies (the smaller of the gateway's
            and the tenant's), or None; adapters enforce it while streaming the body.
        status: The status given to `record`, or None (nothing recorded yet).
    """

    __slots__ = (
        "_plan",
        "_slot",
        "_target",
        "_tried",
        "_turn",
        "decision",
        "lease",
        "max_body_size",
        "status",
        "tenant",
        "upstream",
    )

    def __init__(
        self,
        plan: TenantPlan,
        lease: Lease | None,
        target: Pool | PoolSubset | None,
        upstream: str | None,
        decision: Decision | None,
        slot: Slot | None,
    ) -> None:
        self.tenant: Tenant = plan.tenant
        self.lease = lease
        self.upstream = upstream
        self.decision = decision
        self.max_body_size = plan.max_body
        self.status: int | None = None
        self._plan = plan  # the tenant's limiters and counters, the gateway's events
        self._target = target
        self._slot = slot
        self._turn: tuple[FairQueue, Turn] | None = None
        self._tried: list[str] | None = None  # endpoints tried, once rerouted

    def __repr__(self) -> str:
        where = None if self.lease is None else self.lease.url
        return f"<Ticket tenant={self.tenant.id!r} endpoint={where!r}>"

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Response headers to add: IETF ``RateLimit`` / ``RateLimit-Policy`` (empty without limits).

        Built on access, so requests whose adapter does not send them do not pay for them.
        """
        return self.decision.headers() if self.decision is not None else []

    @property
    def endpoint(self) -> Endpoint | None:
        """The endpoint to send the request to (None when admitted without an upstream)."""
        return None if self.lease is None else self.lease.endpoint

    def record(self, *, status: int | None = None, error: BaseException | None = None) -> None:
        """Record the outcome: kept in `status`, and on the current lease if there is one.

        See `Lease.record`; without a lease only *status* is kept (for stats and logs).
        """
        self.status = status
        if self.lease is not None:
            self.lease.record(status=status, error=error)

    def reroute(self, error: BaseException) -> Endpoint:
        """Record *error* on the current endpoint and lease another one from the same upstream.

        Use it to retry connection errors (the request never reached the backend); endpoints
        already tried are excluded.

        Returns:
            The new endpoint (also ``ticket.endpoint``).

        Raises:
            NoHealthyEndpoint: Every endpoint of the tenant's upstream (or shard) was tried.
            RuntimeError: The ticket has no upstream (admitted without a lease).
        """
        if self._target is None or self.lease is None:
            msg = "a ticket admitted without an upstream cannot be rerouted"
            raise RuntimeError(msg)
        failed = self.lease
        tried = self._tried
        if tried is None:
            tried = self._tried = [failed.url]
        if not failed.released:
            failed.record(error=error)
        events = self._plan.events
        if events.traffic:
            event = Event(
                kind="retry",
                pool=self.upstream or "",
                url=failed.url,
                tenant=self.tenant.id,
                reason=type(error).__name__,
                at=events.clock(),
            )
            emit(events.traffic, (event,))
        try:
            lease = self._target.acquire(exclude=tried)
        except NoHealthyEndpoint as exc:
            msg = f"no endpoint left to retry after {len(tried)} attempt(s)"
            raise NoHealthyEndpoint(msg) from exc
        if events.traffic:
            lease.tenant = self.tenant.id
        self.lease = lease
        tried.append(lease.url)
        return lease.endpoint

    @property
    def attempts(self) -> int:
        """How many endpoints this request has been sent to (1 + reroutes; 0 without an upstream)."""
        if self._tried is not None:
            return len(self._tried)
        return 0 if self.lease is None else 1


@final
@attrs.define(frozen=True, kw_only=True)
class GatewayStats:
    """A snapshot of a gateway: its pools and fair queues, and what it admitted and refused.

    Attributes:
        tenants: The number of tenants in the registry.
        pools: Each pool's `PoolStats` by name.
        queues: Each fair queue's `FairQueueStats` by pool name (see ``concurrency=``).
        admitted: Requests admitted since the gateway was built.
        in_flight: Admitted requests not finished yet.
        refused: Refusals by reason code (``"rate_limited"``, ``"unauthenticated"``, ...; see
            `TenantStats.refused`), including those of requests that matched no tenant.
        by_tenant: Per-tenant counters by tenant id, for every tenant that was admitted or
            refused at least once (the ``anonymous`` tenant's under its id).
        store: The store's own stats snapshot if it keeps one (a `RedisStore` gives
            ``RedisStoreStats``: availability, outages, errors, fallback decisions), else None.
    """

    tenants: int
    pools: Mapping[str, PoolStats]
    queues: Mapping[str, FairQueueStats] = attrs.field(factory=lambda: MappingProxyType({}))
    admitted: int = 0
    in_flight: int = 0
    refused: Mapping[str, int] = attrs.field(factory=lambda: MappingProxyType({}))
    by_tenant: Mapping[str, TenantStats] = attrs.field(factory=lambda: MappingProxyType({}))
    store: object | None = None


@final
@attrs.define(frozen=True, kw_only=True)
class TenantStats:
    """A snapshot of one tenant's admissions.

    Attributes:
        tenant: The tenant id.
        admitted: Requests admitted.
        in_flight: Admitted requests not finished yet.
        refused: Refusals by reason code: ``"forbidden"``, ``"rate_limited"``,
            ``"over_capacity"``, ``"queue_full"``, ``"queue_timeout"``, ``"no_healthy_endpoint"``, ``"store_unavailable"``,
            ``"content_too_large"``, ``"headers_too_large"`` (refusals before the tenant is known,
            such as ``"unauthenticated"`` and ``"unknown_tenant"``, are counted in
            `GatewayStats.refused` only).
    """

    tenant: str
    admitted: int
    in_flight: int
    refused: Mapping[str, int]


class _TenantCounters:
    """The live counters behind `TenantStats`.

    `admitted` and `finished` only grow, each by one ``+= 1`` per request, taken without a lock:
    under the GIL the load, add and store of an int slot run with no switch between them (the
    interpreter switches threads only at calls and backward jumps), so no count is lost, and a
    request then costs no lock at all (a free-threaded build may lose an increment under
    contention: these are statistics, not quotas). In flight is their difference. `refused` is a
    dict and changes under the gateway's lock (refusals are not the hot path).
    """

    __slots__ = ("admitted", "finished", "refused")

    def __init__(self) -> None:
        self.admitted = 0
        self.finished = 0
        self.refused: dict[str, int] = {}


_REASONS: dict[type[RequestRejected], str] = {
    UnknownTenant: "unknown_tenant",
    Unauthenticated: "unauthenticated",
    Forbidden: "forbidden",
    RateLimited: "rate_limited",
    OverCapacity: "over_capacity",
    QueueFull: "queue_full",  # a fair queue's refusals, more precise than their base class
    QueueTimeout: "queue_timeout",
    NoHealthyEndpoint: "no_healthy_endpoint",
    StoreUnavailable: "store_unavailable",
    ContentTooLarge: "content_too_large",
    HeadersTooLarge: "headers_too_large",
}


def _reason(exc: RequestRejected) -> str:
    """The refusal's reason code (a fixed word, never the message: messages name tenants)."""
    for cls in type(exc).__mro__:
        reason = _REASONS.get(cls)
        if reason is not None:
            return reason
    return "rejected"
