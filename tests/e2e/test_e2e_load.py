"""A bounded load run against the gateway process: no errors beyond legitimate 429s, memory flat,
everything released. About 10 s in CI; 60 s with ``TENANTLB_SOAK=1`` (``nox -s soak``)."""

from __future__ import annotations

import os
import time
from collections import Counter

import anyio
import httpx
import pytest

import tenantlb as tlb
from tests.support.backends import start_backends
from tests.support.gateway_process import GatewayProcess

pytestmark = pytest.mark.slow

SOAK = os.environ.get("TENANTLB_SOAK") == "1"
WARMUP = 10.0 if SOAK else 2.5
DURATION = 60.0 if SOAK else 8.0
KEYS = {"free": "sk-e2e-free-0123456789", "capped": "sk-e2e-capped-0123456789"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_load_errors_only_429s_and_memory_stays_flat(anyio_backend: str) -> None:
    """Under load: 200s and the capped tenant's 429s only, RSS growth < 10 % after warm-up."""
    with start_backends("l1", "l2", "l3") as backends:
        config = {
            "pools": {"api": {"endpoints": [b.url for b in backends]}},
            "tenants": [
                {"id": "free", "api_keys": [tlb.hash_api_key(KEYS["free"])], "upstream": "api"},
                {
                    "id": "capped",
                    "api_keys": [tlb.hash_api_key(KEYS["capped"])],
                    "upstream": "api",
                    "limits": [{"limit": 5, "per": 1.0}],
                    "max_concurrency": 4,
                },
            ],
        }
        with GatewayProcess(config) as gateway:
            statuses: Counter[tuple[str, str]] = Counter()
            rss: dict[str, int] = {}
            stop = anyio.Event()

            async def worker(client: httpx.AsyncClient, tenant: str, i: int) -> None:
                while not stop.is_set():
                    try:
                        r = await client.get(f"/items/{i}", headers={"x-api-key": KEYS[tenant]})
                        statuses[tenant, str(r.status_code)] += 1
                    except httpx.HTTPError as exc:
                        statuses[tenant, type(exc).__name__] += 1

            limits = httpx.Limits(max_connections=32)
            async with (
                httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=10) as client,
                anyio.create_task_group() as tg,
            ):
                for i in range(12):
                    tg.start_soon(worker, client, "free", i)
                for i in range(4):
                    tg.start_soon(worker, client, "capped", i)
                await anyio.sleep(WARMUP)
                rss["warm"] = (await anyio.to_thread.run_sync(gateway.stats))["rss_kb"]
                started = time.monotonic()
                await anyio.sleep(DURATION)
                rss["end"] = (await anyio.to_thread.run_sync(gateway.stats))["rss_kb"]
                stop.set()
            elapsed = time.monotonic() - started

            assert {s for t, s in statuses if t == "free"} == {"200"}, statuses
            assert {s for t, s in statuses if t == "capped"} <= {"200", "429"}, statuses
            assert statuses["capped", "429"] > 0, statuses
            # the capped tenant never got more than its 5 a second (+ its first burst)
            assert statuses["capped", "200"] <= 5 * (WARMUP + elapsed + 1) + 5
            assert rss["end"] < rss["warm"] * 1.10, rss
            stats = await anyio.to_thread.run_sync(gateway.stats)
            assert stats["in_flight"] == 0
            assert stats["pools"]["api"]["in_flight"] == 0
