"""Redis-backed decisions per second: tenantlb RedisStore vs limits' async Redis strategies.

Starts its own redis-server (from PATH) on a free loopback port, then measures decisions per second
at concurrency 1 and 64 with redis-py's asyncio client for everyone (limits with
``implementation="redispy"``), interleaved, best of several rounds. Round trips are counted with
``INFO commandstats``: client-issued commands per decision (commands run inside a Lua script are
counted by Redis too, so the script's own TIME/GET/SET are listed separately). Server cost is
reported two ways: ``usec_per_call`` of EVALSHA (the script alone, from ``INFO commandstats``) and
redis-server CPU per decision (``used_cpu_user + used_cpu_sys`` from ``INFO cpu``, which also
counts reading, parsing and writing the commands), both at concurrency 64.
Targets: >= 1.2x limits' FixedWindow throughput at both concurrencies; exactly one round trip.

    python benchmarks/ratelimit_redis.py [--quick]
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio

import tenantlb as tlb

QUICK = "--quick" in sys.argv
ROUNDS = 2 if QUICK else 5
DECISIONS = {1: 1_000 if QUICK else 4_000, 64: 4_000 if QUICK else 20_000}
BIG = 10**12
SCRIPT_INTERNAL = {"time", "get", "set", "incrby", "expire", "pexpire", "ttl", "pttl", "exists"}


def start_redis() -> tuple[subprocess.Popen[bytes], int, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    workdir = tempfile.mkdtemp(prefix="tenantlb-bench-redis-")
    binary = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    client.close()
    return proc, port, workdir


Decide = Callable[[str], Awaitable[object]]


async def throughput(decide: Decide, total: int, concurrency: int) -> float:
    per_worker = total // concurrency

    async def worker(i: int) -> None:
        key = f"acme{i % 8}"
        for _ in range(per_worker):
            await decide(key)

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return per_worker * concurrency / (time.perf_counter() - start)


def command_stats(admin: redis.Redis) -> dict[str, dict[str, float]]:
    stats = admin.info("commandstats")
    return {k.removeprefix("cmdstat_"): v for k, v in stats.items()}


def server_cpu(admin: redis.Redis) -> float:
    cpu = admin.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def main() -> None:
    proc, port, workdir = start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    admin = redis.Redis(port=port)
    client = redis.asyncio.Redis.from_url(url, max_connections=128)
    contenders: dict[str, Decide] = {}
    try:
        store = tlb.RedisStore(client)
        for algorithm in ("gcra", "sliding_window", "fixed_window"):
            limiter = tlb.RateLimiter(tlb.Rate(BIG, per=60), store=store, algorithm=algorithm)
            contenders[f"tenantlb {algorithm}"] = lambda key, limiter=limiter: limiter.acquire(key)
        try:
            import limits
            from limits.aio import storage, strategies

            limits_store = storage.RedisStorage(
                f"async+redis://127.0.0.1:{port}/0", implementation="redispy", max_connections=128
            )
            item = limits.RateLimitItemPerMinute(BIG)
            fixed = strategies.FixedWindowRateLimiter(limits_store)
            moving = strategies.MovingWindowRateLimiter(limits_store)
            moving_item = limits.RateLimitItemPerMinute(1000)  # its sorted set grows per hit
            contenders["limits FixedWindow"] = lambda key: fixed.hit(item, key)
            contenders["limits MovingWindow (limit 1000)"] = lambda key: moving.hit(
                moving_item, key
            )
        except Exception as exc:
            print(f"limits not measured: {exc!r}")

        for decide in contenders.values():  # warm up: connections, scripts loaded
            await throughput(decide, 64, 64)

        best = {(name, c): 0.0 for name in contenders for c in DECISIONS}
        per_decision: dict[str, float] = {}
        script_us = {name: float("inf") for name in contenders}
        cpu_us = {name: float("inf") for name in contenders}
        for _ in range(ROUNDS):
            for concurrency, total in DECISIONS.items():
                for name, decide in contenders.items():
                    admin.flushall()
                    admin.config_resetstat()
                    cpu = server_cpu(admin)
                    rate = await throughput(decide, total, concurrency)
                    cpu = server_cpu(admin) - cpu
                    best[name, concurrency] = max(best[name, concurrency], rate)
                    stats = command_stats(admin)
                    done = total // concurrency * concurrency
                    client_cmds = sum(
                        int(v["calls"])
                        for cmd, v in stats.items()
                        if cmd not in SCRIPT_INTERNAL
                        and cmd not in ("info", "config|resetstat", "flushall")
                    )
                    per_decision[name] = client_cmds / done
                    if concurrency == 64:  # least-disturbed figure: the minimum over rounds
                        evalsha = stats.get("evalsha", {}).get("usec_per_call", float("nan"))
                        script_us[name] = min(script_us[name], float(evalsha))
                        cpu_us[name] = min(cpu_us[name], cpu * 1e6 / done)
    finally:
        await client.aclose()
        admin.close()
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"\nRedis decisions per second (redis-server {redis_version()}, loopback, best of {ROUNDS})\n"
    )
    print(
        "| contender | c=1 dec/s | c=64 dec/s | vs limits FixedWindow (c=1 / c=64) "
        "| client commands / decision | EVALSHA usec_per_call | redis-server CPU us / decision |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    ref = {c: best.get(("limits FixedWindow", c), 0.0) for c in DECISIONS}
    for name in contenders:
        one, many = best[name, 1], best[name, 64]
        ratio = f"{one / ref[1]:.2f}x / {many / ref[64]:.2f}x" if ref[1] and ref[64] else "n/a"
        print(
            f"| {name} | {one:,.0f} | {many:,.0f} | {ratio} | {per_decision[name]:.2f} "
            f"| {script_us[name]:.2f} | {cpu_us[name]:.1f} |"
        )
    ours = "tenantlb gcra"
    if ref[1] and ref[64]:
        for c in DECISIONS:
            ratio = best[ours, c] / ref[c]
            print(
                f"target: >= 1.2x limits FixedWindow at c={c}: {ratio:.2f}x -> {'met' if ratio >= 1.2 else 'NOT met'}"
            )
    trips = per_decision[ours]
    print(
        f"target: one round trip per decision: {trips:.2f} -> {'met' if abs(trips - 1) < 1e-9 else 'NOT met'}"
    )


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.split("v=")[1].split()[0] if "v=" in out.stdout else "?"


if __name__ == "__main__":
    asyncio.run(main())
