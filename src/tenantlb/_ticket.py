"""`Ticket`: one admitted request, as `Gateway.admit` yields it; `GatewayStats`: a gateway snapshot.

The gateway builds a ticket when it admits a request and, when the admission ends, records the
outcome (if the caller did not) and gives back the concurrency slot the ticket holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import final

import attrs

from ._errors import NoHealthyEndpoint
from .balancing import Endpoint, Lease, Pool, PoolStats, PoolSubset
from .ratelimit import ConcurrencyLimiter, Decision, Slot
from .tenants import Tenant

__all__ = ["GatewayStats", "Ticket"]


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
        "_slot",
        "_slots",
        "_target",
        "_tried",
        "decision",
        "lease",
        "max_body_size",
        "status",
        "tenant",
        "upstream",
    )

    def __init__(
        self,
        tenant: Tenant,
        lease: Lease | None,
        target: Pool | PoolSubset | None,
        upstream: str | None,
        decision: Decision | None,
        slots: ConcurrencyLimiter | None,
        slot: Slot | None,
        max_body_size: int | None = None,
    ) -> None:
        self.tenant = tenant
        self.lease = lease
        self.upstream = upstream
        self.decision = decision
        self.max_body_size = max_body_size
        self.status: int | None = None
        self._target = target
        self._slots = slots
        self._slot = slot
        self._tried: list[str] = [] if lease is None else [lease.url]

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
        if not self.lease.released:
            self.lease.record(error=error)
        try:
            lease = self._target.acquire(exclude=self._tried)
        except NoHealthyEndpoint as exc:
            msg = f"no endpoint left to retry after {len(self._tried)} attempt(s)"
            raise NoHealthyEndpoint(msg) from exc
        self.lease = lease
        self._tried.append(lease.url)
        return lease.endpoint

    @property
    def attempts(self) -> int:
        """How many endpoints this request has been sent to (1 + reroutes; 0 without an upstream)."""
        return len(self._tried)


@final
@attrs.define(frozen=True, kw_only=True)
class GatewayStats:
    """A snapshot of a gateway: tenant count and each pool's stats."""

    tenants: int
    pools: Mapping[str, PoolStats]
