"""End to end: three real backends, one SIGKILLed mid-run, 2,000 GETs through each httpx transport."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
import pytest

from tenantlb.adapters.httpx import AsyncBalancingTransport, BalancingTransport
from tests.support.backends import start_backends
from tests.support.kill_run import TOTAL, KillRun, make_pool

pytestmark = pytest.mark.slow


def test_sync_transport_survives_a_killed_backend() -> None:
    """httpx.Client: 2,000 GETs from 16 threads, one backend SIGKILLed: all succeed."""
    with start_backends("b1", "b2", "b3") as backends:
        pool = make_pool(backends)
        run = KillRun(pool, backends[1])
        transport = BalancingTransport(pool)
        run.budget = transport.retry_budget
        with httpx.Client(transport=transport, base_url="http://svc", timeout=10) as client:

            def one(i: int) -> None:
                try:
                    response = client.get("/", params={"i": i})
                except httpx.HTTPError as exc:
                    run.failed(exc)
                else:
                    run.completed(response.status_code, response.json()["backend"])

            with ThreadPoolExecutor(16) as executor:
                list(executor.map(one, range(TOTAL)))
        run.verify()


@pytest.mark.anyio
async def test_async_transport_survives_a_killed_backend() -> None:
    """httpx.AsyncClient: 2,000 GETs, 32 at a time, one backend SIGKILLed: all succeed."""
    with start_backends("b1", "b2", "b3") as backends:
        pool = make_pool(backends)
        run = KillRun(pool, backends[1])
        transport = AsyncBalancingTransport(pool)
        run.budget = transport.retry_budget
        limit = anyio.Semaphore(32)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://svc", timeout=10
        ) as client:

            async def one(i: int) -> None:
                try:
                    async with limit:
                        response = await client.get("/", params={"i": i})
                except httpx.HTTPError as exc:
                    run.failed(exc)
                else:
                    run.completed(response.status_code, response.json()["backend"])

            async with anyio.create_task_group() as tg:
                for i in range(TOTAL):
                    tg.start_soon(one, i)
        run.verify()
