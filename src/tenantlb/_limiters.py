"""`LimiterCache`: the gateway's rate and concurrency limiters, one per distinct setting.

Tenants with equal limits share one `RateLimiter` (their keys still differ: the tenant id), and
tenants with equal ``max_concurrency`` one `ConcurrencyLimiter`. The gateway looks them up once
per tenant object (its `TenantPlan`), not per request. Hot reloads leave limiters no tenant uses
any more; they are pruned when the cache has doubled since the last prune, so the cost is
amortised O(1) per new limiter and the cache stays within twice what current tenants need.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import final

from .ratelimit import Algorithm, ConcurrencyLimiter, Rate, RateLimiter, Store
from .tenants import Tenant

__all__ = ["LimiterCache"]


@final
class LimiterCache:
    """Limiters by setting, shared by the tenants that have it (guarded by the gateway's lock)."""

    __slots__ = (
        "_algorithm",
        "_lease_ttl",
        "_limiters",
        "_lock",
        "_prune_at",
        "_slots",
        "_store",
        "_tenants",
    )

    def __init__(
        self,
        *,
        store: Store,
        algorithm: Algorithm,
        lease_ttl: float,
        lock: threading.Lock,
        tenants: Callable[[], Iterable[Tenant]],
    ) -> None:
        self._store = store
        self._algorithm = algorithm
        self._lease_ttl = lease_ttl
        self._lock = lock
        self._tenants = tenants  # the current tenants (the registry's, and the anonymous one)
        self._limiters: dict[tuple[Rate, ...], RateLimiter] = {}
        self._slots: dict[int, ConcurrencyLimiter] = {}
        self._prune_at = 64

    def __len__(self) -> int:
        return len(self._limiters) + len(self._slots)

    def rates(self, rates: tuple[Rate, ...]) -> RateLimiter:
        """The limiter for *rates* (a tenant's immutable ``limits`` tuple)."""
        with self._lock:
            limiter = self._limiters.get(rates)
            if limiter is None:
                if len(self) >= self._prune_at:
                    self._prune()
                limiter = RateLimiter(rates, store=self._store, algorithm=self._algorithm)
                self._limiters[rates] = limiter
        return limiter

    def slots(self, limit: int) -> ConcurrencyLimiter:
        """The concurrency limiter for *limit* slots per tenant."""
        slots = self._slots.get(limit)
        if slots is None:
            with self._lock:
                slots = self._slots.get(limit)
                if slots is None:
                    if len(self) >= self._prune_at:
                        self._prune()
                    slots = ConcurrencyLimiter(limit, store=self._store, lease_ttl=self._lease_ttl)
                    self._slots[limit] = slots
        return slots

    def _prune(self) -> None:
        # Under the lock. Requests still running on an old registry keep their limiter through
        # their ticket (its tenant plan).
        tenants = list(self._tenants())
        limits = {t.limits for t in tenants if t.limits}
        caps = {t.max_concurrency for t in tenants if t.max_concurrency is not None}
        self._limiters = {k: v for k, v in self._limiters.items() if k in limits}
        self._slots = {k: v for k, v in self._slots.items() if k in caps}
        self._prune_at = max(64, 2 * len(self))
