"""With no per-request subscriber, the hot paths build no event and call no handler."""

from __future__ import annotations

from typing import Any

import pytest

import tenantlb as tlb
from tenantlb import _events, _gateway_events, _ticket
from tenantlb.balancing import _balanced, _lease, _pool
from tenantlb.observability import Event

from .support import KEYS, Recorder, make_gateway, request


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Event constructed and every emit() call while the test runs, by kind."""
    kinds: list[str] = []
    original = Event.__init__

    def counting_init(self: Event, **kwargs: Any) -> None:
        kinds.append(kwargs["kind"])
        original(self, **kwargs)

    def counting_emit(handlers: Any, events: Any) -> None:
        kinds.append("emit")
        _events.emit(handlers, events)

    monkeypatch.setattr(Event, "__init__", counting_init)
    for module in (_balanced, _lease, _pool, _gateway_events, _ticket):
        monkeypatch.setattr(module, "emit", counting_emit)
    return kinds


def test_the_fixture_counts(built: list[str], clock: Any) -> None:
    """The counting fixture sees events when there is a per-request subscriber."""
    pool = tlb.Pool(["http://a"], clock=clock)
    pool.subscribe(Recorder(), per_request=True)
    with pool.acquire() as lease:
        lease.record(status=200)
    assert built == ["pick", "emit", "outcome", "emit"]


def test_pool_hot_path_builds_nothing(built: list[str], clock: Any) -> None:
    """Acquire and record with only state subscribers (an outlier detector) build no event."""
    pool = tlb.Pool(
        ["http://a", "http://b"],
        clock=clock,
        outlier_detector=tlb.OutlierDetector(),
        on_event=Recorder(),
    )
    subset = pool.subset(["http://a"])
    for target in (pool, subset):
        for status in (200, 404, 503):
            with target.acquire() as lease:
                lease.record(status=status)
        with target.acquire():
            pass
    assert built == []


@pytest.mark.anyio
async def test_gateway_hot_path_builds_nothing(built: list[str], clock: Any) -> None:
    """Admissions, refusals and outcomes through a gateway build no event without a subscriber."""
    gateway = make_gateway(clock, limits=[tlb.Rate(2, per=60.0)], max_concurrency=5)
    gateway.subscribe(Recorder())  # state changes only
    for _ in range(2):
        async with gateway.admit(request(KEYS["acme"])) as ticket:
            ticket.reroute(ConnectionError("reset"))
            ticket.record(status=200)
    with pytest.raises(tlb.RateLimited):
        async with gateway.admit(request(KEYS["acme"])):
            pass
    with pytest.raises(tlb.Unauthenticated):
        async with gateway.admit(request(None)):
            pass
    assert built == []
    stats = gateway.stats()  # the counters are kept all the same
    assert stats.admitted == 2
    assert dict(stats.refused) == {"rate_limited": 1, "unauthenticated": 1}
