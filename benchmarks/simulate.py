"""Balancing simulation: every strategy against an oracle, on a virtual clock, in seconds.

A seeded discrete-event simulation that drives the real `tenantlb.Pool` and balancer objects
(see ``_simkit.py``) through four scenarios:

1. Linkerd's "Beyond Round Robin": 11 backends, median 167 ms, one at 2 s for 30 of 60 s,
   1,000 requests/s, 1 s timeout.
2. Hard cases: a backend failing fast (instant 503s), heterogeneous capacity (weights 1..10),
   bursty arrivals, a cold backend joining (with and without slow start), membership churn.
3. Many clients (10-50), each with its own pool and no shared knowledge, in front of servers
   with finite concurrency that queue, one of them degraded: herding and the tail it causes.
4. Consistent hashing: balance (max / mean) and keys moved under churn, against the theory.

It prints markdown tables, and writes them with PNG plots to ``benchmarks/results/`` (and the
plots to ``docs/img/simulation/`` for the docs). Run: ``python benchmarks/simulate.py``
(``--quick`` for a smaller run, ``--no-plots`` to skip matplotlib).
"""

from __future__ import annotations

import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _hashsim import hashing_tables
from _report import emit
from _simkit import (
    Client,
    DelayServer,
    KnownMeans,
    Loop,
    Oracle,
    Poisson,
    QueueServer,
    Server,
    Stats,
    lognormal,
    lognormal_mean,
)

import tenantlb as tlb
from tenantlb.balancing import Balancer

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DOCS_IMG = ROOT.parent / "docs" / "img" / "simulation"
SEED = 20161

Factory = Callable[[int, dict[str, Server]], Balancer]
STRATEGIES: dict[str, Factory] = {
    "RoundRobin": lambda seed, _: tlb.RoundRobin(),
    "WeightedRandom": lambda seed, _: tlb.WeightedRandom(seed=seed),
    "LeastRequest": lambda seed, _: tlb.LeastRequest(seed=seed),
    "PeakEWMA": lambda seed, _: tlb.PeakEWMA(seed=seed),
    "RingHash": lambda seed, _: tlb.RingHash(seed=seed),
    "Maglev": lambda seed, _: tlb.Maglev(seed=seed),
    "Rendezvous": lambda seed, _: tlb.Rendezvous(seed=seed),
    "BoundedLoad": lambda seed, _: tlb.BoundedLoad(tlb.Maglev(seed=seed)),
    "Oracle (JSED)": lambda seed, servers: Oracle(servers, seed),
    "P2C on true means": lambda seed, servers: KnownMeans(servers, seed),
    "Best of 3 on true means": lambda seed, servers: KnownMeans(servers, seed, choices=3),
}
KEYED = {"RingHash", "Maglev", "Rendezvous", "BoundedLoad"}
ORACLE = "Oracle (JSED)"
REF = "P2C on true means"
REFS = [REF, "Best of 3 on true means"]
LATENCY_AWARE = ["RoundRobin", "WeightedRandom", "LeastRequest", "PeakEWMA", "BoundedLoad", ORACLE]
# The pool's default since issue 12: an OutlierDetector with Envoy's defaults.
DEFAULT_POOL: dict[str, Any] = {"outlier_detector": "default"}
DETECTED = ["RoundRobin", "LeastRequest", "PeakEWMA"]
USER_KEYS = [b"user-%d" % i for i in range(10_000)]


def run(
    name: str,
    make_servers: Callable[[Loop], dict[str, Server]],
    *,
    rate: float,
    duration: float,
    clients: int = 1,
    timeout: float = 1.0,
    batch: float = 1.0,
    weights: dict[str, float] | None = None,
    pool_kwargs: dict[str, Any] | None = None,
    script: Callable[[Loop, list[tlb.Pool], dict[str, Server]], None] | None = None,
    since: float = 0.0,
    seed: int = SEED,
) -> Stats:
    """One strategy through one scenario: *clients* pools (one for the oracle), Poisson arrivals."""
    loop = Loop()
    servers = make_servers(loop)
    weights = weights or {}
    endpoints = [tlb.Endpoint(url, weight=weights.get(url, 1.0)) for url in servers]
    stats = Stats(since=since)
    factory = STRATEGIES[name]
    shared = name == ORACLE  # perfect knowledge is global: one dispatcher for every client
    pools: list[tlb.Pool] = []
    for c in range(clients):
        if not pools or not shared:
            balancer = factory(seed * 1000 + c, servers)
            # Balancers alone unless a caller asks for the pool's default outlier detection.
            kwargs: dict[str, Any] = {"outlier_detector": None, **(pool_kwargs or {})}
            pools.append(tlb.Pool(endpoints, balancer, clock=loop.clock, **kwargs))
        client = Client(
            loop,
            pools[-1],
            servers,
            stats,
            timeout=timeout,
            keys=USER_KEYS if name in KEYED else None,
            seed=seed + c,
        )
        Poisson(loop, client, rate / clients, stop=duration, batch=batch, seed=seed * 7 + c)
    if script is not None:
        script(loop, pools, servers)
    loop.run(duration)
    loop.drain()
    assert all(p.stats().in_flight == 0 for p in pools), "a lease was not released"
    return stats


def urls(n: int, net: int = 1) -> list[str]:
    return [f"http://10.{net}.0.{i}:8080" for i in range(1, n + 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


# -- scenario 1 ---------------------------------------------------------------------------------

S1_FAST = (0.167, 0.4)  # log-normal: median 167 ms, sigma 0.4 (p99.9 ~ 0.57 s)
S1_SLOW = (15.0, 45.0)  # the slow backend answers in 2 s from t=15 s to t=45 s


def s1_servers(loop: Loop) -> dict[str, Server]:
    fast = lognormal(*S1_FAST)
    fast_mean = lognormal_mean(*S1_FAST)
    slow = lognormal(2.0, 0.05)
    start, stop = S1_SLOW

    def slow_backend(now: float, rng: random.Random) -> tuple[float, int]:
        return (slow(rng) if start <= now < stop else fast(rng)), 200

    def slow_mean(now: float) -> float:
        return 2.0 if start <= now < stop else fast_mean

    servers: dict[str, Server] = {}
    for i, url in enumerate(urls(11)):
        if i == 0:
            servers[url] = DelayServer(loop, url, slow_backend, slow_mean, SEED + i)
        else:
            servers[url] = DelayServer(
                loop, url, lambda now, rng: (fast(rng), 200), lambda now: fast_mean, SEED + i
            )
    return servers


def scenario_1(quick: bool) -> tuple[str, dict[str, Stats]]:
    rate = 300.0 if quick else 1000.0
    results = {
        name: run(name, s1_servers, rate=rate, duration=60.0)
        for name in STRATEGIES
        if name not in REFS
    }
    for name in DETECTED:
        results[f"{name} + outlier detection"] = run(
            name, s1_servers, rate=rate, duration=60.0, pool_kwargs=DEFAULT_POOL
        )
    slow_url = urls(11)[0]
    published = {"RoundRobin": "~95%", "LeastRequest": "~99%", "PeakEWMA": "~99.9%"}
    lines = [
        "| strategy | success (1 s timeout) | published | p50 ms | p99 ms | p99.9 ms |"
        " slow backend's share while slow | share overall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    start, stop = S1_SLOW
    for name, st in results.items():
        while_slow = sum(st.timeline[slow_url, t] for t in range(int(start), int(stop)))
        total_while = sum(n for (u, t), n in st.timeline.items() if start <= t < stop)
        lines.append(
            f"| {name} | {st.success():.2%} | {published.get(name, '')} | {ms(st.quantile(0.5))} |"
            f" {ms(st.quantile(0.99))} | {ms(st.quantile(0.999))} |"
            f" {while_slow / total_while:.2%} | {st.share(slow_url):.2%} |"
        )
    return "\n".join(lines), results


# -- scenario 2 ---------------------------------------------------------------------------------


def queue_servers(
    n: int,
    *,
    workers: Callable[[int], int] = lambda i: 4,
    mean: float = 0.05,
    net: int = 2,
    special: dict[int, tuple[Callable[[float, random.Random], tuple[float, int]], float]]
    | None = None,
) -> Callable[[Loop], dict[str, Server]]:
    """Factory of *n* queueing servers with exponential service times (mean *mean*)."""

    def make(loop: Loop) -> dict[str, Server]:
        servers: dict[str, Server] = {}
        for i, url in enumerate(urls(n, net)):
            behaviour: Callable[[float, random.Random], tuple[float, int]]
            true_mean = mean
            if special and i in special:
                behaviour, true_mean = special[i]
            else:
                behaviour = lambda now, rng: (rng.expovariate(1.0 / mean), 200)  # noqa: E731
            servers[url] = QueueServer(
                loop, url, workers(i), behaviour, lambda now, m=true_mean: m, SEED + i
            )
        return servers

    return make


def result_row(name: str, st: Stats, extra: str = "") -> str:
    return (
        f"| {name} | {st.success():.2%} | {ms(st.quantile(0.5))} | {ms(st.quantile(0.99))} |"
        f" {ms(st.quantile(0.999))} |{extra}"
    )


HEAD = "| strategy | success | p50 ms | p99 ms | p99.9 ms |"


def scenario_2(quick: bool) -> tuple[str, dict[str, Any]]:
    duration = 20.0 if quick else 40.0
    sections: list[str] = []
    data: dict[str, Any] = {}

    # 2a. A backend that fails fast: instant 503s from one of ten.
    def fail_fast(now: float, rng: random.Random) -> tuple[float, int]:
        return 0.001, 503

    servers = queue_servers(10, special={0: (fail_fast, math.inf)}, net=21)
    bad = urls(10, 21)[0]
    lines = [
        "**2a. One of ten backends answers 503 in 1 ms** (queueing servers, 4 workers, "
        "50 ms mean service, 60% load):",
        "",
        HEAD + " failing backend's share |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = {}
    for name in LATENCY_AWARE:
        st = run(name, servers, rate=0.6 * 9 * 80, duration=duration)
        rows[name] = st
        lines.append(result_row(name, st, f" {st.share(bad):.2%} |"))
    for name in DETECTED:
        st = run(name, servers, rate=0.6 * 9 * 80, duration=duration, pool_kwargs=DEFAULT_POOL)
        label = f"{name} + outlier detection"
        rows[label] = st
        lines.append(result_row(label, st, f" {st.share(bad):.2%} |"))
    sections.append("\n".join(lines))
    data["fail_fast"] = rows

    # 2b. Heterogeneous capacity: weights 1..10 = workers 1..10, endpoints weighted alike.
    weights = {url: float(i + 1) for i, url in enumerate(urls(10, 22))}
    servers = queue_servers(10, workers=lambda i: i + 1, net=22)
    capacity = sum(weights.values()) / 0.05
    lines = [
        "**2b. Heterogeneous capacity**: server *i* has *i* workers (1..10) and endpoint weight *i*; "
        "70% load:",
        "",
        HEAD + " share of the weight-1 server (fair 1.8%) | share of the weight-10 (fair 18.2%) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = {}
    small, big = urls(10, 22)[0], urls(10, 22)[-1]
    for name in LATENCY_AWARE:
        st = run(name, servers, rate=0.7 * capacity, duration=duration, weights=weights)
        rows[name] = st
        lines.append(result_row(name, st, f" {st.share(small):.2%} | {st.share(big):.2%} |"))
    sections.append("\n".join(lines))
    data["weights"] = rows

    # 2c. Bursty arrivals: batches of 10 on average, 60% load on average.
    servers = queue_servers(10, net=23)
    lines = [
        "**2c. Bursty arrivals**: requests come in batches (geometric, mean 10), 60% load "
        "on average, 10 servers of 4 workers:",
        "",
        HEAD,
        "|---|---:|---:|---:|---:|",
    ]
    rows = {}
    for name in LATENCY_AWARE:
        st = run(name, servers, rate=0.6 * 800, duration=duration, batch=10.0)
        rows[name] = st
        lines.append(result_row(name, st))
    sections.append("\n".join(lines))
    data["bursty"] = rows

    # 2d. A cold backend joins at t=10 s: 10x slower at first, warm after 20 s.
    cold_url = "http://10.24.1.1:8080"
    join = 10.0

    def with_cold(loop: Loop) -> dict[str, Server]:
        servers = queue_servers(10, net=24)(loop)

        def warming(now: float) -> float:
            return 0.05 * (1.0 + 9.0 * max(0.0, 1.0 - (now - join) / 20.0))

        servers[cold_url] = QueueServer(
            loop, cold_url, 4, lambda now, rng: (rng.expovariate(1.0 / warming(now)), 200),
            warming, SEED + 99,
        )  # fmt: skip
        return servers

    lines = [
        "**2d. A cold backend joins at t = 10 s** (10x slower at first, warm after 20 s; 11 "
        "servers of 4 workers, 65% load): requests from t = 10 s to t = 30 s, without and "
        "with `SlowStart(window=20)`:",
        "",
        "| strategy | slow start | success | p50 ms | p99 ms | p99.9 ms | cold backend's share, "
        "t = 10-15 s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    rows = {}
    for name in LATENCY_AWARE:
        for ramp in (None, tlb.SlowStart(window=20.0)):
            st = run(
                name,
                with_cold,
                rate=0.65 * 800,
                duration=30.0,
                pool_kwargs={"slow_start": ramp},
                script=_add_later(cold_url, join),
                since=join,
            )
            rows[name, ramp is not None] = st
            early = sum(st.timeline[cold_url, t] for t in range(10, 15))
            total = sum(n for (u, t), n in st.timeline.items() if 10 <= t < 15)
            lines.append(
                f"| {name} | {'yes' if ramp else 'no'} | {st.success():.2%} |"
                f" {ms(st.quantile(0.5))} | {ms(st.quantile(0.99))} | {ms(st.quantile(0.999))} |"
                f" {early / total:.1%} |"
            )
    sections.append("\n".join(lines))
    data["cold"] = rows

    # 2e. Membership churn: a rolling deploy replaces one backend every 2 s.
    lines = [
        "**2e. Membership churn**: a rolling deploy replaces one of 10 backends every 2 s (the "
        "old one drains its queue; the new one starts cold, 3x slower for 5 s); 60% load:",
        "",
        HEAD,
        "|---|---:|---:|---:|---:|",
    ]
    rows = {}
    for name in LATENCY_AWARE:
        st = run(
            name,
            queue_servers(10, net=25),
            rate=0.6 * 800,
            duration=duration,
            script=_rolling_deploy(every=2.0),
        )
        rows[name] = st
        lines.append(result_row(name, st))
    sections.append("\n".join(lines))
    data["churn"] = rows
    return "\n\n".join(sections), data


def _add_later(url: str, at: float) -> Callable[[Loop, list[tlb.Pool], dict[str, Server]], None]:
    def script(loop: Loop, pools: list[tlb.Pool], servers: dict[str, Server]) -> None:
        for pool in pools:
            pool.remove(url)

        def add(_: object) -> None:
            for pool in pools:
                pool.add(url)

        loop.at(at, add)

    return script


def _rolling_deploy(every: float) -> Callable[[Loop, list[tlb.Pool], dict[str, Server]], None]:
    def script(loop: Loop, pools: list[tlb.Pool], servers: dict[str, Server]) -> None:
        live = list(servers)
        generation = [0]

        def replace(_: object) -> None:
            now = loop.clock()
            generation[0] += 1
            old = live.pop(0)
            new = f"http://10.26.{generation[0] // 250}.{generation[0] % 250}:8080"
            born = now

            def mean(t: float, born: float = born) -> float:
                return 0.05 * (3.0 if t - born < 5.0 else 1.0)

            servers[new] = QueueServer(
                loop, new, 4, lambda t, rng: (rng.expovariate(1.0 / mean(t)), 200), mean,
                SEED + 1000 + generation[0],
            )  # fmt: skip
            live.append(new)
            for pool in pools:
                pool.remove(old)
                pool.add(new)
            if not loop.closing:
                loop.at(now + every, replace)

        loop.at(every, replace)

    return script


# -- scenario 3 ---------------------------------------------------------------------------------

S3_MEAN, S3_SLOW, S3_WORKERS, S3_N, S3_LOAD = 0.05, 0.25, 4, 10, 0.7
S3_SPREAD = ["LeastRequest", "PeakEWMA"]  # rows repeated over three seeds
# The default balancer's row, and the figure the report checks, over more seeds: one seed's p99
# ratio moves by about +-0.01 with the arrivals' draws, as much as a change to the balancer may.
S3_DEFAULT, S3_SEEDS = "PeakEWMA", 18
S3_TARGET = 1.1  # issue 12: the default balancer's p99 within 1.1x the oracle's
S3_WARM = 10.0  # the steady-state column leaves out requests sent before (every client starts cold)


def s3_servers(loop: Loop) -> dict[str, Server]:
    def degraded(now: float, rng: random.Random) -> tuple[float, int]:
        return rng.expovariate(1.0 / S3_SLOW), 200

    return queue_servers(S3_N, mean=S3_MEAN, net=3, special={0: (degraded, S3_SLOW)})(loop)


def s3_rate() -> float:
    capacity = (S3_N - 1) * S3_WORKERS / S3_MEAN + S3_WORKERS / S3_SLOW
    return S3_LOAD * capacity


def scenario_3(
    quick: bool,
) -> tuple[str, dict[tuple[str, int], Stats], dict[int, list[float]]]:
    fleet = (10, 50) if quick else (10, 25, 50)
    duration = 30.0 if quick else 60.0
    results: dict[tuple[str, int], Stats] = {}
    for clients in fleet:
        for name in [*LATENCY_AWARE, *REFS]:
            results[name, clients] = run(
                name, s3_servers, rate=s3_rate(), duration=duration, clients=clients
            )
    degraded = urls(S3_N, 3)[0]
    warm = S3_WARM
    lines = [
        "| strategy | clients | success | p50 ms | p99 ms | p99.9 ms | p99 / oracle's |"
        f" p99 / oracle's, sent at t >= {warm:g} s | degraded server's share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for clients in fleet:
        oracle = results[ORACLE, clients]
        for name in [*LATENCY_AWARE, *REFS]:
            st = results[name, clients]
            lines.append(
                f"| {name} | {clients} | {st.success():.2%} | {ms(st.quantile(0.5))} |"
                f" {ms(st.quantile(0.99))} | {ms(st.quantile(0.999))} |"
                f" {st.quantile(0.99) / oracle.quantile(0.99):.2f}x |"
                f" {st.quantile(0.99, after=warm) / oracle.quantile(0.99, after=warm):.2f}x |"
                f" {st.share(degraded):.1%} |"
            )
    if quick:
        return "\n".join(lines), results, {}
    # The same ratios over three seeds (arrivals and picks; the servers' draws are fixed), to
    # show how much of a difference between rows is noise; the default balancer over more.
    seeds = (SEED, SEED + 1, SEED + 2)
    wide = tuple(range(SEED, SEED + S3_SEEDS))
    spread = [*S3_SPREAD, *REFS]
    lines += [
        "",
        f"Over seeds {seeds[0]}-{seeds[-1]} ({S3_DEFAULT}: {wide[0]}-{wide[-1]}), p99 / oracle's"
        f" (mean, min-max), whole run and sent at t >= {warm:g} s:",
        "",
        "| strategy | " + " | ".join(f"{c} clients | t >= {warm:g} s" for c in fleet) + " |",
        "|---|" + "---:|---:|" * len(fleet),
    ]
    ratios: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for clients in fleet:
        for seed in wide:
            stats = {
                name: results[name, clients]
                if seed == SEED
                else run(
                    name, s3_servers, rate=s3_rate(), duration=duration, clients=clients, seed=seed
                )
                for name in [ORACLE, *(spread if seed in seeds else [S3_DEFAULT])]
            }
            oracle = stats[ORACLE]
            for name in stats.keys() - {ORACLE}:
                ratios.setdefault((name, clients), []).append(
                    (
                        stats[name].quantile(0.99) / oracle.quantile(0.99),
                        stats[name].quantile(0.99, after=warm) / oracle.quantile(0.99, after=warm),
                    )
                )
    for name in spread:
        cells = []
        for clients in fleet:
            for part in (0, 1):
                values = [r[part] for r in ratios[name, clients]]
                cells.append(
                    f"{sum(values) / len(values):.2f}x ({min(values):.2f}-{max(values):.2f})"
                )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    default = {clients: [r[0] for r in ratios[S3_DEFAULT, clients]] for clients in fleet}
    over = " / ".join(f"{sum(r > S3_TARGET for r in default[c])}" for c in fleet)
    lines += [
        "",
        f"{S3_DEFAULT}'s seeds over the target ({S3_TARGET:g}x the oracle's p99, whole run),"
        f" {' / '.join(str(c) for c in fleet)} clients: {over} of {S3_SEEDS}.",
    ]
    return "\n".join(lines), results, default


# -- report ---------------------------------------------------------------------------------------


def plots(s1: dict[str, Stats], s2: dict[str, Any], s3: dict[tuple[str, int], Stats],
          s4: dict[str, Any]) -> list[str]:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    DOCS_IMG.mkdir(parents=True, exist_ok=True)

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        for folder in (RESULTS, DOCS_IMG):
            fig.savefig(folder / name, dpi=110, metadata={"Software": None})
        plt.close(fig)
        written.append(name)

    # 1: success and latency CDF.
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(s1)
    left.barh(names, [100 * s1[n].success() for n in names], color="#4c72b0")
    published = {"RoundRobin": 95, "LeastRequest": 99, "PeakEWMA": 99.9}
    for y, n in enumerate(names):
        pub = published.get(n)
        if pub:
            left.plot([pub], [y], "k|", markersize=14)
    left.set_xlim(90, 100)
    left.set_xlabel("success within 1 s (%)  | = Linkerd's published figure")
    left.invert_yaxis()
    for n in ["RoundRobin", "LeastRequest", "PeakEWMA", "BoundedLoad", ORACLE]:
        data = sorted(s1[n].latencies)
        ys = [1 - (i + 0.5) / len(data) for i in range(len(data))]
        right.plot(data, ys, label=n)
    right.set_yscale("log")
    right.set_ylim(1e-4, 1)
    right.set_xlabel("latency (s), timeouts at 1 s")
    right.set_ylabel("fraction of requests slower")
    right.legend(fontsize=8)
    fig.suptitle("Scenario 1: 11 backends, one at 2 s for 30 of 60 s, 1,000 req/s")
    save(fig, "scenario1.png")

    # 2d: the cold backend's share over time.
    fig, ax = plt.subplots(figsize=(8, 3.8))
    cold = "http://10.24.1.1:8080"
    for (n, ramp), st in s2["cold"].items():
        if n not in ("RoundRobin", "LeastRequest", "PeakEWMA"):
            continue
        ts = list(range(10, 30))
        totals = [sum(v for (u, t), v in st.timeline.items() if t == s) for s in ts]
        share = [
            100 * st.timeline[cold, s] / max(1, tot) for s, tot in zip(ts, totals, strict=True)
        ]
        ax.plot(ts, share, ("-" if ramp else "--"), label=f"{n}{' + slow start' if ramp else ''}")
    ax.axhline(100 / 11, color="grey", lw=0.8)
    ax.set_xlabel("t (s); the cold backend joins at 10 s, warm at 30 s")
    ax.set_ylabel("its share of requests (%)")
    ax.legend(fontsize=8)
    save(fig, "scenario2_cold.png")

    # 3: p99 against the oracle, by fleet size.
    fig, ax = plt.subplots(figsize=(8, 3.8))
    fleet = sorted({c for _, c in s3})
    for n in LATENCY_AWARE:
        ax.plot(fleet, [1000 * s3[n, c].quantile(0.99) for c in fleet], "o-", label=n)
    ax.set_xlabel("clients, each with its own pool")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Scenario 3: 10 queueing servers (one 5x slower), 70% load")
    save(fig, "scenario3.png")

    # 4: keys moved vs theory.
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    churn = s4["churn"]
    labels = [f"{name}\nN={n}" for name, n in churn]
    left.bar(labels, [100 * v["moved"] for v in churn.values()], color="#4c72b0")
    left.plot(labels, [100 / n for _, n in churn], "k_", markersize=20, label="1/N")
    left.set_ylabel("keys moved, one endpoint removed (%)")
    left.set_yscale("log")
    left.legend()
    left.tick_params(axis="x", labelsize=7)
    right.bar(labels, [v["balance"] for v in churn.values()], color="#dd8452")
    right.set_ylabel("max / mean keys per endpoint")
    right.set_ylim(0.9, max(v["balance"] for v in churn.values()) * 1.05)
    right.tick_params(axis="x", labelsize=7)
    save(fig, "scenario4.png")
    return written


def main() -> None:
    quick = "--quick" in sys.argv
    began = time.process_time()
    sections: list[tuple[str, str]] = []
    t = time.process_time()
    s1_text, s1 = scenario_1(quick)
    sections.append(('1. Linkerd\'s "Beyond Round Robin"', s1_text))
    print(f"scenario 1: {time.process_time() - t:.1f} s CPU", file=sys.stderr)
    t = time.process_time()
    s2_text, s2 = scenario_2(quick)
    sections.append(("2. Failing, uneven, bursty, cold and churning backends", s2_text))
    print(f"scenario 2: {time.process_time() - t:.1f} s CPU", file=sys.stderr)
    t = time.process_time()
    s3_text, s3, s3_seeds = scenario_3(quick)
    sections.append(("3. Many clients, no shared knowledge: herding", s3_text))
    print(f"scenario 3: {time.process_time() - t:.1f} s CPU", file=sys.stderr)
    t = time.process_time()
    s4_text, s4 = hashing_tables(quick)
    sections.append(("4. Consistent hashing", s4_text))
    print(f"scenario 4: {time.process_time() - t:.1f} s CPU", file=sys.stderr)
    spent = time.process_time() - began
    for name, st in s1.items():
        emit(f"scenario 1: {name}, success at 1 s", st.success() * 100, "%", better="higher")
    for (name, clients), st in s3.items():
        if name == ORACLE:
            continue
        ratio = st.quantile(0.99) / s3[ORACLE, clients].quantile(0.99)
        note = ""
        if name == S3_DEFAULT and clients in s3_seeds:
            # The median over the seeds, not one seed's draw (see scenario_3).
            values = sorted(s3_seeds[clients])
            ratio = statistics.median(values)
            over = sum(v > S3_TARGET for v in values)
            note = (
                f"median of {len(values)} seeds ({values[0]:.3f}-{values[-1]:.3f});"
                f" {over} over {S3_TARGET:g}x"
            )
        emit(
            f"scenario 3: {name} p99 / oracle, {clients} clients",
            ratio,
            "x",
            better="lower",
            note=note,
        )
    for (name, n), row in s4["churn"].items():
        emit(f"scenario 4: {name}, remove 1 of {n}: keys moved", row["moved"] * 100, "%")
    header = (
        f"Generated by `python benchmarks/simulate.py`{' --quick' if quick else ''} (seed {SEED}, "
        f"tenantlb {tlb.__version__}, Python {platform.python_version()}); "
        f"{spent:.0f} s of CPU for every scenario."
    )
    text = header + "\n\n" + "\n\n".join(f"### {title}\n\n{body}" for title, body in sections)
    print(text)
    if quick:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "simulation.md").write_text(text + "\n")
    if "--no-plots" not in sys.argv:
        for name in plots(s1, s2, s3, s4):
            print(f"wrote benchmarks/results/{name}", file=sys.stderr)


if __name__ == "__main__":
    main()
