"""Redis-backed decisions per second: tenantlb RedisStore vs limits' async Redis strategies.

Starts its own redis-server and a 3-master Redis Cluster (from PATH) on free loopback ports, then
measures decisions per second at concurrency 1, 64 and 256 on each, with redis-py's asyncio
client for everyone (limits with ``implementation="redispy"``); 64 tenants, so that a cluster
spreads them over its masters. Contenders run interleaved, in chunks that alternate within each
round, so a burst of load from elsewhere hits all of them alike: each round gives a ratio to
limits' best strategy in that round,
and the table shows the median ratio over the rounds with its spread (min-max), and the median
decisions per second. The load average is printed: on a shared machine, compare ratios.

Reported per contender, at the highest concurrency (medians over the rounds): round trips per
decision (tenantlb: its own count of pipelines sent, `RedisStore.stats`; limits: client
commands, each its own round trip) and redis-server CPU per decision (``used_cpu_user +
used_cpu_sys`` of every node, from ``INFO cpu``, which also counts reading, parsing and writing
the commands); and, at c=1 and at the highest concurrency, the client's CPU per decision (this
process's CPU time, the kernel's share of its socket calls included).
Targets: >= 3x limits' fastest strategy at c=64 on one server, >= 1.0x at c=1.

    python benchmarks/ratelimit_redis.py [--quick]
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio
from _report import emit

import tenantlb as tlb

QUICK = "--quick" in sys.argv
ROUNDS = 3 if QUICK else 5
CHUNKS = 4  # per contender, round and concurrency, alternating with the other contenders
CONCURRENCY = (1, 64, 256)
DECISIONS = {
    1: 500 if QUICK else 2_000,
    64: 2_560 if QUICK else 12_800,
    256: 2_560 if QUICK else 12_800,
}
TENANTS = 64
BIG = 10**12
SCRIPT_INTERNAL = {"time", "get", "set", "incrby", "expire", "pexpire", "ttl", "pttl", "exists"}

Decide = Callable[[str], Awaitable[object]]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(n: int, bus: bool) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 45000)
        if port not in ports and _bindable(port) and (not bus or _bindable(port + 10000)):
            ports.append(port)
    return ports


def start_servers(cluster: bool) -> tuple[list[subprocess.Popen[bytes]], list[int], str]:
    """One redis-server, or three joined into a cluster with every slot assigned."""
    ports = _ports(3 if cluster else 1, cluster)
    workdir = tempfile.mkdtemp(prefix="tenantlb-bench-redis-")
    binary = shutil.which("redis-server") or "redis-server"
    procs = []
    for port in ports:
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        args += ["--dir", workdir, "--dbfilename", f"{port}.rdb", "--loglevel", "warning"]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"{workdir}/n{port}.conf"]
            args += ["--cluster-require-full-coverage", "no"]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for port in ports:
        client = redis.Redis(port=port)
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        client.close()
    if cluster:
        cli = shutil.which("redis-cli") or "redis-cli"
        nodes = [f"127.0.0.1:{p}" for p in ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-yes"], check=True, capture_output=True
        )
        for port in ports:
            client = redis.Redis(port=port)
            while client.cluster("info").get("cluster_state") != "ok":
                time.sleep(0.05)
            client.close()
    return procs, ports, workdir


ERRORS: dict[str, int] = {}


async def throughput(
    decide: Decide, total: int, concurrency: int, name: str = ""
) -> tuple[int, float]:
    """Run *total* decisions in *concurrency* tasks; return how many ran and the seconds taken."""
    per_worker = total // concurrency

    async def worker(i: int) -> None:
        for j in range(per_worker):
            try:
                await decide(f"tenant{(i + j) % TENANTS}")
            except Exception:  # redis-py's cluster client races on new connections (limits)
                ERRORS[name] = ERRORS.get(name, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return per_worker * concurrency, time.perf_counter() - start


def server_cpu(admins: list[redis.Redis]) -> float:
    return sum(
        float(a.info("cpu")["used_cpu_user"]) + float(a.info("cpu")["used_cpu_sys"]) for a in admins
    )


def client_commands(admins: list[redis.Redis]) -> int:
    total = 0
    for admin in admins:
        for cmd, v in admin.info("commandstats").items():
            name = cmd.removeprefix("cmdstat_")
            if name not in SCRIPT_INTERNAL and not name.startswith(
                ("info", "config", "flushall", "cluster")
            ):
                total += int(v["calls"])
    return total


async def measure(cluster: bool) -> dict[str, Any]:
    procs, ports, workdir = start_servers(cluster)
    admins = [redis.Redis(port=p) for p in ports]
    if cluster:
        client: Any = redis.asyncio.RedisCluster(host="127.0.0.1", port=ports[0])
    else:
        client = redis.asyncio.Redis(port=ports[0], max_connections=256)
    contenders: dict[str, Decide] = {}
    stores: dict[str, tlb.RedisStore] = {}
    try:
        for algorithm in ("gcra", "sliding_window", "fixed_window"):
            store = stores[f"tenantlb {algorithm}"] = tlb.RedisStore(client, timeout=30)
            limiter = tlb.RateLimiter(tlb.Rate(BIG, per=60), store=store, algorithm=algorithm)
            contenders[f"tenantlb {algorithm}"] = lambda key, limiter=limiter: limiter.acquire(key)
        import limits
        from limits.aio import strategies
        from limits.storage import storage_from_string

        scheme = "async+redis+cluster" if cluster else "async+redis"
        options: dict[str, Any] = {} if cluster else {"max_connections": 256}
        limits_store: Any = storage_from_string(
            f"{scheme}://127.0.0.1:{ports[0]}", implementation="redispy", **options
        )
        item = limits.RateLimitItemPerMinute(BIG)
        fixed = strategies.FixedWindowRateLimiter(limits_store)
        counter = strategies.SlidingWindowCounterRateLimiter(limits_store)
        moving = strategies.MovingWindowRateLimiter(limits_store)
        moving_item = limits.RateLimitItemPerMinute(1000)  # its sorted set grows per hit
        contenders["limits FixedWindow"] = lambda key: fixed.hit(item, key)
        contenders["limits SlidingWindowCounter"] = lambda key: counter.hit(item, key)
        contenders["limits MovingWindow (limit 1000)"] = lambda key: moving.hit(moving_item, key)

        for decide in contenders.values():  # warm up: connections, scripts loaded
            await throughput(decide, 256, 64)

        rates: dict[tuple[str, int], list[float]] = {
            (n, c): [] for n in contenders for c in CONCURRENCY
        }
        trips: dict[str, list[float]] = {name: [] for name in contenders}
        cpu_us: dict[str, list[float]] = {name: [] for name in contenders}
        client_us: dict[tuple[str, int], list[float]] = {
            (n, c): [] for n in contenders for c in (1, CONCURRENCY[-1])
        }
        order = list(contenders.items())
        for round_ in range(ROUNDS):
            for concurrency in CONCURRENCY:
                # Each contender's share of a round is cut into chunks that alternate with the
                # others', so a burst of load from elsewhere falls on all of them alike.
                chunk = DECISIONS[concurrency] // CHUNKS
                seconds = dict.fromkeys(contenders, 0.0)
                done = dict.fromkeys(contenders, 0)
                mine = dict.fromkeys(contenders, 0.0)
                cpu = dict.fromkeys(contenders, 0.0)
                used = dict.fromkeys(contenders, 0)
                for part in range(CHUNKS):
                    # Who goes first moves each time: no contender always follows the same one.
                    shift = (round_ + part) % len(order)
                    for name, decide in order[shift:] + order[:shift]:
                        for admin in admins:
                            admin.flushall()
                            admin.config_resetstat()
                        store = stores.get(name)
                        sent = store.stats().round_trips if store else 0
                        server = server_cpu(admins)
                        process = time.process_time()
                        n, elapsed = await throughput(decide, chunk, concurrency, name)
                        mine[name] += time.process_time() - process
                        cpu[name] += server_cpu(admins) - server
                        seconds[name] += elapsed
                        done[name] += n
                        used[name] += (
                            store.stats().round_trips - sent if store else client_commands(admins)
                        )
                for name in contenders:
                    rates[name, concurrency].append(done[name] / seconds[name])
                    if concurrency in (1, CONCURRENCY[-1]):
                        client_us[name, concurrency].append(mine[name] * 1e6 / done[name])
                    if concurrency == CONCURRENCY[-1]:
                        trips[name].append(used[name] / done[name])
                        cpu_us[name].append(cpu[name] * 1e6 / done[name])
    finally:
        await client.aclose()
        for admin in admins:
            admin.close()
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "rates": rates,
        "trips": {n: statistics.median(v) for n, v in trips.items()},
        "cpu": {n: statistics.median(v) for n, v in cpu_us.items()},
        "client": {k: statistics.median(v) for k, v in client_us.items()},
        "names": list(contenders),
    }


def report(title: str, result: dict[str, Any], targets: bool) -> None:
    rates, names = result["rates"], result["names"]
    limits_names = [n for n in names if n.startswith("limits")]
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{title} ({ROUNDS} interleaved rounds; {TENANTS} tenants; load average {load})\n")
    head = " | ".join(f"c={c} dec/s" for c in CONCURRENCY)
    cs = " / ".join(f"c={c}" for c in CONCURRENCY)
    print(
        f"| contender | {head} | vs best limits, median ({cs}) | spread (min-max) | "
        f"round trips / decision (c={CONCURRENCY[-1]}) | redis CPU us / decision | "
        f"client CPU us / decision (c=1 / c={CONCURRENCY[-1]}) |"
    )
    print("|---|" + "---:|" * (len(CONCURRENCY) + 5))
    # Per round, the best limits strategy at each concurrency is the reference.
    ref = {
        c: [max(rates[n, c][r] for n in limits_names) for r in range(ROUNDS)] for c in CONCURRENCY
    }
    where = "one server" if targets else "cluster"

    def ratios(name: str, c: int) -> list[float]:
        return [rates[name, c][r] / ref[c][r] for r in range(ROUNDS)]

    for name in names:
        dec = " | ".join(f"{statistics.median(rates[name, c]):,.0f}" for c in CONCURRENCY)
        vs = " / ".join(f"{statistics.median(ratios(name, c)):.2f}x" for c in CONCURRENCY)
        spread = " / ".join(
            f"{min(ratios(name, c)):.2f}-{max(ratios(name, c)):.2f}" for c in CONCURRENCY
        )
        print(
            f"| {name} | {dec} | {vs} | {spread} | {result['trips'][name]:.3f} | "
            f"{result['cpu'][name]:.1f} | {result['client'][name, 1]:.0f} / "
            f"{result['client'][name, CONCURRENCY[-1]]:.0f} |"
        )
        for c in CONCURRENCY:
            dec_s = statistics.median(rates[name, c])
            emit(f"{name} dec/s, {where}, c={c}", dec_s, "dec/s", better="higher")
        emit(
            f"{name} round trips per decision, {where}, c={CONCURRENCY[-1]}",
            result["trips"][name],
            "",
            better="lower",
        )
        emit(f"{name} redis CPU per decision, {where}", result["cpu"][name], "us", better="lower")
    for c in CONCURRENCY:  # the median over this run's interleaved rounds
        gcra = statistics.median(ratios("tenantlb gcra", c))
        emit(f"gcra / best limits, {where}, c={c}", gcra, "x", better="higher")
        fixed = statistics.median(
            [
                rates["tenantlb gcra", c][r] / rates["limits FixedWindow", c][r]
                for r in range(ROUNDS)
            ]
        )
        emit(f"gcra / limits FixedWindow, {where}, c={c}", fixed, "x", better="higher")
    for name in names:
        if ERRORS.get(name):
            print(f"{name}: {ERRORS[name]} decisions raised (redis-py cluster client errors)")
    ERRORS.clear()
    if targets:
        for c, target in ((1, 1.0), (64, 3.0)):
            got = ratios("tenantlb gcra", c)
            ratio = statistics.median(got)
            verdict = "met" if ratio >= target else "NOT met"
            print(
                f"target: tenantlb gcra >= {target}x the best limits strategy at c={c}: "
                f"median {ratio:.2f}x (rounds {min(got):.2f}-{max(got):.2f}) -> {verdict}"
            )


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.split("v=")[1].split()[0] if "v=" in out.stdout else "?"


async def main() -> None:
    server = await measure(cluster=False)
    report(f"One redis-server {redis_version()}, loopback", server, targets=True)
    cluster = await measure(cluster=True)
    report("Redis Cluster, 3 masters on loopback", cluster, targets=False)


if __name__ == "__main__":
    asyncio.run(main())
