"""Per-tenant counters in `Gateway.stats()`: admitted, refused by reason, in flight; frozen."""

from __future__ import annotations

import anyio
import attrs
import pytest

import tenantlb as tlb
from tenantlb.testing import ManualClock

from .support import KEYS, make_gateway, request


@pytest.mark.anyio
async def test_counts_per_tenant(clock: ManualClock) -> None:
    """Admissions, refusals by reason and in-flight requests are counted per tenant."""
    gateway = make_gateway(clock, limits=[tlb.Rate(2, per=60.0)], max_concurrency=1)
    async with gateway.admit(request(KEYS["acme"])):
        during = gateway.stats()
        with pytest.raises(tlb.OverCapacity):
            async with gateway.admit(request(KEYS["acme"])):
                pass
    async with gateway.admit(request(KEYS["acme"])):
        pass
    with pytest.raises(tlb.RateLimited):
        async with gateway.admit(request(KEYS["acme"])):
            pass
    async with gateway.admit(request(KEYS["globex"])):
        pass
    for key in (None, "sk-initech-0123456789ab"):
        with pytest.raises(tlb.RequestRejected):
            async with gateway.admit(request(key)):
                pass
    stats = gateway.stats()

    assert (during.admitted, during.in_flight, during.by_tenant["acme"].in_flight) == (1, 1, 1)
    acme = stats.by_tenant["acme"]
    assert (acme.tenant, acme.admitted, acme.in_flight) == ("acme", 2, 0)
    # over_capacity gave its rate-limit charge back, so the third request was the one refused
    assert dict(acme.refused) == {"over_capacity": 1, "rate_limited": 1}
    assert dict(stats.by_tenant["globex"].refused) == {}
    assert set(stats.by_tenant) == {"acme", "globex"}  # unidentified refusals name no tenant
    assert (stats.admitted, stats.in_flight) == (3, 0)
    assert dict(stats.refused) == {
        "over_capacity": 1,
        "rate_limited": 1,
        "unauthenticated": 1,
        "forbidden": 1,
    }


@pytest.mark.anyio
async def test_snapshots_are_frozen(clock: ManualClock) -> None:
    """A snapshot neither changes with later traffic nor can be modified."""
    gateway = make_gateway(clock)
    async with gateway.admit(request(KEYS["acme"])):
        pass
    stats = gateway.stats()
    async with gateway.admit(request(KEYS["acme"])):
        pass
    assert stats.by_tenant["acme"].admitted == 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.admitted = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.refused["forbidden"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        stats.by_tenant["acme"].refused["forbidden"] = 1  # type: ignore[index]


@pytest.mark.anyio
async def test_in_flight_returns_to_zero_after_cancellation(clock: ManualClock) -> None:
    """A request cancelled while admitted no longer counts as in flight."""
    gateway = make_gateway(clock)
    entered = anyio.Event()

    async def hold() -> None:
        async with gateway.admit(request(KEYS["acme"])):
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await entered.wait()
        assert gateway.stats().by_tenant["acme"].in_flight == 1
        tg.cancel_scope.cancel()
    stats = gateway.stats().by_tenant["acme"]
    assert (stats.admitted, stats.in_flight) == (1, 0)
