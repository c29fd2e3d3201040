"""RedisStore against a real redis-server: shared decisions, one round trip, outages, processes."""

from __future__ import annotations

import json
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

from .conftest import Target

ALGORITHMS = ["gcra", "token_bucket", "sliding_window", "fixed_window"]
# RedisStore runs a lean script for one rate and another for several: tests that decide through
# Redis run both, the second as the same rate plus a generous one that never decides.
SCRIPTS = ["one_rate", "two_rates"]


def rates_for(script: str, rate: Rate) -> list[Rate]:
    if script == "one_rate":
        return [rate]
    return [rate, Rate(rate.limit * 1000, per=rate.per * 10, name="generous")]


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


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.anyio
async def test_admits_the_allowance_then_denies(
    redis_target: Target, anyio_backend: tuple[str, Any], algorithm: str, script: str
) -> None:
    """Decisions in Redis admit exactly the allowance of a fresh key, then deny with a retry time."""
    async with redis_target.store(anyio_backend) as store:
        rate = Rate(5, per=3600)
        lim = RateLimiter(rates_for(script, rate), store=store, algorithm=algorithm)
        decisions = [await lim.acquire("acme") for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert decisions[0].remaining == pytest.approx(4, abs=0.01)
    assert decisions[0].policy == rate
    assert decisions[-1].policy == rate
    assert decisions[-1].retry_after > 0


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.anyio
async def test_peek_and_refund(
    redis_target: Target, anyio_backend: tuple[str, Any], algorithm: str, script: str
) -> None:
    """In Redis, peek consumes nothing and a refund gives cost back for the next request."""
    async with redis_target.store(anyio_backend) as store:
        lim = RateLimiter(rates_for(script, Rate(3, per=3600)), store=store, algorithm=algorithm)
        assert (await lim.peek("k", 3)).allowed
        assert (await lim.acquire("k", 3)).allowed
        assert not (await lim.peek("k")).allowed
        assert not (await lim.acquire("k")).allowed
        await lim.refund("k", 2)
        assert (await lim.acquire("k", 2)).allowed
        assert not (await lim.acquire("k")).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.anyio
async def test_one_and_several_rate_scripts_share_state(
    redis_target: Target, anyio_backend: tuple[str, Any], algorithm: str
) -> None:
    """A one-rate and a two-rate limiter with the same rate read and write one state per key."""
    async with redis_target.store(anyio_backend) as store:
        rate = Rate(4, per=3600)
        one = RateLimiter(rate, store=store, algorithm=algorithm)
        two = RateLimiter(rates_for("two_rates", rate), store=store, algorithm=algorithm)
        assert (await one.acquire("k", 3)).allowed
        assert (await two.acquire("k")).allowed
        assert not (await one.acquire("k")).allowed
        assert not (await two.acquire("k")).allowed


@pytest.mark.anyio
async def test_decode_responses_client(redis_url: str, anyio_backend: tuple[str, Any]) -> None:
    """A client built with decode_responses=True decides as well (script replies stay raw)."""
    if anyio_backend[0] == "trio":
        client: Any = redis.Redis.from_url(redis_url, decode_responses=True, **FAST_FAIL)
    else:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True, **FAST_FAIL)
    store = RedisStore(client)
    try:
        for script in SCRIPTS:
            lim = RateLimiter(rates_for(script, Rate(2, per=60)), store=store, name=script)
            assert [(await lim.acquire("k")).allowed for _ in range(3)] == [True, True, False]
    finally:
        await store.aclose()


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.anyio
async def test_timed_out_decision_never_answers_a_later_one(
    redis_url: str, anyio_backend: tuple[str, Any], protocol: int
) -> None:
    """A decision that times out drops its connection, so its late reply cannot answer another."""
    fast = {**FAST_FAIL, "socket_timeout": 0.2, "protocol": protocol}
    if anyio_backend[0] == "trio":
        client: Any = redis.Redis.from_url(redis_url, **fast)
    else:
        client = redis.asyncio.Redis.from_url(redis_url, **fast)
    store = RedisStore(client)
    try:
        lim = RateLimiter(Rate(100, per=3600), store=store)
        assert (await lim.acquire("k", 90)).allowed
        with sync_client(redis_url) as admin:
            admin.execute_command("CLIENT", "PAUSE", "600", "ALL")
        with pytest.raises(StoreUnavailable):
            await lim.acquire("other", 50)  # times out; Redis may still run it later
        with anyio.fail_after(10):
            while True:
                try:
                    decision = await lim.peek("k", 1)
                    break
                except StoreUnavailable:
                    await anyio.sleep(0.05)
        # "other"'s late reply (remaining 50) would answer this peek if the connection were reused.
        assert decision.remaining == pytest.approx(9, abs=0.1)
        assert (await lim.acquire("k", 10)).allowed
        assert not (await lim.acquire("k", 1)).allowed
    finally:
        await store.aclose()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.anyio
async def test_denial_by_one_rate_consumes_nothing(
    redis_target: Target, anyio_backend: tuple[str, Any], algorithm: str
) -> None:
    """In Redis too, a request denied by the hourly rate does not consume the per-second rate."""
    async with redis_target.store(anyio_backend) as store:
        rates = [Rate(4, per=10_000, name="second"), Rate(2, per=100_000, name="hourly")]
        lim = RateLimiter(rates, store=store, algorithm=algorithm)
        assert (await lim.acquire("k", 2)).allowed
        for _ in range(10):
            decision = await lim.acquire("k")
            assert not decision.allowed
            assert decision.policy.name == "hourly"
        await lim.refund("k", 2)
        decision = await lim.acquire("k", 2)
        assert decision.allowed


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.anyio
async def test_one_round_trip_per_decision(
    redis_url: str, anyio_backend: tuple[str, Any], script: str
) -> None:
    """Each decision is exactly one EVALSHA; the commands inside it are the script's own."""
    async with make_store(redis_url, anyio_backend) as store:
        lim = RateLimiter(rates_for(script, Rate(10, per=1)), store=store)
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
    assert stats["get"] == 25 * len(lim.rates)
    assert set(stats) <= {"evalsha", "time", "get", "set"}


@pytest.mark.anyio
async def test_reloads_scripts_after_script_flush(
    redis_target: Target, anyio_backend: tuple[str, Any]
) -> None:
    """A NOSCRIPT answer (Redis restarted or flushed) reloads the script transparently."""
    async with redis_target.store(anyio_backend) as store:
        lim = RateLimiter(Rate(3, per=60), store=store)
        assert (await lim.acquire("k")).allowed
        redis_target.script_flush()
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


def test_sync_client_serves_acquire_nowait(redis_url: str) -> None:
    """With a sync client, acquire_nowait, peek and refund go to Redis synchronously."""
    with sync_client(redis_url) as client:
        lim = RateLimiter(Rate(2, per=60), store=RedisStore(client))
        assert lim.acquire_nowait("k").allowed
        assert lim.peek_nowait("k").allowed
        assert lim.acquire_nowait("k").allowed
        assert not lim.acquire_nowait("k").allowed
        lim.refund_nowait("k", 1)
        assert lim.acquire_nowait("k").allowed


def test_async_only_store_refuses_sync_calls(redis_url: str) -> None:
    """A store with only an asyncio client raises a clear RuntimeError from acquire_nowait."""
    lim = RateLimiter(Rate(2), store=RedisStore(redis.asyncio.Redis.from_url(redis_url)))
    with pytest.raises(RuntimeError, match="only an asyncio client"):
        lim.acquire_nowait("k")


def test_bad_arguments() -> None:
    """Wrong clients, prefixes and policies are refused with clear errors."""
    client = redis.Redis()
    try:
        with pytest.raises(
            TypeError, match=r"client must be a redis\.asyncio\.Redis, redis\.asyncio\.RedisCluster"
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
    import asyncio, json, sys
    import redis.asyncio
    from tenantlb import Rate, RateLimiter, RedisStore

    async def main(kind, port, combos, tenants, allowance, attempts):
        if kind == "cluster":
            client = redis.asyncio.RedisCluster(host="127.0.0.1", port=port)
        else:
            client = redis.asyncio.Redis(port=port, max_connections=64)
        store = RedisStore(client, timeout=30)
        work, admitted = [], {}
        for combo in combos.split(","):
            algorithm, script = combo.split(":")
            rates = [Rate(allowance, per=1_000_000)]
            if script == "two_rates":
                rates.append(Rate(allowance * 1000, per=10_000_000, name="generous"))
            lim = RateLimiter(rates, store=store, algorithm=algorithm, name=script)
            keys = [f"tenant-{t}" for t in range(tenants)]
            admitted[combo] = dict.fromkeys(keys, 0)
            work += [(combo, lim, key) for key in keys] * attempts

        async def task(i):
            for combo, lim, key in work[i::50]:
                if (await lim.acquire(key)).allowed:
                    admitted[combo][key] += 1

        await asyncio.gather(*(task(i) for i in range(50)))
        await client.aclose()
        print(json.dumps(admitted))

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:])))
    """
)


def run_workers(target: Target, combos: list[str], *args: int) -> dict[str, dict[str, int]]:
    """Run 4 worker processes (50 tasks each); return what they admitted per combo and tenant."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, target.kind, str(target.port), ",".join(combos)]
            + [str(a) for a in args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    total: dict[str, dict[str, int]] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        for combo, counts in json.loads(out).items():
            for tenant, n in counts.items():
                total.setdefault(combo, {}).setdefault(tenant, 0)
                total[combo][tenant] += n
    return total


@pytest.mark.slow
def test_four_processes_share_exactly_one_allowance(redis_target: Target) -> None:
    """4 OS processes x 50 tasks on one RedisStore admit exactly 120, for every algorithm and script."""
    combos = [f"{a}:{s}" for a in ALGORITHMS for s in SCRIPTS]
    total = run_workers(redis_target, combos, 1, 120, 50)
    assert {combo: counts["tenant-0"] for combo, counts in total.items()} == dict.fromkeys(
        combos, 120
    )


@pytest.mark.slow
def test_four_processes_share_a_thousand_tenants_exactly(redis_target: Target) -> None:
    """4 processes x 50 tasks deciding for 1,000 tenants admit exactly each tenant's allowance."""
    per_tenant = run_workers(redis_target, ["gcra:two_rates"], 1000, 2, 1)["gcra:two_rates"]
    assert len(per_tenant) == 1000
    assert set(per_tenant.values()) == {2}  # 4 attempts each: 2 admitted, never 3
    if redis_target.kind == "cluster":
        store = RedisStore(redis.Redis())  # only to spell the keys
        masters = {redis_target.master_of(store.key_prefix(t)) for t in per_tenant}
        assert len(masters) == 3


@pytest.mark.anyio
async def test_concurrency_slots_in_redis(
    redis_target: Target, anyio_backend: tuple[str, Any]
) -> None:
    """Redis slots are shared: a full key raises OverCapacity, and release frees a slot."""
    async with redis_target.store(anyio_backend) as store:
        a = ConcurrencyLimiter(2, store=store)
        b = ConcurrencyLimiter(2, store=store)  # another process would see the same slots
        async with a.slot("acme"):
            held = await b.acquire("acme")
            with pytest.raises(OverCapacity):
                await a.acquire("acme")
            assert await b.in_use("acme") == 2
            assert await a.release(held)
            assert not await a.release(held)
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
    """With a sync client, acquire_nowait / release work against Redis."""
    with sync_client(redis_url) as client:
        lim = ConcurrencyLimiter(1, store=RedisStore(client))
        slot = lim.acquire_nowait("acme")
        with pytest.raises(OverCapacity):
            lim.acquire_nowait("acme")
        assert lim.release_nowait(slot)
        assert lim.acquire_nowait("acme") is not None


@pytest.mark.anyio
async def test_connections_go_back_to_the_pool_as_they_came(
    redis_url: str, anyio_backend: tuple[str, Any]
) -> None:
    """The connections the store held go back to the client's pool with their own socket timeout."""
    options = {"socket_timeout": 0.7, "max_connections": 16}
    asyncio_client = anyio_backend[0] == "asyncio"
    if asyncio_client:
        client: Any = redis.asyncio.Redis.from_url(redis_url, **options)
    else:
        client = redis.Redis.from_url(redis_url, **options)
    store = RedisStore(client)
    pool = client.connection_pool
    try:
        lim = RateLimiter(Rate(10**6, per=60), store=store)
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(lim.acquire, f"k{i % 7}")
        for _ in range(20):
            await lim.acquire("alone")
        with anyio.fail_after(10):
            while True:  # every connection of the pool can be taken again: none is held
                conns: list[Any] = []
                try:
                    for _ in range(16):
                        if asyncio_client:
                            conns.append(await pool.get_connection())
                        else:
                            conns.append(pool.get_connection())
                except redis.exceptions.MaxConnectionsError:
                    pass
                assert all(conn.socket_timeout == 0.7 for conn in conns)
                for conn in conns:
                    if asyncio_client:
                        await pool.release(conn)
                    else:
                        pool.release(conn)
                if len(conns) == 16:
                    break
                await anyio.sleep(0.1)
        assert (await lim.acquire("after")).allowed
    finally:
        await store.aclose()
