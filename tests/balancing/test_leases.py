"""Leases never leak: every strategy ends with zero in flight after records, errors and cancellation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import anyio.lowlevel
import pytest

import tenantlb as tlb
from tenantlb.balancing import Balancer, EndpointState
from tenantlb.testing import ManualClock

URLS = [f"http://10.5.0.{i}:8000" for i in range(1, 9)]

STRATEGIES: dict[str, Callable[[], Balancer]] = {
    "RoundRobin": tlb.RoundRobin,
    "WeightedRandom": tlb.WeightedRandom,
    "LeastRequest": tlb.LeastRequest,
    "PeakEWMA": tlb.PeakEWMA,
    "RingHash": tlb.RingHash,
    "Maglev": lambda: tlb.Maglev(1009),
    "Rendezvous": tlb.Rendezvous,
    "BoundedLoad": tlb.BoundedLoad,
}


class Boom(Exception):
    pass


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(STRATEGIES))
async def test_10k_concurrent_cycles_leave_nothing_in_flight(name: str) -> None:
    """10k concurrent acquire/record/error/cancel cycles, then a group cancel, leave 0 in flight."""
    clock = ManualClock()
    endpoints = [tlb.Endpoint(u, weight=1 + i % 3) for i, u in enumerate(URLS)]
    pool = tlb.Pool(endpoints, STRATEGIES[name](), clock=clock)
    outcomes = {"recorded": 0, "cancelled": 0, "failed": 0}

    async def cycle(i: int) -> None:
        key = f"client-{i % 97}" if i % 2 else None
        with anyio.CancelScope() as scope:
            try:
                with pool.acquire(key=key) as lease:
                    await anyio.lowlevel.checkpoint()
                    clock.advance(0.001)
                    kind = i % 5
                    if kind == 0:
                        scope.cancel()  # cancelled while holding the lease
                        await anyio.lowlevel.checkpoint()
                    elif kind == 1:
                        raise Boom
                    await anyio.lowlevel.checkpoint()
                    lease.record(status=503 if kind == 2 else 200)
                    outcomes["recorded"] += 1
            except Boom:
                outcomes["failed"] += 1
            except anyio.get_cancelled_exc_class():
                outcomes["cancelled"] += 1
                raise

    async with anyio.create_task_group() as tg:
        for i in range(10_000):
            tg.start_soon(cycle, i)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()  # the rest are cancelled wherever they are

    stats = pool.stats()
    assert stats.in_flight == 0
    assert all(e.in_flight == 0 for e in stats.endpoints)
    assert outcomes["cancelled"] > 0
    assert outcomes["failed"] > 0


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(STRATEGIES))
async def test_leases_held_across_awaits_complete(name: str) -> None:
    """Uncancelled concurrent leases all record and release exactly once."""
    clock = ManualClock()
    pool = tlb.Pool(URLS, STRATEGIES[name](), clock=clock)
    done = 0

    async def cycle(i: int) -> None:
        nonlocal done
        with pool.acquire(key=str(i % 13)) as lease:
            await anyio.lowlevel.checkpoint()
            lease.record(status=200)
            with pytest.raises(RuntimeError, match="already released"):
                lease.record(status=200)
        done += 1

    async with anyio.create_task_group() as tg:
        for i in range(500):
            tg.start_soon(cycle, i)
    assert done == 500
    stats = pool.stats()
    assert stats.in_flight == 0
    assert sum(e.requests for e in stats.endpoints) == 500


class _Recorder(tlb.BalancerBase):
    """Picks the first candidate and keeps the arguments of every observe() call."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self._candidates: Sequence[EndpointState] = ()

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        self._candidates = candidates

    def pick(self, key: bytes | None) -> EndpointState | None:
        return self._candidates[0] if self._candidates else None

    def clone(self) -> _Recorder:
        return type(self)()


class _ThreeArguments(_Recorder):
    def observe(self, state: EndpointState, latency: float, failed: bool) -> None:
        self.calls.append((latency, failed))


class _KeywordNow(_Recorder):
    def observe(
        self, state: EndpointState, latency: float, failed: bool, *, now: float | None = None
    ) -> None:
        self.calls.append((latency, failed, now))


class _WithNow(_Recorder):
    def observe(
        self, state: EndpointState, latency: float, failed: bool, now: float | None = None
    ) -> None:
        self.calls.append((latency, failed, now))


def test_observe_gets_the_records_clock_reading_if_it_takes_now() -> None:
    """A balancer whose observe() has a `now` parameter gets the clock reading of the record;
    one with the protocol's three arguments (or `now` only by keyword) is called with three."""
    clock = ManualClock(50.0)
    plain, timed, keyword = _ThreeArguments(), _WithNow(), _KeywordNow()
    balancers = (plain, timed, keyword)
    pools = [tlb.Pool(URLS[:2], b, clock=clock, outlier_detector=None) for b in balancers]
    for pool in pools:
        with pool.acquire() as lease:
            clock.advance(0.25)
            lease.record(status=503)
    assert plain.calls == [(0.25, True)]
    assert timed.calls == [(0.25, True, 50.5)]
    assert keyword.calls == [(0.25, True, None)]
