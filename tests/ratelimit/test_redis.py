"""RedisStore against a real redis-server: shared decisions, one round trip, outages, processes."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from tenantlb import (
    ConcurrencyLimiter,
    MemoryStore,
    OverCapacity,
    Rate,
    RateLimiter,
    RedisStore,
    StoreUnavailable,
)

ALGORITHMS = ["gcra", "token_bucket", "sliding_window", "fixed_window"]
FAST_FAIL: dict[str, Any] = {
    "socket_timeout": 1.0,
    "socket_connect_timeout": 1.0,
    "retry": Retry(NoBackoff(), 0),
}


@contextmanager
def sync_client(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url, **FAST_FAIL)
    try:
        yield client
    finally:
        client.close()


@asynccontextmanager
async def make_store(
    url: str, backend: tuple[str, Any], **kwargs: Any
) -> AsyncIterator[RedisStore]:
    """A RedisStore on the asyncio client under asyncio; on a sync client (threads) under trio."""
    if backend[0] == "trio":
        with sync_client(url) as client:
            yield RedisStore(client, **kwargs)
        return
    aclient = redis.asyncio.Redis.from_url(url, **FAST_FAIL)
    try:
        yield RedisStore(aclient, **kwargs)
    finally:
        await aclient.aclose()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.anyio
async def test_admits_the_allowance_then_denies(
    redis_url: str, anyio_backend: tuple[str, Any], algorithm: str
) -> None:
    """Decisions in Redis admit exactly the allowance of a fresh key, then deny with a retry time."""
    async with make_store(redis_url, anyio_backend) as store:
        lim = RateLimiter(Rate(5, per=3600), store=store, algorithm=algorithm)
        decisions = [await lim.acquire("acme") for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert decisions[0].remaining == pytest.approx(4, abs=0.01)
    assert decisions[-1].retry_after > 0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.anyio
async def test_denial_by_one_rate_consumes_nothing(
    redis_url: str, anyio_backend: tuple[str, Any], algorithm: str
) -> None:
    """In Redis too, a request denied by the hourly rate does not consume the per-second rate."""
    async with make_store(redis_url, anyio_backend) as store:
        rates = [Rate(4, per=10_000, name="second"), Rate(2, per=100_000, name="hourly")]
        lim = RateLimiter(rates, store=store, algorithm=algorithm)
        assert (await lim.acquire("k", 2)).allowed
        for _ in range(10):
            decision = await lim.acquire("k")
            assert not decision.allowed
            assert decision.policy.name == "hourly"
        await lim.arefund("k", 2)
        decision = await lim.acquire("k", 2)
        assert decision.allowed


@pytest.mark.anyio
async def test_one_round_trip_per_decision(redis_url: str, anyio_backend: tuple[str, Any]) -> None:
    """Each decision is exactly one EVALSHA; the commands inside it are the script's own."""
    async with make_store(redis_url, anyio_backend) as store:
        lim = RateLimiter([Rate(10, per=1), Rate(1000, per=3600)], store=store)
        await lim.acquire("warm")  # loads the script
        with sync_client(redis_url) as admin:
            admin.config_resetstat()
            for _ in range(25):
                await lim.acquire("acme")
            stats = {
                k.removeprefix("cmdstat_"): v["calls"]
                for k, v in admin.info("commandstats").items()
            }
    stats.pop("config|resetstat", None)
    stats.pop("info", None)
    # Per decision: EVALSHA from the client; TIME + GET/SET per rate (only for admitted) inside it.
    assert stats["evalsha"] == 25
    assert stats["time"] == 25
    assert stats["get"] == 50
    assert set(stats) <= {"evalsha", "time", "get", "set"}


@pytest.mark.anyio
async def test_reloads_scripts_after_script_flush(
    redis_url: str, anyio_backend: tuple[str, Any]
) -> None:
    """A NOSCRIPT answer (Redis restarted or flushed) reloads the script transparently."""
    async with make_store(redis_url, anyio_backend) as store:
        lim = RateLimiter(Rate(3, per=60), store=store)
        assert (await lim.acquire("k")).allowed
        with sync_client(redis_url) as admin:
            admin.script_flush()
        assert (await lim.acquire("k")).allowed
        assert store.stats().available


@pytest.mark.anyio
async def test_keys_are_hash_tagged_and_expire(
    redis_url: str, anyio_backend: tuple[str, Any]
) -> None:
    """Keys carry the {key} hash tag and a TTL, so idle keys vanish."""
    async with make_store(redis_url, anyio_backend, prefix="app") as store:
        await RateLimiter([Rate(10, per=60), Rate(100, per=3600)], store=store).acquire("acme")
    with sync_client(redis_url) as admin:
        keys = sorted(k.decode() for k in admin.keys("*"))
        assert keys == [
            "app:{acme}:rl:gcra:10.0/60.0/10.0",
            "app:{acme}:rl:gcra:100.0/3600.0/100.0",
        ]
        assert all(0 < admin.pttl(k) <= 3_600_000 for k in keys)


def test_sync_client_serves_try_acquire(redis_url: str) -> None:
    """With a sync client, try_acquire, peek and refund go to Redis synchronously."""
    with sync_client(redis_url) as client:
        lim = RateLimiter(Rate(2, per=60), store=RedisStore(client))
        assert lim.try_acquire("k").allowed
        assert lim.peek("k").allowed
        assert lim.try_acquire("k").allowed
        assert not lim.try_acquire("k").allowed
        lim.refund("k", 1)
        assert lim.try_acquire("k").allowed


def test_async_only_store_refuses_sync_calls(redis_url: str) -> None:
    """A store with only an asyncio client raises a clear RuntimeError from try_acquire."""
    lim = RateLimiter(Rate(2), store=RedisStore(redis.asyncio.Redis.from_url(redis_url)))
    with pytest.raises(RuntimeError, match="only an asyncio client"):
        lim.try_acquire("k")


def test_bad_arguments() -> None:
    """Wrong clients, prefixes and policies are refused with clear errors."""
    client = redis.Redis()
    try:
        with pytest.raises(
            TypeError, match=r"client must be a redis\.asyncio\.Redis or redis\.Redis"
        ):
            RedisStore("redis://localhost")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="prefix must be a non-empty str"):
            RedisStore(client, prefix="")
        with pytest.raises(ValueError, match="on_error must be"):
            RedisStore(client, on_error="ignore")  # type: ignore[arg-type]
    finally:
        client.close()


@pytest.mark.parametrize("policy", ["fail_closed", "fail_open", "memory"])
@pytest.mark.anyio
async def test_redis_killed_mid_run_then_back(
    own_redis: Any,
    anyio_backend: tuple[str, Any],
    policy: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With Redis down each on_error policy behaves as documented, and decisions resume when it is back."""
    on_error: Any = MemoryStore() if policy == "memory" else policy
    async with make_store(own_redis.url, anyio_backend, on_error=on_error) as store:
        lim = RateLimiter(Rate(3, per=3600), store=store)
        assert (await lim.acquire("acme")).allowed
        own_redis.stop()
        with caplog.at_level(logging.INFO, logger="tenantlb.ratelimit"):
            if policy == "fail_closed":
                for _ in range(3):
                    with pytest.raises(StoreUnavailable, match="Redis did not answer"):
                        await lim.acquire("acme")
            elif policy == "fail_open":
                assert all([(await lim.acquire("acme")).allowed for _ in range(10)])
            else:  # a local MemoryStore decides meanwhile, with its own (fresh) state
                local = [(await lim.acquire("acme")).allowed for _ in range(5)]
                assert local == [True, True, True, False, False]
            stats = store.stats()
            assert not stats.available
            assert stats.outages == 1
            own_redis.start()
            assert (await lim.acquire("acme")).allowed  # a fresh Redis: state starts again
        assert store.stats().available
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # logged once per outage
    assert any("answers again" in r.getMessage() for r in caplog.records)


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    import redis.asyncio
    from tenantlb import Rate, RateLimiter, RedisStore

    async def main(url, algorithm):
        client = redis.asyncio.Redis.from_url(url, max_connections=64)
        lim = RateLimiter(Rate(120, per=1_000_000), store=RedisStore(client), algorithm=algorithm)
        decisions = await asyncio.gather(*(lim.acquire("shared") for _ in range(50)))
        await client.aclose()
        print(sum(d.allowed for d in decisions))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_four_processes_share_exactly_one_allowance(redis_url: str, algorithm: str) -> None:
    """4 OS processes x 50 tasks on one RedisStore admit exactly the allowance of 120."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url, algorithm],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    counts = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        counts.append(int(out))
    assert sum(counts) == 120


@pytest.mark.anyio
async def test_concurrency_slots_in_redis(redis_url: str, anyio_backend: tuple[str, Any]) -> None:
    """Redis slots are shared: a full key raises OverCapacity, and release frees a slot."""
    async with make_store(redis_url, anyio_backend) as store:
        a = ConcurrencyLimiter(2, store=store)
        b = ConcurrencyLimiter(2, store=store)  # another process would see the same slots
        async with a.slot("acme"):
            held = await b.acquire("acme")
            with pytest.raises(OverCapacity):
                await a.acquire("acme")
            assert await b.in_use("acme") == 2
            assert await a.arelease(held)
            assert not await a.arelease(held)
        assert await a.in_use("acme") == 0


@pytest.mark.anyio
async def test_concurrency_leases_of_a_dead_process_expire(
    redis_url: str, anyio_backend: tuple[str, Any]
) -> None:
    """Slots never released (a crashed process) come back once their lease expires."""
    async with make_store(redis_url, anyio_backend) as store:
        lim = ConcurrencyLimiter(1, store=store, lease_ttl=0.2)
        await lim.acquire("acme")  # never released
        with pytest.raises(OverCapacity):
            await lim.acquire("acme")
        with anyio.fail_after(10):
            while await lim.in_use("acme"):  # noqa: ASYNC110 - Redis expires the lease itself
                await anyio.sleep(0.05)
        await lim.acquire("acme")


def test_concurrency_sync_slots_in_redis(redis_url: str) -> None:
    """With a sync client, try_acquire / release work against Redis."""
    with sync_client(redis_url) as client:
        lim = ConcurrencyLimiter(1, store=RedisStore(client))
        slot = lim.try_acquire("acme")
        assert slot is not None
        assert lim.try_acquire("acme") is None
        assert lim.release(slot)
        assert lim.try_acquire("acme") is not None
