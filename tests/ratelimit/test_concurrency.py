"""ConcurrencyLimiter in memory: slots per key, OverCapacity, release on every exit path."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from tenantlb import ConcurrencyLimiter, MemoryStore, OverCapacity


@pytest.mark.anyio
async def test_slot_raises_over_capacity_when_full() -> None:
    """The max+1-th holder of one key is refused at once; other keys are unaffected."""
    lim = ConcurrencyLimiter(2)
    async with lim.slot("acme"), lim.slot("acme"):
        with pytest.raises(OverCapacity, match="all 2 concurrency slots of 'acme' are in use"):
            await lim.acquire("acme")
        async with lim.slot("globex"):
            assert await lim.in_use("globex") == 1
        assert await lim.in_use("acme") == 2
    assert await lim.in_use("acme") == 0


@pytest.mark.anyio
async def test_slots_come_back_after_errors_and_cancellation() -> None:
    """A slot is released when the block raises or is cancelled."""
    lim = ConcurrencyLimiter(1)
    with pytest.raises(KeyError):
        async with lim.slot("acme"):
            raise KeyError("boom")
    with anyio.move_on_after(0.01):
        async with lim.slot("acme"):
            await anyio.sleep(10)
    assert await lim.in_use("acme") == 0


@pytest.mark.anyio
async def test_many_tasks_never_exceed_max() -> None:
    """Under 200 concurrent tasks, at most max hold a slot at any moment."""
    lim = ConcurrencyLimiter(5)
    inside = peak = refused = 0

    async def one() -> None:
        nonlocal inside, peak, refused
        try:
            async with lim.slot("acme"):
                inside += 1
                peak = max(peak, inside)
                await anyio.lowlevel.checkpoint()
                inside -= 1
        except OverCapacity:
            refused += 1

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(one)
    assert peak == 5
    assert refused > 0
    assert await lim.in_use("acme") == 0


def test_sync_acquire_nowait_and_release() -> None:
    """acquire_nowait raises OverCapacity when full, as acquire does; release is True once."""
    lim = ConcurrencyLimiter(1, store=MemoryStore())
    slot = lim.acquire_nowait("acme")
    with pytest.raises(OverCapacity, match="acme"):
        lim.acquire_nowait("acme")
    assert lim.release_nowait(slot)
    assert not lim.release_nowait(slot)
    assert lim.acquire_nowait("acme") is not None


def test_bad_arguments() -> None:
    """max must be an int >= 1, lease_ttl > 0, key a non-empty str."""
    with pytest.raises(ValueError, match="max must be >= 1, got 0"):
        ConcurrencyLimiter(0)
    with pytest.raises(TypeError, match="max must be an int, got float"):
        ConcurrencyLimiter(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease_ttl must be > 0 and finite"):
        ConcurrencyLimiter(1, lease_ttl=0)
    with pytest.raises(ValueError, match="key must be a non-empty str"):
        ConcurrencyLimiter(1).acquire_nowait("")
