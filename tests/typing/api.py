"""Never executed: mypy --strict checks that the public API reads the way the docs use it."""

from __future__ import annotations

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
        tlb.PeakEWMA(decay=10.0),
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
        endpoint: tlb.Endpoint = ticket.endpoint
        response_headers: list[tuple[str, str]] = ticket.headers
        ticket.record(status=200)
    try:
        async with gw.admit(info):
            pass
    except tlb.RateLimited as exc:
        retry_after: float = exc.decision.retry_after
        status: int = exc.status
        del retry_after, status
    loaded: tlb.Gateway = tlb.load_config("gateway.toml")
    del tenant, endpoint, response_headers, loaded


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
