"""Concurrency leases on Redis: renewed while a request lives, keyed by everything that defines them."""

from __future__ import annotations

import gc
from typing import Any

import anyio
import pytest

import tenantlb as tlb
from tenantlb import ConcurrencyLimiter, OverCapacity

from .conftest import Target


@pytest.mark.anyio
async def test_a_request_longer_than_the_lease_keeps_its_slot(
    redis_target: Target, anyio_backend: tuple[str, Any]
) -> None:
    """A slot held for five lease lengths is renewed in the background and never lost."""
    async with redis_target.store(anyio_backend) as store:
        lim = ConcurrencyLimiter(1, store=store, lease_ttl=0.2)
        async with lim.slot("acme"):
            for _ in range(10):  # 1 s in all: five leases
                await anyio.sleep(0.1)
                assert await lim.in_use("acme") == 1
                with pytest.raises(OverCapacity):
                    await lim.acquire("acme")
        assert await lim.in_use("acme") == 0


@pytest.mark.anyio
async def test_a_dropped_slot_stops_being_renewed(
    redis_target: Target, anyio_backend: tuple[str, Any]
) -> None:
    """A Slot dropped without release (a leak in the caller) expires after its lease, as a crash would."""
    async with redis_target.store(anyio_backend) as store:
        lim = ConcurrencyLimiter(1, store=store, lease_ttl=0.2)
        await lim.acquire("acme")  # dropped at once
        gc.collect()
        with anyio.fail_after(5):
            while await lim.in_use("acme"):  # noqa: ASYNC110 - Redis expires the lease itself
                await anyio.sleep(0.05)


def test_sync_slots_renew_by_hand(redis_target: Target) -> None:
    """A slot taken with acquire_nowait is extended by renew_nowait; False once it is gone."""
    client = redis_target.sync_client()
    try:
        lim = ConcurrencyLimiter(1, store=tlb.RedisStore(client), lease_ttl=60)
        slot = lim.acquire_nowait("acme")
        assert lim.renew_nowait(slot)
        assert lim.release_nowait(slot)
        assert not lim.renew_nowait(slot)
    finally:
        client.close()


@pytest.mark.anyio
async def test_limiters_that_differ_only_in_lease_ttl_do_not_share_leases(
    redis_target: Target, anyio_backend: tuple[str, Any]
) -> None:
    """A short-lease limiter's expiry never cuts the leases of a long-lease one with the same max."""
    async with redis_target.store(anyio_backend) as store:
        long = ConcurrencyLimiter(2, store=store, lease_ttl=60)
        short = ConcurrencyLimiter(2, store=store, lease_ttl=0.1)
        held = await long.acquire("acme")
        await short.release(await short.acquire("acme"))
        await anyio.sleep(0.3)  # the short lease's key would have expired by now
        assert await long.in_use("acme") == 1
        assert await long.renew(held)
        assert await long.release(held)


@pytest.mark.anyio
async def test_gateway_takes_lease_ttl_from_config(
    redis_url: str, anyio_backend: tuple[str, Any]
) -> None:
    """gateway.lease_ttl in config reaches the tenants' Redis slots, and a long request keeps its slot."""
    config = {
        "gateway": {
            "lease_ttl": 0.2,
            "store": {"type": "redis", "url": redis_url},
            "resolvers": [{"type": "header", "header": "x-tenant"}],
        },
        "pools": {"default": {"endpoints": ["http://a"]}},
        "tenants": [{"id": "acme", "upstream": "default", "max_concurrency": 1}],
    }
    info = tlb.RequestInfo("GET", "/", [("x-tenant", "acme")])
    async with tlb.Gateway.from_config(config) as gateway:
        slots = ConcurrencyLimiter(1, store=gateway.store, lease_ttl=0.2)  # the same key
        async with gateway.admit(info):
            await anyio.sleep(0.7)  # over three leases: renewed meanwhile
            assert await slots.in_use("acme") == 1
            with pytest.raises(tlb.OverCapacity):
                async with gateway.admit(info):
                    pytest.fail("a second request got the only slot")
        assert await slots.in_use("acme") == 0


def test_bad_lease_ttl_in_config_names_the_field() -> None:
    """A lease_ttl that is not a positive number is a ConfigError at gateway.lease_ttl."""
    for bad in ("long", -1, 0):
        with pytest.raises(tlb.ConfigError) as info:
            tlb.Gateway.from_config(
                {"gateway": {"lease_ttl": bad}, "pools": {"p": {"endpoints": ["http://a"]}}}
            )
        assert info.value.path == "gateway" or info.value.path == "gateway.lease_ttl"


_HOLDER = """
import asyncio, sys
import redis.asyncio
import tenantlb as tlb

async def main() -> None:
    store = tlb.RedisStore(redis.asyncio.Redis.from_url(sys.argv[1]))
    lim = tlb.ConcurrencyLimiter(1, store=store, lease_ttl=float(sys.argv[2]))
    slot = await lim.acquire("acme")
    print("held", flush=True)
    await asyncio.sleep(60)  # holds the slot (renewed) until it is killed
    print(slot)

asyncio.run(main())
"""


@pytest.mark.anyio
async def test_a_slot_of_a_killed_process_expires_after_its_lease(
    redis_url: str, anyio_backend: tuple[str, Any]
) -> None:
    """Another process's slot is renewed while it lives and expires within lease_ttl of SIGKILL."""
    import subprocess
    import sys

    lease = 0.3
    holder = await anyio.to_thread.run_sync(
        lambda: subprocess.Popen(
            [sys.executable, "-c", _HOLDER, redis_url, str(lease)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    )
    try:
        assert holder.stdout is not None
        line = await anyio.to_thread.run_sync(holder.stdout.readline)
        assert line.strip() == b"held"
        async with Target("server", redis_url, [0]).store(anyio_backend) as store:
            lim = ConcurrencyLimiter(1, store=store, lease_ttl=lease)
            await anyio.sleep(4 * lease)  # four leases: the holder renews its slot meanwhile
            assert await lim.in_use("acme") == 1
            with pytest.raises(OverCapacity):
                await lim.acquire("acme")
            holder.kill()  # a crash: nothing is released, nothing renews any more
            await anyio.to_thread.run_sync(holder.wait)
            with anyio.fail_after(5):
                while await lim.in_use("acme"):  # noqa: ASYNC110 - Redis expires the lease itself
                    await anyio.sleep(0.05)
            await lim.release(await lim.acquire("acme"))  # the slot is free again
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
