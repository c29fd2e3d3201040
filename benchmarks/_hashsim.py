"""Scenario 4 of ``simulate.py``: consistent hashing against the theory.

Static balance and churn use the real balancers inside real pools (``pool.balancer.pick(key)``,
the call ``pool.acquire(key=...)`` makes); bounded loads run requests through ``pool.acquire``
on the simulation loop, with key popularity skewed (Zipf) so that some homes are hot.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections import Counter
from typing import Any

from _simkit import Loop

import tenantlb as tlb
from tenantlb.balancing import Balancer

HASHERS = {
    "RingHash": lambda: tlb.RingHash(seed=1),
    "Maglev": lambda: tlb.Maglev(seed=1),
    "Rendezvous": lambda: tlb.Rendezvous(cache_size=0, seed=1),
}


def _urls(n: int, net: int = 40) -> list[str]:
    return [f"http://10.{net}.{i // 250}.{i % 250}:8080" for i in range(n)]


def _mapping(balancer: Balancer, keys: list[bytes]) -> list[str]:
    pick = balancer.pick
    return [pick(k).url for k in keys]  # type: ignore[union-attr]


def _ideal_max_over_mean(keys: int, n: int, seed: int = 7) -> float:
    # What a perfect uniform hash gives for this many keys: the sampling noise floor.
    rng = random.Random(seed)
    worst = []
    for _ in range(5):
        counts = Counter(int(rng.random() * n) for _ in range(keys))
        worst.append(max(counts.values()) / (keys / n))
    return sum(worst) / len(worst)


def churn_table(sizes: tuple[int, ...], n_keys: int) -> tuple[str, dict[str, Any]]:
    keys = [b"key-%d" % i for i in range(n_keys)]
    lines = [
        "| strategy | endpoints | max / mean keys | ideal hash (noise floor) |"
        " remove 1: keys moved | theory 1/N | moved between survivors |"
        " add 1: keys moved | theory 1/(N+1) | moved not to the new one |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    data: dict[str, Any] = {}
    for n in sizes:
        urls = _urls(n)
        floor = _ideal_max_over_mean(n_keys, n)
        for name, make in HASHERS.items():
            pool = tlb.Pool(urls, make())
            before = _mapping(pool.balancer, keys)
            counts = Counter(before)
            balance = max(counts.values()) / (n_keys / n)
            gone = urls[n // 2]
            pool.remove(gone)
            after = _mapping(pool.balancer, keys)
            moved = sum(a != b for a, b in zip(before, after, strict=True)) / n_keys
            between = sum(a != b and a != gone for a, b in zip(before, after, strict=True)) / n_keys
            pool.add(gone)  # back to n, then one more
            base = _mapping(pool.balancer, keys)
            new = _urls(1, net=41)[0]
            pool.add(new)
            grown = _mapping(pool.balancer, keys)
            added = sum(a != b for a, b in zip(base, grown, strict=True)) / n_keys
            stray = sum(a != b and b != new for a, b in zip(base, grown, strict=True)) / n_keys
            data[name, n] = {"balance": balance, "moved": moved, "added": added}
            lines.append(
                f"| {name} | {n} | {balance:.3f} | {floor:.3f} | {moved:.2%} | {1 / n:.2%} |"
                f" {between:.2%} | {added:.2%} | {1 / (n + 1):.2%} | {stray:.2%} |"
            )
    return "\n".join(lines), data


def bounded_table(quick: bool) -> tuple[str, dict[str, Any]]:
    """Hot keys under load: max in-flight against ceil(c * mean), BoundedLoad vs its inner."""
    n, factor = 10, 1.25
    duration = 20.0 if quick else 60.0
    rate, hold = 500.0, 0.2  # 100 requests in flight on average, 10 per endpoint
    # Zipf(1.1) popularity over 1,000 keys: the top key alone is ~17% of requests.
    weights = [1.0 / (k**1.1) for k in range(1, 1001)]
    cumulative = list(itertools.accumulate(weights))
    keys = [b"hot-%d" % k for k in range(1000)]
    lines = [
        "| strategy | endpoint weights | worst in-flight / mean (20+ in flight) |"
        " worst in-flight / its bound |"
        " picks above the bound | requests on their key's home |",
        "|---|---|---:|---:|---:|---:|",
    ]
    data: dict[str, Any] = {}
    cases: list[tuple[str, str, list[float]]] = [
        ("Maglev", "equal", [1.0] * n),
        ("BoundedLoad(Maglev, 1.25)", "equal", [1.0] * n),
        ("RingHash", "equal", [1.0] * n),
        ("BoundedLoad(RingHash, 1.25)", "equal", [1.0] * n),
        ("BoundedLoad(Maglev, 1.25)", "1..10", [float(i + 1) for i in range(n)]),
    ]
    for name, label, ws in cases:
        loop = Loop()
        rng = random.Random(11)
        inner: tlb.Maglev | tlb.RingHash = (
            tlb.RingHash(seed=1) if "RingHash" in name else tlb.Maglev(seed=1)
        )
        balancer: Balancer = tlb.BoundedLoad(inner, factor) if "Bounded" in name else inner
        urls = _urls(n, net=42)
        pool = tlb.Pool(
            [tlb.Endpoint(u, weight=w) for u, w in zip(urls, ws, strict=True)],
            balancer,
            clock=loop.clock,
        )
        home = inner if "Bounded" in name else None
        total_weight = sum(ws)
        weight_of = dict(zip(urls, ws, strict=True))
        held: dict[str, int] = dict.fromkeys(urls, 0)
        worst_mean = worst_bound = 0.0
        above = at_home = requests = 0

        def release(lease: tlb.Lease, held: dict[str, int] = held) -> None:
            held[lease.url] -= 1
            lease.record(status=200)

        def arrive(
            _: object,
            loop: Loop = loop,
            rng: random.Random = rng,
            pool: tlb.Pool = pool,
            home: Any = home,
            held: dict[str, int] = held,
            weight_of: dict[str, float] = weight_of,
            total_weight: float = total_weight,
        ) -> None:
            nonlocal worst_mean, worst_bound, above, at_home, requests
            now = loop.clock()
            key = keys[bisect.bisect_left(cumulative, rng.random() * cumulative[-1])]
            if home is not None:
                # The key's home, before the pick (what the inner hash alone would choose).
                home_url = home.pick(key).url
            lease = pool.acquire(key)
            held[lease.url] += 1
            requests += 1
            if home is None or lease.url == home_url:
                at_home += 1
            total = sum(held.values())
            mine = held[lease.url]
            if total >= 2 * n:  # below that, one request is already "twice the mean"
                worst_mean = max(worst_mean, mine / (total / n))
            bound = max(1, math.ceil(factor * total * weight_of[lease.url] / total_weight - 1e-9))
            worst_bound = max(worst_bound, mine / bound)
            above += mine > bound
            loop.at(now + rng.expovariate(1.0 / hold), release, lease)
            if now < duration:
                loop.at(now + rng.expovariate(rate), arrive)

        loop.at(0.0, arrive)
        loop.drain()
        assert pool.stats().in_flight == 0
        data[name, label] = {"worst_mean": worst_mean, "worst_bound": worst_bound}
        lines.append(
            f"| {name} | {label} | {worst_mean:.2f} | {worst_bound:.2f} | {above:,} |"
            f" {at_home / requests:.1%} |"
        )
    return "\n".join(lines), data


def hashing_tables(quick: bool) -> tuple[str, dict[str, Any]]:
    sizes = (10, 100)
    n_keys = 20_000 if quick else 100_000
    churn, churn_data = churn_table(sizes, n_keys)
    bounded, bounded_data = bounded_table(quick)
    text = (
        f"**4a. Balance and churn**, {n_keys:,} keys. *max / mean* is the most keys any endpoint "
        "holds over the mean; the noise floor is what an ideal uniform hash gives for this many "
        "keys. Removing one endpoint should move only its keys (1/N) and none between survivors; "
        "adding one should move 1/(N+1), all of it to the newcomer.\n\n"
        + churn
        + "\n\n**4b. Bounded loads**: 10 endpoints, requests at 500/s holding 200 ms (100 in "
        "flight on average), keys drawn from 1,000 with Zipf(1.1) popularity (the hottest key is "
        "~17% of requests). The bound is `max(1, ceil(1.25 x in-flight x weight / total weight))`"
        " (= `ceil(1.25 x mean)` with equal weights), checked at every pick. Plain hashing has "
        "no bound; the column shows how far it would be exceeded.\n\n" + bounded
    )
    return text, {"churn": churn_data, "bounded": bounded_data}
