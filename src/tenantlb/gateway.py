"""`Gateway`: the composed flow — resolve the tenant, authenticate, rate-limit, take a concurrency
slot, lease an endpoint from the tenant's own upstream (and shard), and record the outcome.

```python
gateway = Gateway(registry=registry, pools={"shared": pool})
async with gateway.admit(RequestInfo("GET", "/v1/chat", headers)) as ticket:
    response = await send(ticket.endpoint.url, ...)
    ticket.record(status=response.status_code)
# ticket.headers: RateLimit headers to add to the response
```

Every refusal is a `RequestRejected` subclass carrying the HTTP status an adapter should answer
with: `Unauthenticated` / `UnknownTenant` (401), `Forbidden` (403), `RateLimited` (429, with the
decision and ``Retry-After``), `OverCapacity` (503); and `NoHealthyEndpoint` when the tenant's
upstream has nothing to offer. A refusal after the rate limit was charged gives the charge back, so
a request that was not served consumes no quota.

Isolation: a ticket's endpoint always comes from a pool named by the tenant itself (its
``upstream`` or ``routes``), restricted to its shuffle shard when ``shard_size`` is set; a tenant's
limits and concurrency are keyed by its id, so tenants never share quota.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, final

import anyio
import attrs
from cachetools import LRUCache

from ._errors import (
    ConfigError,
    Forbidden,
    NoHealthyEndpoint,
    RateLimited,
)
from .balancing import Endpoint, Lease, Pool, PoolStats, PoolSubset
from .ratelimit import ConcurrencyLimiter, Decision, MemoryStore, Rate, RateLimiter, Slot
from .tenants import RequestInfo, Tenant, TenantRegistry, shuffle_shard

if TYPE_CHECKING:
    from .ratelimit import Store

__all__ = ["Gateway", "GatewayStats", "HashOn", "Ticket"]

HashOn = (
    Literal["client_ip", "tenant"] | Callable[[RequestInfo, Tenant], "str | bytes | None"] | None
)


class _Service(Protocol):
    """Something the gateway runs while it is entered (a `HealthChecker`)."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: object) -> Any: ...


@final
class Gateway:
    """Multi-tenant admission in front of one or more pools.

    Args:
        registry: The tenants (hot-reload it with ``registry.replace(...)``).
        pools: Upstream pools by name; a tenant's ``upstream`` / ``routes`` name them.
        store: Where rate-limit and concurrency state lives: a `MemoryStore` (default, this process)
            or a `RedisStore` (shared by every process using the same Redis).
        algorithm: The rate-limit algorithm for tenant limits (default ``"gcra"``).
        hash_on: The key hashing balancers use: ``"client_ip"`` (IP hash, honouring the request's
            trusted proxies), ``"tenant"`` (stickiness per tenant), a callable
            ``(request, tenant) -> key``, or None (default; no key).
        services: Things to run while the gateway is entered with ``async with gateway:``, such as
            the `HealthChecker` objects `from_config` builds.
        trusted_proxies: Peers (IPs or CIDRs) whose ``X-Forwarded-For`` is believed by `request`.
        owns_store: Close the store (its Redis clients) when the gateway is closed; set by
            `from_config`, which builds the store itself.
        lease_ttl: Seconds a tenant's concurrency slot lives in Redis without renewal (> 0,
            default 60). Slots of running requests are renewed in the background every third
            of it, so a long request (a stream) keeps its slot; a crashed process's slots come
            back within it.

    Raises:
        TypeError: A pool that is not a `Pool`, or a registry that is not a `TenantRegistry`.
        ValueError: *lease_ttl* is not a finite number > 0.
        ConfigError: A tenant names an upstream that is not in *pools* (all such problems listed).
    """

    def __init__(
        self,
        *,
        registry: TenantRegistry,
        pools: Mapping[str, Pool],
        store: Store | None = None,
        algorithm: str = "gcra",
        hash_on: HashOn = None,
        services: Sequence[_Service] = (),
        trusted_proxies: Sequence[str] = (),
        owns_store: bool = False,
        lease_ttl: float = 60.0,
    ) -> None:
        if not isinstance(registry, TenantRegistry):
            msg = f"registry must be a TenantRegistry, got {type(registry).__name__}"
            raise TypeError(msg)
        if not isinstance(pools, Mapping):
            msg = f"pools must be a mapping of name -> Pool, got {type(pools).__name__}"
            raise TypeError(msg)
        for name, pool in pools.items():
            if not isinstance(name, str) or not isinstance(pool, Pool):
                msg = f"pools[{name!r}] must be a Pool named by a str, got {type(pool).__name__}"
                raise TypeError(msg)
        if hash_on not in (None, "client_ip", "tenant") and not callable(hash_on):
            msg = f"hash_on must be 'client_ip', 'tenant', a callable or None, got {hash_on!r}"
            raise ValueError(msg)
        self._registry = registry
        self._pools = dict(pools)
        self._store: Store = MemoryStore() if store is None else store
        self._sync_store = isinstance(self._store, MemoryStore)
        self._algorithm = algorithm
        self._hash_on = hash_on
        self._services = tuple(services)
        self._owns_store = owns_store
        self._lease_ttl = lease_ttl
        self._trusted_proxies = tuple(trusted_proxies)
        self._trusted_networks = tuple(
            _network(f"trusted_proxies[{i}]", p) for i, p in enumerate(self._trusted_proxies)
        )
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._lock = threading.Lock()
        self._limiters: dict[tuple[Rate, ...], RateLimiter] = {}
        self._by_identity: dict[int, tuple[tuple[Rate, ...], RateLimiter]] = {}
        self._slots: dict[int, ConcurrencyLimiter] = {}
        self._prune_at = 64  # limiters kept for tenants of past reloads are dropped past this
        self._shards: LRUCache[tuple[str, int, str], tuple[int, PoolSubset]] = LRUCache(65536)
        # Fail fast on a bad algorithm name or lease_ttl rather than at the first request.
        RateLimiter(Rate(1, per=1.0), store=MemoryStore(), algorithm=algorithm)
        ConcurrencyLimiter(1, store=MemoryStore(), lease_ttl=lease_ttl)
        problems = [
            (f"tenants[{i}].upstream", f"pool {name!r} of tenant {tenant.id!r} is not configured")
            for i, tenant in enumerate(registry)
            for name in sorted(tenant.upstreams)
            if name not in self._pools
        ]
        if problems:
            raise ConfigError.collect(problems)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Gateway:
        """Build a gateway (pools, balancers, health, store, tenants) from one config mapping.

        See ``docs/how-to/config.md`` for the schema.

        Raises:
            ConfigError: Every problem in the document, each with its path.
        """
        from .config import build_gateway

        return build_gateway(config)

    def __repr__(self) -> str:
        return f"<Gateway pools={sorted(self._pools)} tenants={len(self._registry)}>"

    @property
    def registry(self) -> TenantRegistry:
        """The tenant registry; replace its tenants at any time (in-flight requests keep theirs)."""
        return self._registry

    @property
    def pools(self) -> Mapping[str, Pool]:
        """The upstream pools by name."""
        return dict(self._pools)

    @property
    def trusted_proxies(self) -> tuple[str, ...]:
        """Peers (IPs or CIDRs) whose X-Forwarded-For / Forwarded headers are believed."""
        return self._trusted_proxies

    def request(
        self,
        method: str,
        path: str,
        headers: Any = (),
        *,
        scheme: str = "http",
        host: str | None = None,
        client: tuple[str, int] | None = None,
    ) -> RequestInfo:
        """Build a `RequestInfo` that honours this gateway's trusted proxies (for adapters)."""
        return RequestInfo(
            method,
            path,
            headers,
            scheme=scheme,
            host=host,
            client=client,
            trusted_proxies=self._trusted_networks,
        )

    @property
    def store(self) -> Store:
        """The rate-limit and concurrency store."""
        return self._store

    @property
    def services(self) -> tuple[_Service, ...]:
        """What ``async with gateway:`` runs (health checkers)."""
        return self._services

    async def __aenter__(self) -> Gateway:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            for service in self._services:
                await stack.enter_async_context(service)
        except BaseException:
            await stack.aclose()
            raise
        self._exit_stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._exit_stack = self._exit_stack, None
        try:
            if stack is not None:
                await stack.aclose()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the store if the gateway built it (`from_config`); ``async with`` calls this."""
        close = getattr(self._store, "aclose", None) if self._owns_store else None
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()

    def admit(self, request: RequestInfo, *, cost: float = 1) -> Admission:
        """Admit *request*: ``async with gateway.admit(request) as ticket: ...``.

        Args:
            request: The request (`RequestInfo`).
            cost: What the request costs against the tenant's limits (requests, tokens, bytes).

        Returns:
            An async context manager yielding a `Ticket`; on exit the outcome is recorded (or the
            lease released) and the concurrency slot given back.

        Raises:
            Unauthenticated: Missing, malformed or wrong credentials.
            UnknownTenant: No tenant matched.
            Forbidden: The tenant is disabled or has no upstream for the request's path.
            RateLimited: A limit said no (``.decision``, ``.headers`` with Retry-After).
            OverCapacity: The tenant's concurrency slots are all taken.
            NoHealthyEndpoint: The tenant's upstream (or shard) has no endpoint to offer.
            StoreUnavailable: Redis is unreachable and the store's policy is to fail closed.
            ValueError: *cost* is not > 0, or more than the tenant's smallest burst (it could
                never be admitted); nothing is charged.
        """
        if not isinstance(request, RequestInfo):
            msg = f"request must be a RequestInfo, got {type(request).__name__}"
            raise TypeError(msg)
        return Admission(self, request, cost)

    def stats(self) -> GatewayStats:
        """A snapshot of every pool and the number of tenants."""
        return GatewayStats(
            tenants=len(self._registry),
            pools={name: pool.stats() for name, pool in self._pools.items()},
        )

    # -- the flow ----------------------------------------------------------------------------------

    async def _admit(self, request: RequestInfo, cost: float) -> Ticket:
        tenant = self._registry.resolve(request)
        path = request.path
        pool_name = tenant.upstream_for(path)
        if pool_name is None:
            msg = f"tenant {tenant.id!r} has no upstream for {path[:200]!r}"
            raise Forbidden(msg)
        pool = self._pools.get(pool_name)
        if pool is None:
            msg = f"upstream {pool_name!r} of tenant {tenant.id!r} is not configured"
            raise Forbidden(msg)
        decision: Decision | None = None
        limiter: RateLimiter | None = None
        if tenant.limits:
            limiter = self._limiter(tenant.limits)
            if self._sync_store:
                decision = limiter.acquire_nowait(tenant.id, cost)
            else:
                decision = await limiter.acquire(tenant.id, cost)
            if not decision.allowed:
                msg = f"tenant {tenant.id!r} is over its rate limit"
                raise RateLimited(msg, decision=decision, headers=decision.headers())
        slots: ConcurrencyLimiter | None = None
        slot: Slot | None = None
        try:
            if tenant.max_concurrency is not None:
                slots = self._concurrency(tenant.max_concurrency)
                if self._sync_store:
                    slot = slots.acquire_nowait(tenant.id)  # raises OverCapacity when full
                else:
                    slot = await slots.acquire(tenant.id)  # raises OverCapacity when full
            target = self._target(tenant, pool, pool_name)
            key = self._key(request, tenant)
            lease = target.acquire(key)
        except BaseException:
            try:
                if slots is not None and slot is not None:
                    await self._free(slots, slot)
            finally:  # a cancel while freeing (asyncio: at any await) must not skip the refund
                if limiter is not None:
                    await self._refund(limiter, tenant.id, cost)
            raise
        return Ticket(tenant, lease, target, pool_name, decision, slots, slot)

    async def _finish(self, ticket: Ticket, exc: BaseException | None) -> None:
        lease = ticket.lease
        if not lease.released:
            if isinstance(exc, Exception):
                lease.record(error=exc)
            else:  # no outcome, or cancelled (a BaseException on asyncio and trio alike):
                lease.release()  # neither reward nor punish the endpoint
        slot, slots = ticket._slot, ticket._slots
        if slot is not None and slots is not None:
            ticket._slot = None
            if self._sync_store:
                slots.release_nowait(slot)  # no coroutine for the in-memory case
            else:
                await self._free(slots, slot)

    async def _free(self, slots: ConcurrencyLimiter, slot: Slot) -> None:
        if self._sync_store:
            slots.release_nowait(slot)
        else:
            with anyio.CancelScope(shield=True):  # a cancelled request must still free its slot
                await slots.release(slot)

    async def _refund(self, limiter: RateLimiter, key: str, cost: float) -> None:
        with anyio.CancelScope(shield=True):
            if self._sync_store:
                limiter.refund_nowait(key, cost)
            else:
                await limiter.refund(key, cost)

    def _limiter(self, rates: tuple[Rate, ...]) -> RateLimiter:
        # Looked up by the identity of the tenant's (immutable) limits tuple first: hashing a tuple
        # of attrs Rates on every request costs more than the rate-limit decision itself.
        cached = self._by_identity.get(id(rates))
        if cached is not None and cached[0] is rates:
            return cached[1]
        with self._lock:
            limiter = self._limiters.get(rates)
            if limiter is None:
                if len(self._limiters) + len(self._slots) >= self._prune_at:
                    self._prune()
                limiter = RateLimiter(rates, store=self._store, algorithm=self._algorithm)
                self._limiters[rates] = limiter
            if len(self._by_identity) >= 65536:
                self._by_identity.clear()  # bounded; stale ids from reloaded tenants go too
            self._by_identity[id(rates)] = (rates, limiter)
        return limiter

    def _concurrency(self, limit: int) -> ConcurrencyLimiter:
        slots = self._slots.get(limit)
        if slots is None:
            with self._lock:
                slots = self._slots.get(limit)
                if slots is None:
                    if len(self._limiters) + len(self._slots) >= self._prune_at:
                        self._prune()
                    slots = ConcurrencyLimiter(limit, store=self._store, lease_ttl=self._lease_ttl)
                    self._slots[limit] = slots
        return slots

    def _prune(self) -> None:
        """Forget limiters no current tenant uses (left by hot reloads); under ``self._lock``.

        Runs when the cache doubled since the last prune, so it is amortised O(1) per new
        limiter, and the caches stay within twice what the current tenants need. Requests
        still running on an old registry keep their limiter through their ticket.
        """
        tenants = list(self._registry)
        limits = {t.limits for t in tenants if t.limits}
        caps = {t.max_concurrency for t in tenants if t.max_concurrency is not None}
        self._limiters = {k: v for k, v in self._limiters.items() if k in limits}
        self._slots = {k: v for k, v in self._slots.items() if k in caps}
        self._by_identity.clear()
        self._prune_at = max(64, 2 * (len(self._limiters) + len(self._slots)))

    def _target(self, tenant: Tenant, pool: Pool, pool_name: str) -> Pool | PoolSubset:
        k = tenant.shard_size
        if k is None or k >= len(pool):
            return pool
        cache_key = (tenant.id, k, pool_name)
        generation = pool.generation
        with self._lock:  # an LRUCache reorders itself on every read: not thread-safe alone
            cached = self._shards.get(cache_key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        urls = shuffle_shard(tenant.id, [e.url for e in pool.endpoints], k)
        subset = pool.subset(urls)
        with self._lock:
            self._shards[cache_key] = (generation, subset)
        return subset

    def _key(self, request: RequestInfo, tenant: Tenant) -> str | bytes | None:
        hash_on = self._hash_on
        if hash_on is None:
            return None
        if hash_on == "client_ip":
            return request.client_ip
        if hash_on == "tenant":
            return tenant.id
        return hash_on(request, tenant)


def _network(where: str, value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        msg = f"{where} must be an IP or CIDR string, got {type(value).__name__}"
        raise TypeError(msg)
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        msg = f"{where} must be an IP address or CIDR, got {value!r}"
        raise ValueError(msg) from None


@final
class Admission:
    """The async context manager `Gateway.admit` returns; it yields a `Ticket`."""

    __slots__ = ("_cost", "_gateway", "_request", "_ticket")

    def __init__(self, gateway: Gateway, request: RequestInfo, cost: float) -> None:
        self._gateway = gateway
        self._request = request
        self._cost = cost
        self._ticket: Ticket | None = None

    async def __aenter__(self) -> Ticket:
        if self._ticket is not None:
            msg = "an admission can be entered once"
            raise RuntimeError(msg)
        self._ticket = ticket = await self._gateway._admit(self._request, self._cost)
        return ticket

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ticket = self._ticket
        if ticket is not None:
            await self._gateway._finish(ticket, exc)


@final
class Ticket:
    """An admitted request: who it is for, where to send it, and what to tell the client.

    Attributes:
        tenant: The `Tenant` snapshot the request was admitted under (kept even if the registry
            is reloaded meanwhile).
        lease: The `Lease` on the chosen endpoint (replaced by `reroute`).
        upstream: The name of the pool the endpoint came from.
        decision: The rate-limit `Decision`, or None if the tenant has no limits.
    """

    __slots__ = (
        "_slot",
        "_slots",
        "_target",
        "_tried",
        "decision",
        "lease",
        "tenant",
        "upstream",
    )

    def __init__(
        self,
        tenant: Tenant,
        lease: Lease,
        target: Pool | PoolSubset,
        upstream: str,
        decision: Decision | None,
        slots: ConcurrencyLimiter | None,
        slot: Slot | None,
    ) -> None:
        self.tenant = tenant
        self.lease = lease
        self.upstream = upstream
        self.decision = decision
        self._target = target
        self._slots = slots
        self._slot = slot
        self._tried: list[str] = [lease.url]

    def __repr__(self) -> str:
        return f"<Ticket tenant={self.tenant.id!r} endpoint={self.lease.url!r}>"

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Response headers to add: IETF ``RateLimit`` / ``RateLimit-Policy`` (empty without limits).

        Built on access, so requests whose adapter does not send them do not pay for them.
        """
        return self.decision.headers() if self.decision is not None else []

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint to send the request to."""
        return self.lease.endpoint

    def record(self, *, status: int | None = None, error: BaseException | None = None) -> None:
        """Record the outcome on the current lease (see `Lease.record`)."""
        self.lease.record(status=status, error=error)

    def reroute(self, error: BaseException) -> Endpoint:
        """Record *error* on the current endpoint and lease another one from the same upstream.

        Use it to retry connection errors (the request never reached the backend); endpoints
        already tried are excluded.

        Returns:
            The new endpoint (also ``ticket.endpoint``).

        Raises:
            NoHealthyEndpoint: Every endpoint of the tenant's upstream (or shard) was tried.
        """
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
        """How many endpoints this request has been sent to (1 + reroutes)."""
        return len(self._tried)


@final
@attrs.define(frozen=True, kw_only=True)
class GatewayStats:
    """A snapshot of a gateway: tenant count and each pool's stats."""

    tenants: int
    pools: Mapping[str, PoolStats]
