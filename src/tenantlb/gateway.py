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
with: `Unauthenticated` / `UnknownTenant` (401, with a ``WWW-Authenticate`` challenge),
`Forbidden` (403), `ContentTooLarge` (413), `HeadersTooLarge` (431), `RateLimited` (429, with the
decision and ``Retry-After``), `OverCapacity` (503); and `NoHealthyEndpoint` when the tenant's
upstream has nothing to offer.

Admission works without an upstream: a tenant with no pool for the request's path (or a request
admitted with ``lease=False``, as middleware in front of an app does) gets a ticket with auth,
limits and a concurrency slot but no lease. Requests without credentials are refused with 401
unless the gateway has an ``anonymous`` tenant: then they are admitted as that tenant, its limits
and concurrency counted per client IP. A refusal after the rate limit was charged gives the charge back, so
a request that was not served consumes no quota.

Isolation: a ticket's endpoint always comes from a pool named by the tenant itself (its
``upstream`` or ``routes``), restricted to its shuffle shard when ``shard_size`` is set; a tenant's
limits and concurrency are keyed by its id, so tenants never share quota.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType
from typing import Any, Literal, final

import anyio

from ._admission import Admission, AdmissionFlow
from ._edge import challenge, fair_queues, network
from ._errors import ConfigError
from ._events import Event, EventHandler
from ._gateway_events import GatewayEvents
from ._limiters import LimiterCache
from ._ticket import GatewayStats, TenantStats, Ticket
from ._validate import FieldTypeError, FieldValueError, optional_count
from .balancing import Pool
from .fairness import FairQueue
from .ratelimit import Algorithm, ConcurrencyLimiter, MemoryStore, Store, resolve_algorithm
from .tenants import RequestInfo, Tenant, TenantRegistry

__all__ = ["Admission", "Gateway", "GatewayStats", "HashOn", "TenantStats", "Ticket"]

HashOn = (
    Literal["client_ip", "tenant"] | Callable[[RequestInfo, Tenant], "str | bytes | None"] | None
)


@final
class Gateway:
    """Multi-tenant admission in front of one or more pools.

    Args:
        registry: The tenants (hot-reload it with ``registry.replace(...)``).
        pools: Upstream pools by name; a tenant's ``upstream`` / ``routes`` name them.
        store: Where rate-limit and concurrency state lives: a `MemoryStore` (default, this process)
            or a `RedisStore` (shared by every process using the same Redis).
        algorithm: The rate-limit algorithm for tenant limits: a registered name (default
            ``"gcra"``; see `tenantlb.ratelimit.ALGORITHMS`) or an `Algorithm` instance.
        hash_on: The key hashing balancers use: ``"client_ip"`` (IP hash, honouring the request's
            trusted proxies), ``"tenant"`` (stickiness per tenant), a callable
            ``(request, tenant) -> key``, or None (default; no key).
        services: Things to run while the gateway is entered with ``async with gateway:``, such as
            the `HealthChecker` and discovery runners `from_config` builds.
        trusted_proxies: Peers (IPs or CIDRs) whose ``X-Forwarded-For`` is believed by `request`.
        owns_store: Close the store (its Redis clients) when the gateway is closed; set by
            `from_config`, which builds the store itself.
        lease_ttl: Seconds a tenant's concurrency slot lives in Redis without renewal (> 0,
            default 60). Slots of running requests are renewed in the background every third
            of it, so a long request (a stream) keeps its slot; a crashed process's slots come
            back within it.
        anonymous: The policy for requests without credentials: None (default) refuses them
            with 401; a `Tenant` (without API keys) admits them as that tenant, its ``limits``
            and ``max_concurrency`` applied to each client IP separately (the IP honours
            *trusted_proxies*).
        max_body_size: Largest request body in bytes for every tenant (413 beyond), or None.
            A tenant's own ``max_body_size`` applies if smaller.
        max_header_size: Largest total size of the header fields in bytes (431 beyond), or None;
            checked before authentication. A tenant's own ``max_header_size`` applies if smaller.
        concurrency: A `FairQueue` per pool name: requests to that pool share its budget, queued
            fairly across tenants (the tenant's id is the flow, ``Tenant.weight`` its weight;
            anonymous clients are one flow per IP). `QueueFull` / `QueueTimeout` refuse with 503.
        on_event: A handler called with the gateway's state changes, its store's and its
            services' (discovery outages); more, and per-request events, with `subscribe`.

    Raises:
        TypeError: A pool that is not a `Pool`, or a registry that is not a `TenantRegistry`.
        ValueError: *lease_ttl* is not a finite number > 0.
        ConfigError: A tenant names an upstream that is not in *pools* (all such problems listed).
        ValueError: An *anonymous* tenant with API keys, or a size limit that is not >= 1.
    """

    def __init__(
        self,
        *,
        registry: TenantRegistry,
        pools: Mapping[str, Pool],
        store: Store | None = None,
        algorithm: str | Algorithm = "gcra",
        hash_on: HashOn = None,
        services: Sequence[AbstractAsyncContextManager[Any]] = (),
        trusted_proxies: Sequence[str] = (),
        owns_store: bool = False,
        lease_ttl: float = 60.0,
        anonymous: Tenant | None = None,
        max_body_size: int | None = None,
        max_header_size: int | None = None,
        concurrency: Mapping[str, FairQueue] | None = None,
        on_event: EventHandler | None = None,
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
            raise FieldValueError(msg, field="hash_on")
        if store is not None and not isinstance(store, Store):
            msg = (
                "store must implement the Store protocol (bind_rates, bind_concurrency,"
                f" in_process, supports_nowait), got {type(store).__name__}"
            )
            raise FieldTypeError(msg, field="store")
        self._registry = registry
        self._pools = dict(pools)
        self._store: Store = MemoryStore() if store is None else store
        self._algorithm = resolve_algorithm(algorithm)  # fails fast on an unknown name
        self._hash_on = hash_on
        self._services = tuple(services)
        self._owns_store = owns_store
        self._lease_ttl = lease_ttl
        self._trusted_proxies = tuple(trusted_proxies)
        self._trusted_networks = tuple(
            network(f"trusted_proxies[{i}]", p) for i, p in enumerate(self._trusted_proxies)
        )
        if anonymous is not None:
            if not isinstance(anonymous, Tenant):
                msg = f"anonymous must be a Tenant or None, got {type(anonymous).__name__}"
                raise TypeError(msg)
            if anonymous.api_keys:
                msg = f"anonymous tenant {anonymous.id!r} must not have api_keys"
                raise ValueError(msg)
        self._anonymous = anonymous
        self._max_body_size = optional_count("max_body_size", max_body_size)
        self._max_header_size = optional_count("max_header_size", max_header_size)
        self._challenge = challenge(registry)
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._lock = threading.Lock()
        self._quotas = LimiterCache(
            store=self._store,
            algorithm=self._algorithm,
            lease_ttl=self._lease_ttl,
            lock=self._lock,
            tenants=self._current_tenants,
        )
        # Fail fast on a bad lease_ttl rather than at the first request.
        ConcurrencyLimiter(1, store=MemoryStore(), lease_ttl=lease_ttl)
        self._fair = fair_queues(concurrency)
        # Observability: subscribers (per-request ones only tested for emptiness on hot paths)
        # and the per-tenant counters behind stats().
        self._events = GatewayEvents(on_event, self._lock)
        store_subscribe = getattr(self._store, "subscribe", None)  # RedisStore: outage events
        self._store_unsubscribe: Callable[[], None] | None = (
            store_subscribe(self._events.weak_relay()) if callable(store_subscribe) else None
        )
        for service in self._services:  # discovery runners: discovery_failed / _recovered
            service_subscribe = getattr(service, "subscribe", None)
            if callable(service_subscribe):
                service_subscribe(self._events.relay)
        problems = [
            (f"tenants[{i}].upstream", f"pool {name!r} of tenant {tenant.id!r} is not configured")
            for i, tenant in enumerate(registry)
            for name in sorted(tenant.upstreams)
            if name not in self._pools
        ]
        if anonymous is not None:
            problems += [
                (
                    "anonymous.upstream",
                    f"pool {name!r} of tenant {anonymous.id!r} is not configured",
                )
                for name in sorted(anonymous.upstreams)
                if name not in self._pools
            ]
        problems += [
            (f"concurrency.{name}", f"pool {name!r} is not configured")
            for name in sorted(self._fair)
            if name not in self._pools
        ]
        if problems:
            raise ConfigError.collect(problems)
        self._flow = AdmissionFlow(
            registry=registry,
            pools=self._pools,
            quotas=self._quotas,
            in_process=self._store.in_process,
            fair=self._fair,
            events=self._events,
            lock=self._lock,
            hash_on=hash_on,
            anonymous=anonymous,
            max_header_size=self._max_header_size,
            max_body_size=self._max_body_size,
            challenge=self._challenge,
        )

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
    def anonymous(self) -> Tenant | None:
        """The tenant requests without credentials are admitted as, or None (refused, 401)."""
        return self._anonymous

    @property
    def max_body_size(self) -> int | None:
        """The request body limit for every tenant, in bytes (None: no limit)."""
        return self._max_body_size

    @property
    def max_header_size(self) -> int | None:
        """The header fields limit for every tenant, in bytes (None: no limit)."""
        return self._max_header_size

    @property
    def store(self) -> Store:
        """The rate-limit and concurrency store."""
        return self._store

    @property
    def services(self) -> tuple[AbstractAsyncContextManager[Any], ...]:
        """What ``async with gateway:`` runs (discovery runners, health checkers)."""
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
        unsubscribe, self._store_unsubscribe = self._store_unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        close = getattr(self._store, "aclose", None) if self._owns_store else None
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()

    def admit(
        self, request: RequestInfo, *, cost: float = 1, lease: bool | None = None
    ) -> Admission:
        """Admit *request*: ``async with gateway.admit(request) as ticket: ...``.

        Args:
            request: The request (`RequestInfo`).
            cost: What the request costs against the tenant's limits (requests, tokens, bytes).
            lease: Whether to lease an endpoint: None (default) leases one when the tenant has
                an upstream for the path and admits without one otherwise; True requires one
                (a proxy: `Forbidden` without); False never leases (middleware in front of an
                app that serves the request itself).

        Returns:
            An async context manager yielding a `Ticket`; on exit the outcome is recorded (or the
            lease released) and the concurrency slot given back.

        Raises:
            Unauthenticated: Missing (`MissingCredentials`, unless the gateway has an
                ``anonymous`` tenant), malformed or wrong credentials.
            UnknownTenant: No tenant matched.
            Forbidden: The tenant is disabled, or *lease* is True and it has no upstream for
                the request's path.
            ContentTooLarge: The declared ``Content-Length`` is over the body size limit.
            HeadersTooLarge: The header fields are over the header size limit.
            RateLimited: A limit said no (``.decision``, ``.headers`` with Retry-After).
            OverCapacity: The tenant's concurrency slots are all taken.
            NoHealthyEndpoint: The tenant's upstream (or shard) has no endpoint to offer.
            StoreUnavailable: Redis is unreachable and the store's policy is to fail closed.
            ValueError: *cost* is not > 0, or more than the tenant's smallest burst (it could
                never be admitted); nothing is charged.
        """
        if type(request) is not RequestInfo:  # final: an exact check is enough (and cheaper)
            msg = f"request must be a RequestInfo, got {type(request).__name__}"
            raise TypeError(msg)
        return Admission(self._flow, request, cost, lease)

    def stats(self) -> GatewayStats:
        """A snapshot of every pool, the number of tenants and the per-tenant counters."""
        admitted, in_flight, refused, by_tenant = self._events.snapshot()
        store_stats = getattr(self._store, "stats", None)
        return GatewayStats(
            tenants=len(self._registry),
            pools=MappingProxyType({name: pool.stats() for name, pool in self._pools.items()}),
            queues=MappingProxyType({name: fair.stats() for name, fair in self._fair.items()}),
            admitted=admitted,
            in_flight=in_flight,
            refused=refused,
            by_tenant=by_tenant,
            store=store_stats() if callable(store_stats) else None,
        )

    # -- events ------------------------------------------------------------------------------------

    def subscribe(self, handler: EventHandler, *, per_request: bool = False) -> Callable[[], None]:
        """Call *handler* with the gateway's future events; returns a function that unsubscribes it.

        The gateway's state changes are its store's outages and recoveries (``store_unavailable``,
        ``store_recovered``, from a store that reports them, such as `RedisStore`) and its
        services' (discovery failures). Pools have their own `Pool.subscribe`; an exporter
        subscribes to both.

        Args:
            handler: Called synchronously with each `Event`; keep it quick.
            per_request: Also deliver the per-request events ``admitted``, ``refused``,
                ``rate_limit`` and ``retry``. Without such a subscriber the gateway builds none.

        Raises:
            TypeError: *handler* is not callable.
        """
        return self._events.subscribe(handler, per_request=per_request)

    def emit(self, event: Event) -> None:
        """Deliver *event* to this gateway's subscribers, as if the gateway had emitted it.

        For adapters: a proxy whose `RetryBudget` refuses a retry emits
        ``Event(kind="retry_budget_exhausted", pool=ticket.upstream, tenant=ticket.tenant.id)``
        (`Ticket.reroute` emits ``retry`` itself). Per-request kinds reach only subscribers that
        asked for them.

        Raises:
            TypeError: *event* is not an `Event`.
        """
        self._events.emit(event)

    # -- helpers --------------------------------------------------------------------------------------

    def _current_tenants(self) -> list[Tenant]:
        tenants = list(self._registry)
        if self._anonymous is not None:
            tenants.append(self._anonymous)
        return tenants
