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
    decision: tlb.Decision = limiter.try_acquire("acme", cost=1)
    decision = await limiter.acquire("acme", cost=2.5)
    allowed: bool = decision.allowed
    remaining: float = decision.remaining
    headers: list[tuple[str, str]] = decision.headers()
    limiter.refund("acme", 1)
    slots = tlb.ConcurrencyLimiter(10)
    async with slots.slot("acme"):
        pass
    del allowed, remaining, headers


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
    del depths, shared, limit, min_rtt
