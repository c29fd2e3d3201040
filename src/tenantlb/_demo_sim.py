"""The in-memory simulation behind `python -m tenantlb demo --simulate`: a gateway under a burst.

Four simulated backends (in-process coroutines, no network): two fast, one ten times slower, and
one that answers 503 to every request. Three tenants send a burst of concurrent requests through
one `Gateway`: PeakEWMA steers traffic away from the slow backend, the outlier detector ejects the
failing one, each tenant's rate limit and concurrency cap hold, and a disabled tenant is refused.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable

import anyio

from ._errors import RequestRejected
from ._events import Event
from .balancing import Pool
from .gateway import Gateway
from .health import OutlierDetector
from .ratelimit import MemoryStore, Rate
from .tenants import RequestInfo, Tenant, TenantRegistry, hash_api_key

__all__ = ["run_demo"]

# url -> (latency in seconds, HTTP status)
BACKENDS = {
    "http://fast-1.internal:8000": (0.002, 200),
    "http://fast-2.internal:8000": (0.002, 200),
    "http://slow.internal:8000": (0.020, 200),
    "http://broken.internal:8000": (0.0005, 503),
}
KEYS = {
    "acme": "sk-acme-demo-0123456789abcdef",
    "globex": "sk-globex-demo-0123456789abcdef",
    "initech": "sk-initech-demo-0123456789abcdef",
}


def build_gateway(on_event: Callable[[Event], None]) -> Gateway:
    """The demo's gateway: one shared pool, three tenants, everything in memory."""
    detector = OutlierDetector(consecutive_5xx=5, base_ejection_time=30.0, max_ejection_percent=50)
    pool = Pool(BACKENDS, name="shared", outlier_detector=detector, on_event=on_event)  # PeakEWMA
    tenants = [
        Tenant(
            "acme",
            api_keys=[hash_api_key(KEYS["acme"])],
            upstream="shared",
            limits=[Rate(600, per=1.0, burst=300)],
            max_concurrency=40,
        ),
        Tenant(
            "globex",
            api_keys=[hash_api_key(KEYS["globex"])],
            upstream="shared",
            limits=[Rate(50, per=1.0)],
            max_concurrency=10,
        ),
        Tenant(
            "initech", api_keys=[hash_api_key(KEYS["initech"])], upstream="shared", enabled=False
        ),
    ]
    return Gateway(registry=TenantRegistry(tenants), pools={"shared": pool}, store=MemoryStore())


async def _client(
    gateway: Gateway, tenant: str, requests: int, outcomes: Counter[tuple[str, str]], seed: int
) -> None:
    rng = random.Random(seed)
    for _ in range(requests):
        info = RequestInfo("POST", "/v1/chat", [("x-api-key", KEYS[tenant])])
        try:
            async with gateway.admit(info) as ticket:
                assert ticket.endpoint is not None  # every demo tenant has an upstream
                latency, status = BACKENDS[ticket.endpoint.url]
                await anyio.sleep(latency * rng.uniform(0.8, 1.2))
                ticket.record(status=status)
                outcomes[tenant, str(status)] += 1
        except RequestRejected as exc:
            outcomes[tenant, type(exc).__name__] += 1
        await anyio.sleep(rng.uniform(0.02, 0.06))  # about 25 requests a second per client


async def _run(
    requests_per_client: int, clients: int
) -> tuple[Gateway, Counter[tuple[str, str]], list[Event], float]:
    events: list[Event] = []
    gateway = build_gateway(events.append)
    outcomes: Counter[tuple[str, str]] = Counter()
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(clients):
            tg.start_soon(_client, gateway, "acme", requests_per_client, outcomes, i)
            if i % 4 == 0:
                tg.start_soon(_client, gateway, "globex", requests_per_client, outcomes, 1000 + i)
        tg.start_soon(_client, gateway, "initech", 5, outcomes, 9999)
    return gateway, outcomes, events, time.perf_counter() - started


def run_demo(requests_per_client: int = 50, clients: int = 40, backend: str = "asyncio") -> int:
    """Run the demo and print what happened; returns a process exit code."""
    gateway, outcomes, events, elapsed = anyio.run(
        _run, requests_per_client, clients, backend=backend
    )
    stats = gateway.stats().pools["shared"]
    total = sum(e.requests for e in stats.endpoints)
    print(
        f"tenantlb demo: {sum(outcomes.values())} requests from 3 tenants in {elapsed:.2f} s ({backend})"
    )
    print()
    print("Where the admitted requests went (balancer: PeakEWMA, outlier detection on):")
    print(f"  {'endpoint':32} {'requests':>8} {'share':>7} {'failures':>8}  state")
    for e in stats.endpoints:
        latency, status = BACKENDS[e.url]
        state = "ejected" if e.ejected else "healthy"
        share = e.requests / total if total else 0.0
        label = f"{latency * 1000:g} ms, {status}"
        print(f"  {e.url:32} {e.requests:8d} {share:7.1%} {e.failures:8d}  {state} ({label})")
    print()
    print("What each tenant got:")
    for tenant in ("acme", "globex", "initech"):
        got = {k: v for (t, k), v in sorted(outcomes.items()) if t == tenant}
        print(f"  {tenant:8} " + ", ".join(f"{k}: {v}" for k, v in got.items()))
    print()
    print("Pool events:")
    for event in events:
        print(f"  {event.kind:14} {event.url or '':32} {event.reason}")
    leaked = stats.in_flight
    print()
    print(f"In flight after the burst: {leaked} (every lease released)")
    return 0 if leaked == 0 else 1
