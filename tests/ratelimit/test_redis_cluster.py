"""RedisStore on a real 3-master Redis Cluster: clients accepted, exact shared decisions, node loss."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio
import redis.cluster

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
            # redis-py's cluster client drops a dead master from its node table without closing
            # the connections it made to it; collect them here, where the warning is expected,
            # rather than in whichever test the garbage collector happens to run next.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()


@pytest.mark.anyio
async def test_concurrent_decisions_share_round_trips_per_master(
    redis_cluster: RedisClusterServers, anyio_backend: tuple[str, Any]
) -> None:
    """300 concurrent decisions over tenants on all three masters are exact and take fewer trips."""
    redis_cluster.flush()
    if anyio_backend[0] == "trio":
        client: Any = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    else:
        client = redis.asyncio.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    store = RedisStore(client)
    try:
        lim = RateLimiter(Rate(4, per=3600), store=store)
        tenants = [f"t{i}" for i in range(60)]
        assert len({redis_cluster.port_of(store.key_prefix(t)) for t in tenants}) == 3
        await lim.peek("warm")  # the slot map, so every call can go to its master
        admitted = dict.fromkeys(tenants, 0)

        async def decide(tenant: str) -> None:
            allowed = (await lim.acquire(tenant)).allowed
            admitted[tenant] += allowed

        before = store.stats().round_trips
        async with anyio.create_task_group() as tg:
            for tenant in tenants * 5:
                tg.start_soon(decide, tenant)
        assert set(admitted.values()) == {4}
        assert store.stats().round_trips - before < 300
    finally:
        await store.aclose()


def _move_slot(ports: list[int], slot: int, to_port: int) -> None:
    """Migrate *slot* (and its keys) to the master on *to_port*, as a resharding would."""
    admins = {port: redis.Redis(port=port, socket_timeout=5) for port in ports}
    try:
        ids = {port: admins[port].execute_command("CLUSTER", "MYID").decode() for port in ports}
        source = next(
            port
            for port in ports
            for start, end, *nodes in admins[ports[0]].execute_command("CLUSTER", "SLOTS")
            if start <= slot <= end and int(nodes[0][1]) == port
        )
        if source == to_port:
            return
        admins[to_port].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        admins[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to_port])
        keys = admins[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        if keys:
            admins[source].execute_command(
                "MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys
            )
        for port in ports:
            admins[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[to_port])
    finally:
        for admin in admins.values():
            admin.close()


@pytest.mark.slow
@pytest.mark.anyio
async def test_decisions_stay_exact_when_a_slot_moves(anyio_backend: tuple[str, Any]) -> None:
    """A tenant's slot migrated to another master mid-run: MOVED is followed, nothing over-admits."""
    with running_cluster() as cluster:
        if anyio_backend[0] == "trio":
            client: Any = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        else:
            client = redis.asyncio.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        store = RedisStore(client, timeout=5.0)
        try:
            lim = RateLimiter(Rate(10, per=3600), store=store)
            slots = ConcurrencyLimiter(2, store=store)
            prefix = store.key_prefix("acme")
            home = cluster.port_of(prefix)
            assert sum([(await lim.acquire("acme")).allowed for _ in range(4)]) == 4
            held = await slots.acquire("acme")
            slot = redis.cluster.key_slot(prefix)
            _move_slot(cluster.ports, slot, next(p for p in cluster.ports if p != home))
            assert cluster.port_of(prefix) != home
            async with anyio.create_task_group() as tg:  # concurrent, so some are pipelined
                for _ in range(10):
                    tg.start_soon(lim.acquire, "acme")
            assert not (await lim.acquire("acme")).allowed  # 10 in all, wherever the key lives
            assert (await lim.peek("acme", 0.001)).remaining == pytest.approx(0, abs=0.01)
            assert await slots.in_use("acme") == 1  # the lease moved with its key
            assert await slots.release(held)
            assert await slots.in_use("acme") == 0
        finally:
            await store.aclose()
