"""Fault injection under steady load: the gateway (ProxyApp in its own server process) in front of
three real backends, an httpx client sending GETs through `AsyncBalancingTransport`.

One backend is SIGKILLed and restarted, one hangs (accepts, never answers) and recovers, one
answers 503s and recovers. The client sees no failed request; each faulty backend is taken out
(ejected or unhealthy) and comes back; every lease and slot is released; retries stay within the
retry budget. CI runs a short schedule; ``nox -s soak`` runs it longer (``TENANTLB_SOAK=1``).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

import tenantlb as tlb
from tenantlb.adapters.httpx import AsyncBalancingTransport
from tests.support.backends import BackendProcess, start_backends
from tests.support.gateway_process import GatewayProcess

pytestmark = pytest.mark.slow

SOAK = os.environ.get("TENANTLB_SOAK") == "1"
HOLD = 8.0 if SOAK else 1.0  # seconds each fault is held once it has been noticed
KEY = "sk-e2e-load-0123456789"
WORKERS = 8


def config(backends: list[BackendProcess]) -> dict[str, Any]:
    return {
        "pools": {
            "api": {
                "endpoints": [b.url for b in backends],
                "balancer": "least_request",
                "outlier_detection": {
                    "consecutive_5xx": 3,
                    "consecutive_gateway_failure": 3,
                    "base_ejection_time": 2.0,
                    "interval": 1.0,
                    "max_ejection_percent": 67,
                },
                "health_check": {
                    "type": "http",
                    "path": "/healthz",
                    "interval": 0.5,
                    "timeout": 0.4,
                    "unhealthy_threshold": 2,
                    "healthy_threshold": 1,
                },
            }
        },
        "tenants": [{"id": "load", "api_keys": [tlb.hash_api_key(KEY)], "upstream": "api"}],
    }


PROXY = {"read_timeout": 1.0, "connect_timeout": 1.0, "retries": 2}


def available(gateway: GatewayProcess, url: str) -> bool:
    state = gateway.stats()["pools"]["api"]["endpoints"][url]
    return bool(state["healthy"] and not state["ejected"])


async def until(check: Callable[[], bool], what: str, within: float) -> None:
    """Poll *check* in a thread until it holds; fail naming *what* after *within* seconds."""
    deadline = time.monotonic() + within
    while not await anyio.to_thread.run_sync(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        await anyio.sleep(0.1)


def set_mode(backend: BackendProcess, mode: str) -> None:
    httpx.post(backend.url + "/mode", content=mode, timeout=5).raise_for_status()


class Load:
    """GETs from WORKERS tasks through the client transport until stopped."""

    def __init__(self, gateway_url: str) -> None:
        self.pool = tlb.Pool([gateway_url], name="gateway")
        self.statuses: Counter[str] = Counter()
        self.stop = anyio.Event()

    async def run(self) -> None:
        transport = AsyncBalancingTransport({"gateway": self.pool})
        async with (
            httpx.AsyncClient(transport=transport, timeout=10) as client,
            anyio.create_task_group() as tg,
        ):
            for i in range(WORKERS):
                tg.start_soon(self.worker, client, i)

    async def worker(self, client: httpx.AsyncClient, i: int) -> None:
        while not self.stop.is_set():
            try:
                response = await client.get(f"http://gateway/items/{i}", headers={"x-api-key": KEY})
                self.statuses[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                self.statuses[type(exc).__name__] += 1
            await anyio.sleep(0.005)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_kill_hang_and_503_under_load_lose_no_request(anyio_backend: str) -> None:
    """SIGKILL, a hang and 503s, one backend at a time: zero failed GETs, everything released."""
    with (
        start_backends("b1", "b2", "b3") as backends,
        GatewayProcess(config(backends), proxy=PROXY) as gateway,
    ):
        b1, b2, b3 = backends
        load = Load(gateway.url)
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(load.run)
            await anyio.sleep(1.0)

            await anyio.to_thread.run_sync(b1.kill)  # SIGKILL
            await until(lambda: not available(gateway, b1.url), "b1 taken out", 6)
            await anyio.sleep(HOLD)
            await anyio.to_thread.run_sync(b1.start)
            await until(lambda: available(gateway, b1.url), "b1 back", 10)

            await anyio.to_thread.run_sync(set_mode, b2, "hang")
            await until(lambda: not available(gateway, b2.url), "b2 (hanging) taken out", 6)
            await anyio.sleep(HOLD)
            await anyio.to_thread.run_sync(set_mode, b2, "ok")
            await until(lambda: available(gateway, b2.url), "b2 back", 10)

            await anyio.to_thread.run_sync(set_mode, b3, "fail")
            await until(lambda: not available(gateway, b3.url), "b3 (503s) taken out", 6)
            await anyio.sleep(HOLD)
            await anyio.to_thread.run_sync(set_mode, b3, "ok")
            await until(lambda: available(gateway, b3.url), "b3 back", 10)

            await anyio.sleep(0.5)
            load.stop.set()
        elapsed = time.monotonic() - started

        assert set(load.statuses) == {"200"}, load.statuses  # not one failed request
        assert load.statuses["200"] > 200
        assert load.pool.stats().in_flight == 0
        await until(lambda: gateway.stats()["in_flight"] == 0, "gateway in-flight 0", 5)
        stats = gateway.stats()
        assert stats["pools"]["api"]["in_flight"] == 0
        budget = stats["retry_budget"]
        # Finagle's budget: 20 % of requests plus 10 a second (the default RetryBudget)
        assert budget["retries"] <= 0.2 * budget["requests"] + 10 * elapsed + 1
        assert budget["retries"] > 0  # the faults did need retries


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_hypercorn_gateway_survives_a_killed_backend(anyio_backend: str) -> None:
    """The same gateway under hypercorn: a SIGKILLed backend costs no request."""
    with (
        start_backends("h1", "h2") as backends,
        GatewayProcess(config(backends), server="hypercorn", proxy=PROXY) as gateway,
    ):
        load = Load(gateway.url)
        async with anyio.create_task_group() as tg:
            tg.start_soon(load.run)
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(backends[0].kill)
            await until(lambda: not available(gateway, backends[0].url), "h1 taken out", 6)
            await anyio.sleep(HOLD)
            load.stop.set()
        assert set(load.statuses) == {"200"}, load.statuses
        await until(lambda: gateway.stats()["in_flight"] == 0, "gateway in-flight 0", 5)
