"""End to end: a noisy tenant floods a pool's FairQueue through ProxyApp; the quiet one is not hurt."""

from __future__ import annotations

from collections import Counter

import anyio
import httpx
import pytest

import tenantlb as tlb
from tenantlb.adapters.asgi import ProxyApp
from tenantlb.fairness import deal_hand
from tests.support.backends import BackendProcess
from tests.support.servers import serve

KEYS = {"noisy": "sk-noisy-0123456789abcdef", "quiet": "sk-quiet-0123456789abcdef"}


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn-trio"])
def test_noisy_tenant_is_refused_quiet_tenant_is_served(server: str) -> None:
    """Through real servers: the flooding tenant fills only its own queues and gets 503 with
    Retry-After; every request of the quiet tenant is served; nothing is left queued or held."""
    assert not set(deal_hand("noisy", 8, 2)) & set(deal_hand("quiet", 8, 2))  # disjoint hands
    with BackendProcess("b1") as b1, BackendProcess("b2") as b2:
        fair = tlb.FairQueue(4, queues=8, hand_size=2, queue_length=4)
        pool = tlb.Pool([b1.url, b2.url], tlb.RoundRobin())
        registry = tlb.TenantRegistry(
            [
                tlb.Tenant(name, api_keys=[tlb.hash_api_key(key)], upstream="p")
                for name, key in KEYS.items()
            ]
        )
        gateway = tlb.Gateway(registry=registry, pools={"p": pool}, concurrency={"p": fair})
        statuses: dict[str, Counter[int]] = {name: Counter() for name in KEYS}
        retry_after: list[str] = []

        with serve(ProxyApp(gateway), server) as url:

            async def main() -> None:
                async with httpx.AsyncClient(base_url=url, timeout=30) as client:

                    async def worker(tenant: str, n: int) -> None:
                        for _ in range(n):
                            response = await client.get(
                                "/sleep/0.01", headers={"x-api-key": KEYS[tenant]}
                            )
                            statuses[tenant][response.status_code] += 1
                            if response.status_code == 503:
                                retry_after.append(response.headers.get("retry-after", ""))

                    async with anyio.create_task_group() as tg:
                        for _ in range(24):  # 24 at once: 4 in flight + 8 queued, the rest refused
                            tg.start_soon(worker, "noisy", 10)
                        for _ in range(2):
                            tg.start_soon(worker, "quiet", 20)

            anyio.run(main)
        assert statuses["quiet"] == Counter({200: 40})
        assert statuses["noisy"][503] > 0
        assert statuses["noisy"][200] > 0  # still served: its fair share, not zero
        assert set(statuses["noisy"]) <= {200, 503}
        assert retry_after
        assert all(value.isdigit() and int(value) >= 1 for value in retry_after)
        stats = fair.stats()
        assert (stats.in_flight, stats.queued) == (0, 0)
        assert stats.rejected == statuses["noisy"][503]
        assert pool.stats().in_flight == 0
