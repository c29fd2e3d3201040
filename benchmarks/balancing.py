"""Balancing benchmark: the cost of one request's pick and record, per strategy and pool size.

Measures, in one run and side by side with a baseline (a bare Python round-robin method):

- cycle:  ``with pool.acquire() as lease: lease.record(status=200)``
- keyed:  the same with ``pool.acquire(key=...)`` over 1000 distinct keys (hashing strategies)
- pick:   ``balancer.pick(None)`` alone, without the pool

at 3, 100 and 1000 endpoints, and prints microseconds and ratios to the baseline. Targets
(issue 2, CPython 3.11): cycle <= 1.5 us for RoundRobin and Maglev, <= 2.5 us for PeakEWMA and
LeastRequest, and flat: cycle at 1000 endpoints <= 1.5x cycle at 3.

Run: ``python benchmarks/balancing.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import gc
import itertools
import platform
import sys
import timeit
from collections.abc import Callable

from _report import emit

import tenantlb as tlb
from tenantlb.balancing import Balancer

SIZES = (3, 100, 1000)
STRATEGIES: dict[str, Callable[[], Balancer]] = {
    "RoundRobin": tlb.RoundRobin,
    "WeightedRandom": tlb.WeightedRandom,
    "LeastRequest": tlb.LeastRequest,
    "PeakEWMA": tlb.PeakEWMA,
    "RingHash": tlb.RingHash,
    "Maglev": tlb.Maglev,
    "Rendezvous": tlb.Rendezvous,
    "BoundedLoad": tlb.BoundedLoad,
}
HASHING = {"RingHash", "Maglev", "Rendezvous", "BoundedLoad"}
TARGETS = {"RoundRobin": 1.5, "Maglev": 1.5, "PeakEWMA": 2.5, "LeastRequest": 2.5}


class BareRoundRobin:
    """The baseline: the least a Python round robin can do per pick."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.n = len(items)
        self.i = 0

    def next(self) -> str:
        i = self.i
        self.i = (i + 1) % self.n
        return self.items[i]


def per_call(stmt: Callable[[], object], number: int) -> float:
    """Microseconds per call of one timed run."""
    return timeit.Timer(stmt).timeit(number) / number * 1e6


def main() -> None:
    quick = "--quick" in sys.argv
    number, rounds = (2_000, 2) if quick else (20_000, 7)
    keys = [b"client-%d" % i for i in range(1000)]

    # Every cell is measured once per round, rounds interleaved, and the best round kept: noise
    # from other processes then hits all cells alike instead of one row.
    cells: dict[tuple[str, int, str], Callable[[], object]] = {}
    pools: list[tlb.Pool] = []
    for n in SIZES:
        urls = [f"http://10.{i // 62500}.{i // 250 % 250}.{i % 250}:8000" for i in range(n)]
        cells["baseline", n, "pick"] = BareRoundRobin(urls).next
        for name, factory in STRATEGIES.items():
            pool = tlb.Pool(urls, factory())
            pools.append(pool)
            acquire = pool.acquire

            def cycle(acquire: Callable[..., tlb.Lease] = acquire) -> None:
                with acquire() as lease:
                    lease.record(status=200)

            key_iter = itertools.cycle(keys).__next__

            def keyed(
                acquire: Callable[..., tlb.Lease] = acquire, nxt: Callable[[], bytes] = key_iter
            ) -> None:
                with acquire(key=nxt()) as lease:
                    lease.record(status=200)

            def acquire_release(acquire: Callable[..., tlb.Lease] = acquire) -> None:
                acquire().release()

            pick = pool.balancer.pick
            cells[name, n, "cycle"] = cycle
            cells[name, n, "acquire+release"] = acquire_release
            cells[name, n, "pick"] = lambda pick=pick: pick(None)
            if name in HASHING:
                cells[name, n, "keyed"] = keyed

    best: dict[tuple[str, int, str], float] = {}
    for _ in range(rounds):
        for cell, stmt in cells.items():
            gc.collect()
            us = per_call(stmt, number)
            best[cell] = min(us, best.get(cell, us))
    assert all(pool.stats().in_flight == 0 for pool in pools)
    baselines = {n: best["baseline", n, "pick"] for n in SIZES}
    results: dict[tuple[str, int], dict[str, float]] = {}
    for (name, n, what), us in best.items():
        results.setdefault((name, n), {})[what] = us

    print(f"# Balancing benchmark: Python {platform.python_version()}, {platform.machine()}")
    print(
        "baseline (bare round-robin .next()): "
        + ", ".join(f"n={n}: {baselines[n]:.3f} us" for n in SIZES)
    )
    print()
    header = "| strategy | n | cycle us | x base | keyed cycle us | acquire+release us | pick us | x base |"
    print(header)
    print("|" + "---|" * 8)
    for name in STRATEGIES:
        for n in SIZES:
            row = results[name, n]
            base = baselines[n]
            keyed = f"{row['keyed']:.2f}" if "keyed" in row else "-"
            print(
                f"| {name} | {n} | {row['cycle']:.2f} | {row['cycle'] / base:.1f} | {keyed} |"
                f" {row['acquire+release']:.2f} | {row['pick']:.2f} | {row['pick'] / base:.1f} |"
            )
    print()
    print("| strategy | target cycle us | worst cycle us | flat (1000 vs 3) | verdict |")
    print("|---|---|---|---|---|")
    for name in STRATEGIES:
        cycles = [results[name, n]["cycle"] for n in SIZES]
        flat = results[name, 1000]["cycle"] / results[name, 3]["cycle"]
        target = TARGETS.get(name)
        ok = flat <= 1.5 and (target is None or max(cycles) <= target)
        print(
            f"| {name} | {target if target else '-'} | {max(cycles):.2f} | {flat:.2f}x |"
            f" {'ok' if ok else 'MISSED'} |"
        )
        emit(f"{name} cycle, worst of 3/100/1000 endpoints", max(cycles), "us", better="lower")
        emit(f"{name} cycle 1000 / 3 endpoints", flat, "x", better="lower")
    flats = [results[s, 1000]["cycle"] / results[s, 3]["cycle"] for s in STRATEGIES]
    emit("cycle 1000 / 3 endpoints, worst strategy", max(flats), "x", better="lower")
    worst = {s: max(results[s, n]["cycle"] for n in SIZES) for s in STRATEGIES}
    for other in ("RoundRobin", "LeastRequest"):
        ratio = worst["PeakEWMA"] / worst[other]
        emit(f"PeakEWMA / {other} cycle", ratio, "x", better="lower")
    emit("baseline: bare round-robin pick", max(baselines.values()), "us")


if __name__ == "__main__":
    main()
