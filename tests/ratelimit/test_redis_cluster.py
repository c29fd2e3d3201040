"""RedisStore on a real 3-master Redis Cluster: clients accepted, exact shared decisions, node loss."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio

from tenantlb import ConcurrencyLimiter, OverCapacity, Rate, RateLimiter, RedisStore

from .conftest import RedisClusterServers


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
