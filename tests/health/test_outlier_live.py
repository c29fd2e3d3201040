"""OutlierDetector fed by real HTTP requests to real loopback backends (time from a manual clock)."""

from __future__ import annotations

import httpx
import pytest

import tenantlb as tlb
from tenantlb.testing import ManualClock

from .conftest import BackendsFactory


async def send(client: httpx.AsyncClient, pool: tlb.Pool) -> tuple[str, int]:
    """One real request through a pool lease; the outcome is recorded on the lease."""
    with pool.acquire() as lease:
        try:
            response = await client.get(lease.url + "/work")
        except httpx.TransportError as exc:
            lease.record(error=exc)
            return lease.url, 0
        lease.record(status=response.status_code)
        return lease.url, response.status_code


@pytest.mark.anyio
async def test_backend_returning_500_is_ejected_after_five_and_returns(
    backends: BackendsFactory, clock: ManualClock
) -> None:
    """A backend answering 500 is ejected at exactly its fifth consecutive 500 and back after 30 s."""
    async with backends(2) as (bad, good), httpx.AsyncClient() as client:
        bad.mode = "error"
        events: list[tlb.Event] = []
        detector = tlb.OutlierDetector(base_ejection_time=30.0)
        pool = tlb.Pool(
            [bad.url, good.url],
            balancer=tlb.RoundRobin(),
            clock=clock,
            outlier_detector=detector,
            on_event=events.append,
        )
        failures = 0
        while failures < 5:
            assert not pool.state(bad.url).ejected
            url, status = await send(client, pool)
            if url == bad.url:
                assert status == 500
                failures += 1
        assert pool.state(bad.url).ejected
        assert bad.hits == 5
        assert [e.kind for e in events] == ["ejected"]
        for _ in range(10):  # only the good backend is picked while ejected
            assert await send(client, pool) == (good.url, 200)
        bad.mode = "ok"
        clock.advance(30.0)
        seen = {(await send(client, pool))[0] for _ in range(4)}
        assert seen == {bad.url, good.url}
        assert events[-1].kind == "unejected"


@pytest.mark.anyio
async def test_max_ejection_percent_holds_with_ten_failing_backends(
    backends: BackendsFactory, clock: ManualClock
) -> None:
    """Ten real backends all answering 500: the default 10 % ejects exactly one of them."""
    async with backends(10) as servers, httpx.AsyncClient() as client:
        for server in servers:
            server.mode = "error"
        events: list[tlb.Event] = []
        pool = tlb.Pool(
            [s.url for s in servers],
            balancer=tlb.RoundRobin(),
            clock=clock,
            outlier_detector=tlb.OutlierDetector(),
            on_event=events.append,
        )
        for _ in range(100):
            await send(client, pool)
        assert sum(e.ejected for e in pool.stats().endpoints) == 1
        assert [e.kind for e in events] == ["ejected"]
        assert not pool.panic


@pytest.mark.anyio
async def test_panic_mode_engages_when_ejections_leave_too_few(
    backends: BackendsFactory, clock: ManualClock
) -> None:
    """With a 60 % cap, six failing backends of ten are ejected and the pool reports panic."""
    async with backends(10) as servers, httpx.AsyncClient() as client:
        for server in servers[:6]:
            server.mode = "error"
        events: list[tlb.Event] = []
        pool = tlb.Pool(
            [s.url for s in servers],
            balancer=tlb.RoundRobin(),
            clock=clock,
            outlier_detector=tlb.OutlierDetector(max_ejection_percent=60),
            on_event=events.append,
        )
        for _ in range(60):
            await send(client, pool)
        stats = pool.stats()
        assert sum(e.ejected for e in stats.endpoints) == 6
        assert stats.panic
        assert stats.available == 4
        (panic,) = [e for e in events if e.kind == "panic_entered"]
        assert panic.reason == "4/10 endpoints available"
        clock.advance(30.0)
        await send(client, pool)  # ejections run out: the pool leaves panic mode
        assert not pool.panic
        assert events[-1].kind == "panic_left"
