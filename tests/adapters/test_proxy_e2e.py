"""End to end: 2,000 GETs through ProxyApp to three real backends, one SIGKILLed mid-run."""

from __future__ import annotations

from collections import Counter

import anyio
import httpx
import pytest

import tenantlb as tlb
from tenantlb.adapters.asgi import ProxyApp
from tests.adapters.conftest import KEY
from tests.support.backends import BackendProcess
from tests.support.servers import serve

TOTAL = 2000
CONCURRENCY = 16


@pytest.mark.slow
@pytest.mark.parametrize(
    "server", ["uvicorn", "hypercorn-trio", "uvicorn+aiohttp", "uvicorn+httptools"]
)
def test_two_thousand_gets_survive_a_sigkilled_backend(server: str) -> None:
    """Zero failures, the dead backend stops receiving traffic, and in-flight ends at 0."""
    with BackendProcess("b1") as b1, BackendProcess("b2") as b2, BackendProcess("b3") as b3:
        detector = tlb.OutlierDetector(
            consecutive_gateway_failure=3, max_ejection_percent=50, base_ejection_time=300.0
        )
        pool = tlb.Pool([b1.url, b2.url, b3.url], tlb.LeastRequest(), outlier_detector=detector)
        registry = tlb.TenantRegistry(
            [tlb.Tenant("acme", api_keys=[tlb.hash_api_key(KEY)], upstream="p")]
        )
        gateway = tlb.Gateway(registry=registry, pools={"p": pool})
        statuses: Counter[int] = Counter()
        served_by: Counter[str] = Counter()
        dead_requests_at: list[int] = []

        def dead_requests() -> int:
            return next(e.requests for e in pool.stats().endpoints if e.url == b3.url)

        host, _, client = server.partition("+")
        proxy = ProxyApp(gateway, client=client or "httpcore")  # type: ignore[arg-type]
        with serve(proxy, host) as url:

            async def main() -> None:
                done = 0
                async with httpx.AsyncClient(
                    base_url=url, headers={"x-api-key": KEY}, timeout=30
                ) as client:

                    async def worker(indices: range) -> None:
                        nonlocal done
                        for _ in indices:
                            response = await client.get("/work")
                            statuses[response.status_code] += 1
                            if response.status_code == 200:
                                served_by[response.json()["backend"]] += 1
                            done += 1
                            if done == TOTAL // 4:
                                b3.kill()  # SIGKILL mid-run, requests in flight
                            if done == TOTAL // 2:
                                dead_requests_at.append(dead_requests())

                    per_worker = TOTAL // CONCURRENCY
                    async with anyio.create_task_group() as tg:
                        for _ in range(CONCURRENCY):
                            tg.start_soon(worker, range(per_worker))

            anyio.run(main)
        assert statuses == Counter({200: TOTAL})
        assert served_by["b3"] < TOTAL // 4 + CONCURRENCY  # nothing after it died
        assert dead_requests() == dead_requests_at[0]  # no attempt at all in the second half
        assert next(e for e in pool.stats().endpoints if e.url == b3.url).ejected
        assert pool.stats().in_flight == 0
