"""RedisStore on a real 3-master Redis Cluster: clients accepted, exact shared decisions, node loss."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

from tenantlb import (
    ConcurrencyLimiter,
    OverCapacity,
    Rate,
    RateLimiter,
    RedisStore,
    StoreUnavailable,
)

from .conftest import RedisClusterServers, running_cluster


@pytest.mark.anyio
async def test_cluster_clients_are_accepted(
    redis_cluster: RedisClusterServers, anyio_backend: tuple[str, Any]
) -> None:
    """RedisStore takes redis.asyncio.RedisCluster and redis.RedisCluster and decides on them."""
    redis_cluster.flush()
    if anyio_backend[0] == "trio":
        client: Any = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    else:
        client = redis.asyncio.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    store = RedisStore(client)
    try:
        lim = RateLimiter([Rate(3, per=3600), Rate(100, per=7200)], store=store)
        tenants = [f"t{i}" for i in range(30)]
        ports = {redis_cluster.port_of(store.key_prefix(t)) for t in tenants}
        assert len(ports) == 3  # the tenants live on every master
        for tenant in tenants:
            assert [(await lim.acquire(tenant)).allowed for _ in range(4)] == [True] * 3 + [False]
        slots = ConcurrencyLimiter(1, store=store)
        async with slots.slot("t1"):
            with pytest.raises(OverCapacity):
                await slots.acquire("t1")
        assert await slots.in_use("t1") == 0
    finally:
        await store.aclose()


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_dead_master_affects_only_its_tenants(anyio_backend: tuple[str, Any]) -> None:
    """Killing one master mid-run: other tenants stay exact, its tenants fail closed within the timeout."""
    with running_cluster() as cluster:
        if anyio_backend[0] == "trio":
            client: Any = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        else:
            client = redis.asyncio.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        store = RedisStore(client, timeout=2.0)
        lim = RateLimiter([Rate(5, per=1e6), Rate(1000, per=1e7)], store=store)
        tenants = [f"tenant-{i}" for i in range(60)]
        home = {t: cluster.port_of(store.key_prefix(t)) for t in tenants}
        dead_port = cluster.ports[1]
        dead = {t for t in tenants if home[t] == dead_port}
        assert 0 < len(dead) < len(tenants)
        admitted = dict.fromkeys(tenants, 0)
        refused = dict.fromkeys(tenants, 0)

        async def attempt(tenant: str) -> None:
            with anyio.fail_after(6):  # the store's own bound is 2 s; never redis-py's retries
                try:
                    decision = await lim.acquire(tenant)
                except StoreUnavailable:
                    refused[tenant] += 1
                else:
                    admitted[tenant] += decision.allowed

        try:
            for tenant in dict.fromkeys(home.values()):  # connections to each master
                await lim.peek(next(t for t in tenants if home[t] == tenant))
            async with anyio.create_task_group() as tg:
                for tenant in tenants * 2:
                    tg.start_soon(attempt, tenant)
            assert set(admitted.values()) == {2}
            cluster.kill(1)
            for _ in range(3):  # mid-run and after: 6 more attempts each
                async with anyio.create_task_group() as tg:
                    for tenant in tenants * 2:
                        tg.start_soon(attempt, tenant)
            for tenant in dead:  # on_error (fail_closed) every time, never a raw redis error
                assert (admitted[tenant], refused[tenant]) == (2, 6), tenant
            # The others never over-admit. While redis-py's cluster client refreshes its slot
            # map after the failure it can hold their calls too; those are bounded by the
            # timeout and refused (fail_closed) rather than stalled, and a call that Redis ran
            # after its caller left is refunded.
            live = [t for t in tenants if t not in dead]
            assert all(admitted[t] <= 5 for t in live)
            assert sum(admitted[t] == 5 for t in live) > len(live) // 2
            # Afterwards Redis holds exactly what was admitted for every live tenant.
            with anyio.fail_after(30):
                for tenant in live:
                    while True:
                        try:
                            remaining = (await lim.peek(tenant, 0.001)).remaining
                        except StoreUnavailable:
                            continue
                        if remaining == pytest.approx(5 - admitted[tenant] - 0.001, abs=0.01):
                            break
                        await anyio.sleep(0.05)  # a refund handed to the store is on its way
        finally:
            await store.aclose()
