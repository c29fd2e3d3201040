"""End to end: three real backends, one SIGKILLed mid-run, 2,000 GETs through the aiohttp middleware."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tenantlb.adapters.aiohttp import balancing_middleware
from tests.support.backends import start_backends
from tests.support.kill_run import TOTAL, KillRun, make_pool

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_aiohttp_middleware_survives_a_killed_backend() -> None:
    """aiohttp.ClientSession: 2,000 GETs, 32 at a time, one backend SIGKILLed: all succeed."""
    with start_backends("b1", "b2", "b3") as backends:
        pool = make_pool(backends)
        run = KillRun(pool, backends[1])
        limit = asyncio.Semaphore(32)
        timeout = aiohttp.ClientTimeout(total=10)
        middleware = balancing_middleware(pool)
        run.budget = middleware.retry_budget
        async with aiohttp.ClientSession(middlewares=[middleware], timeout=timeout) as session:

            async def one(i: int) -> None:
                try:
                    async with limit, session.get("http://svc/", params={"i": i}) as response:
                        payload = await response.json()
                except aiohttp.ClientError as exc:
                    run.failed(exc)
                else:
                    run.completed(response.status, payload["backend"])

            await asyncio.gather(*(one(i) for i in range(TOTAL)))
        run.verify()
