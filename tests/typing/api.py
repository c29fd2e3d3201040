"""Never executed: mypy --strict checks that the public API reads the way the docs use it."""

from __future__ import annotations

from typing import Any

import tenantlb as tlb
from tenantlb.testing import ManualClock


def balancing() -> None:
    clock = ManualClock()
    pool = tlb.Pool(
        ["http://10.0.0.1:8000", tlb.Endpoint("http://10.0.0.2:8000", weight=2)],
        balancer=tlb.PeakEWMA(),
        clock=clock,
        slow_start=tlb.SlowStart(window=30.0),
        outlier_detector=tlb.OutlierDetector(consecutive_5xx=5),
    )
    with pool.acquire(key="203.0.113.9") as lease:
        url: str = lease.endpoint.url
        lease.record(status=200)
    latency: float | None = lease.latency
    stats: tlb.PoolStats = pool.stats()
    in_flight: int = stats.endpoints[0].in_flight
    pool.add("http://10.0.0.3:8000")
    pool.set_weight("http://10.0.0.3:8000", 3)
    pool.update(["http://10.0.0.1:8000"])
    pool.remove("http://10.0.0.1:8000")
    for balancer in (
        tlb.RoundRobin(),
        tlb.WeightedRandom(),
        tlb.LeastRequest(choices=2),
        tlb.PeakEWMA(decay=10.0, choices=2),
        tlb.PeakEWMA(aperture=None),
        tlb.PeakEWMA(aperture=8),
    ):
        tlb.Pool(["http://a"], balancer=balancer)
    del url, latency, in_flight


def hashing() -> None:
    for balancer in (tlb.RingHash(), tlb.Maglev(table_size=65537), tlb.Rendezvous()):
        pool = tlb.Pool(["http://a", "http://b"], balancer=balancer)
        with pool.acquire(key=b"user-42") as lease:
            lease.record(error=ConnectionError("refused"))
    tlb.Pool(["http://a"], balancer=tlb.BoundedLoad(tlb.Maglev(), balance_factor=1.25))


async def health() -> None:
    pool = tlb.Pool(["http://10.0.0.1:8000"])
    checker = tlb.HealthChecker(pool, probe=tlb.HTTPProbe("/healthz"), interval=5.0, timeout=1.0)
    async with checker:
        stats: tlb.HealthCheckerStats = checker.stats()
        del stats
    tlb.HealthChecker(pool, probe=tlb.TCPProbe())

    async def custom(endpoint: tlb.Endpoint) -> bool:
        return endpoint.port == 8000

    tlb.HealthChecker(pool, probe=custom)
    detector: tlb.OutlierDetectorStats = tlb.OutlierDetector().stats()
    del detector


async def rate_limiting() -> None:
    limiter = tlb.RateLimiter(
        [tlb.Rate(100, per=1.0, burst=20), tlb.Rate(10_000, per=3600)], store=tlb.MemoryStore()
    )
    decision: tlb.Decision = limiter.acquire_nowait("acme", cost=1)
    decision = await limiter.acquire("acme", cost=2.5)
    allowed: bool = decision.allowed
    remaining: float = decision.remaining
    headers: list[tuple[str, str]] = decision.headers()
    limiter.refund_nowait("acme", 1)
    slots = tlb.ConcurrencyLimiter(10, lease_ttl=30.0)
    async with slots.slot("acme") as slot:
        renewed: bool = await slots.renew(slot)
        del renewed
    memory_stats: tlb.ratelimit.MemoryStoreStats = tlb.MemoryStore().stats()
    evictions: int = memory_stats.evictions
    del allowed, remaining, headers, evictions


def redis_store(client: object) -> None:
    import redis
    import redis.asyncio

    for c in (
        redis.asyncio.Redis(),
        redis.asyncio.RedisCluster(host="localhost", port=7000),
        redis.Redis(),
        redis.RedisCluster(host="localhost", port=7000),
    ):
        store = tlb.RedisStore(c, on_error="fail_open", timeout=0.5)
        stats: tlb.ratelimit.RedisStoreStats = store.stats()
        del stats


async def gateway() -> None:
    registry = tlb.TenantRegistry(
        [
            tlb.Tenant(
                "acme",
                api_keys=[tlb.hash_api_key("sk-0123456789abcdef")],
                upstream="shared",
                limits=[tlb.Rate(100, per=1.0)],
                max_concurrency=20,
            )
        ]
    )
    gw = tlb.Gateway(
        registry=registry, pools={"shared": tlb.Pool(["http://a"])}, store=tlb.MemoryStore()
    )
    info = tlb.RequestInfo("GET", "/v1/chat", [("x-api-key", "sk-…")], client=("203.0.113.9", 5555))
    async with gw.admit(info) as ticket:
        tenant: tlb.Tenant = ticket.tenant
        endpoint: tlb.Endpoint | None = ticket.endpoint
        limit: int | None = ticket.max_body_size
        response_headers: list[tuple[str, str]] = ticket.headers
        ticket.record(status=200)
    try:
        async with gw.admit(info):
            pass
    except tlb.RateLimited as exc:
        retry_after: float = exc.decision.retry_after
        status: int = exc.status
        del retry_after, status
    stats: tlb.GatewayStats = gw.stats()
    per_tenant: tlb.TenantStats = stats.by_tenant["acme"]
    refused: int = per_tenant.refused.get("rate_limited", 0) + stats.refused.get("forbidden", 0)
    del per_tenant, refused
    loaded: tlb.Gateway = tlb.load_config("gateway.toml")
    edge = tlb.Gateway(
        registry=registry,
        pools={},
        anonymous=tlb.Tenant("anonymous", limits=[tlb.Rate(10, per=1.0)]),
        max_body_size=1 << 20,
        max_header_size=16384,
    )
    try:
        async with edge.admit(info, lease=False) as bare:
            no_lease: tlb.Lease | None = bare.lease
            del no_lease
    except (tlb.ContentTooLarge, tlb.HeadersTooLarge) as too_big:
        size_limit: int = too_big.limit
        del size_limit
    except tlb.MissingCredentials as missing:
        challenge: list[tuple[str, str]] = missing.headers
        del challenge
    del tenant, endpoint, limit, response_headers, loaded


def retry_budget() -> None:
    budget = tlb.RetryBudget(ratio=0.2, ttl=10.0, min_retries_per_second=10, clock=ManualClock())
    budget.deposit()
    allowed: bool = budget.try_withdraw()
    stats: tlb.RetryBudgetStats = budget.stats()
    counts: tuple[int, int, int, int] = (
        stats.requests,
        stats.retries,
        stats.exhausted,
        stats.available,
    )
    del allowed, counts


def gateway_services(pool: tlb.Pool, registry: tlb.TenantRegistry) -> tlb.Gateway:
    checker = tlb.HealthChecker(pool, probe=tlb.TCPProbe(), interval=5.0, timeout=1.0)
    return tlb.Gateway(registry=registry, pools={"shared": pool}, services=[checker])


async def httpx_adapter() -> None:
    import httpx

    from tenantlb.adapters.httpx import AsyncBalancingTransport, BalancingTransport

    users = tlb.Pool(["http://10.0.0.1:8000"])
    checker = tlb.HealthChecker(users, probe=tlb.HTTPProbe("/healthz"), interval=5.0, timeout=1.0)
    transport = AsyncBalancingTransport(
        {"users": users},
        transport=httpx.AsyncHTTPTransport(),
        retries=2,
        retry_statuses=(502, 503, 504),
        key="x-user-id",
        retry_budget=tlb.RetryBudget(),
        health=checker,
        host_header="logical",
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://users") as client:
        response: httpx.Response = await client.get("/")
        del response
    budget: tlb.RetryBudgetStats = transport.retry_budget.stats()
    sync = BalancingTransport(users, key=lambda request: request.headers.get("x-user-id"))
    with httpx.Client(transport=sync) as sync_client:
        sync_client.get("http://users/")  # noqa: ASYNC212 (only type-checked, never run)
    del budget


async def aiohttp_client_adapter() -> None:
    import aiohttp

    from tenantlb.adapters.aiohttp import balancing_middleware

    users = tlb.Pool(["http://10.0.0.1:8000"])
    middleware = balancing_middleware(users, retries=1, key="x-user-id")
    async with (
        aiohttp.ClientSession(middlewares=[middleware]) as session,
        session.get("http://users/") as response,
    ):
        status: int = response.status
        del status


def extension_points() -> None:
    from collections.abc import Sequence

    from tenantlb.balancing import BALANCERS, EndpointState
    from tenantlb.ratelimit import ALGORITHMS, EPSILON, STORES, Kernel, State, Step

    @tlb.register_balancer("first")
    class First(tlb.BalancerBase):
        def __init__(self) -> None:
            self._first: EndpointState | None = None

        def rebuild(self, candidates: Sequence[EndpointState]) -> None:
            self._first = candidates[0] if candidates else None

        def pick(self, key: bytes | None) -> EndpointState | None:
            return self._first

        def clone(self) -> First:
            return First()

    balancer: tlb.Balancer = First()
    tlb.register_balancer("first_again", First, replace=True)
    factory = BALANCERS.get("first")
    names: list[str] = BALANCERS.names() + ALGORITHMS.names() + STORES.names()

    class Doubled(tlb.Algorithm):
        name = "doubled"
        lua = ""

        def step(self, state: State | None, rate: tlb.Rate, now: float, cost: float) -> Step:
            return Step(cost <= 2 * rate.burst + EPSILON, state, 0.0, 0.0, 0.0)

        def kernel(self, rate: tlb.Rate) -> Kernel | None:
            return None

        def refund(
            self, state: State | None, rate: tlb.Rate, now: float, cost: float
        ) -> State | None:
            return state

        def expires(self, state: State, rate: tlb.Rate) -> float:
            return 0.0

    tlb.register_algorithm("doubled", Doubled)
    tlb.Gateway(registry=tlb.TenantRegistry([]), pools={}, algorithm=Doubled())
    tlb.Gateway(registry=tlb.TenantRegistry([]), pools={}, algorithm="doubled")
    store: tlb.Store = tlb.MemoryStore()
    in_process: bool = store.in_process and store.supports_nowait
    admission: tlb.Admission = tlb.Gateway(registry=tlb.TenantRegistry([]), pools={}).admit(
        tlb.RequestInfo("GET", "/", [])
    )
    if admission.inline:
        ticket: tlb.Ticket = admission.enter_nowait()
        admission.exit_nowait(None)
        del ticket
    del balancer, factory, names, in_process, admission


def adapters_server(gateway: tlb.Gateway) -> None:
    """The server adapters' public surface, type-checked only."""
    from aiohttp import web

    from tenantlb.adapters.aiohttp import TENANT_KEY, problem_response, tenant_middleware
    from tenantlb.adapters.asgi import ProxyApp, ProxyStats, TenantMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    protected = TenantMiddleware(app, gateway=gateway)
    proxy = ProxyApp(
        gateway,
        connect_timeout=2.0,
        read_timeout=30.0,
        retries=1,
        retry_budget=tlb.RetryBudget(),
        max_body_size=1 << 20,
        client="httpcore",
        tune_gc=False,
    )
    stats: ProxyStats = proxy.stats()
    fast = ProxyApp(gateway, client="httptools")  # asyncio only: tenantlb[httptools]
    aio = web.Application(middlewares=[tenant_middleware(gateway, key=TENANT_KEY)])
    answer: web.Response = problem_response(tlb.OverCapacity("busy"))
    del protected, stats, fast, aio, answer


class ConsulLikeSource:
    async def resolve(self) -> tlb.DiscoveryResult:
        return tlb.DiscoveryResult(
            ["http://10.0.0.1:8000", tlb.Endpoint("http://b", weight=2)], ttl=5.0
        )


class ListSource:
    async def resolve(self) -> list[str]:
        return ["http://10.0.0.1:8000"]


async def discovery() -> None:
    pool = tlb.Pool([])
    source: tlb.DiscoverySource = ConsulLikeSource()
    plain: tlb.DiscoverySource = ListSource()
    await tlb.Discovery(pool, plain).refresh()
    async with tlb.Discovery(pool, source, interval=10.0, jitter=1.0, timeout=2.0) as runner:
        stats: tlb.DiscoveryStats = await runner.refresh()
        outcome: str | None = stats.last_outcome
        del outcome
    async with tlb.DNSDiscovery(pool, "svc.internal", port=8000, interval=30.0):
        pass
    dns = tlb.DNSDiscovery(
        pool,
        srv="_http._tcp.svc.internal",
        nameservers=["127.0.0.1:5353"],
        family="ipv4",
        min_interval=2.0,
        allow_empty=False,
        on_event=lambda event: None,
    )
    unsubscribe = dns.subscribe(lambda event: None)
    unsubscribe()
    async with tlb.FileDiscovery(pool, "endpoints.toml", interval=5.0) as watcher:
        failures: int = watcher.stats().failures
        in_outage: bool = watcher.stats().in_outage
        del failures, in_outage
    try:
        raise tlb.DiscoveryError("consul unreachable")
    except tlb.TenantLBError:
        pass
    del stats


async def fairness() -> None:
    clock = ManualClock()
    fq = tlb.FairQueue(64, queues=64, hand_size=8, queue_length=50, timeout=5.0, clock=clock)
    try:
        async with fq.acquire("acme", weight=2.0) as turn:
            flow: str = turn.flow
            del flow
    except (tlb.QueueFull, tlb.QueueTimeout) as exc:
        status: int = exc.status
        headers: list[tuple[str, str]] = exc.headers
        retry_after: float = exc.retry_after
        del status, headers, retry_after
    held = fq.acquire_nowait("acme")
    fq.release(held, record=False)
    stats: tlb.FairQueueStats = fq.stats(top=5)
    depths: tuple[tuple[str, int], ...] = stats.deepest_flows
    adaptive = tlb.AdaptiveConcurrency(min_limit=3, max_limit=1000, clock=clock)
    shared = tlb.FairQueue(adaptive)
    async with adaptive.acquire():
        pass
    with adaptive.acquire_nowait():
        pass
    adaptive.record(0.25)
    limit: int = adaptive.limit
    a_stats: tlb.AdaptiveConcurrencyStats = adaptive.stats()
    min_rtt: float | None = a_stats.min_rtt
    gw = tlb.Gateway(
        registry=tlb.TenantRegistry([tlb.Tenant("acme", upstream="p", weight=2.0)]),
        pools={"p": tlb.Pool(["http://a"])},
        concurrency={"p": fq},
    )
    queue_stats: tlb.FairQueueStats = gw.stats().queues["p"]
    del depths, shared, limit, min_rtt, queue_stats


def observability() -> None:
    from prometheus_client import CollectorRegistry

    from tenantlb.observability import Event, EventHandler
    from tenantlb.observability.otel import OTelMetrics
    from tenantlb.observability.prometheus import PrometheusMetrics

    pool = tlb.Pool(["http://a"], name="api")
    gateway = tlb.Gateway(registry=tlb.TenantRegistry([]), pools={"api": pool})

    def on_event(event: Event) -> None:
        tenant: str | None = event.tenant
        latency: float | None = event.latency
        del tenant, latency

    handler: EventHandler = on_event
    unsubscribe = pool.subscribe(handler, per_request=True)
    unsubscribe()
    gateway.subscribe(on_event, per_request=True)()
    pool.emit(Event(kind="retry", pool="api", url="http://a", reason="ConnectError"))
    with pool.acquire() as lease:
        lease.tenant = "acme"
        lease.record(status=200)
    metrics = PrometheusMetrics(gateway, registry=CollectorRegistry(), tenant_label=True)
    metrics.watch(tlb.Pool(["http://b"]))
    metrics.close()
    OTelMetrics(gateway, tenant_label=False).close()
