"""Fairness benchmarks: FairQueue.acquire against anyio.Semaphore, and the scheduler at 10,000 flows.

    python benchmarks/fairness.py [--rounds 7]

Part 1 times ``async with fq.acquire("acme"): pass`` with free slots against ``async with sem:
pass`` on an ``anyio.Semaphore`` (both checkpoint on acquire), on asyncio and trio, interleaved in one
run, best round kept (target <= 3x). Part 2 times the decisions one queued request costs in a
saturated `FairScheduler` (a release that dispatches the next waiter, and a submit that queues a new
one) with 5,000 requests waiting, spread over 10 and over 10,000 flows (target: 10,000 flows
within 1.5x of 10).
"""

from __future__ import annotations

import argparse
import sys
import time

import anyio
from _report import emit

import tenantlb as tlb
from tenantlb.fairness import FairScheduler, Turn, TurnState, deal_hand

N_ACQUIRE = 20_000
N_DECISIONS = 50_000
BACKLOG = 5_000


async def time_fair_queue(n: int) -> float:
    fq = tlb.FairQueue(64)
    acquire = fq.acquire
    start = time.process_time()
    for _ in range(n):
        async with acquire("acme"):
            pass
    return (time.process_time() - start) / n


async def time_semaphore(n: int) -> float:
    sem = anyio.Semaphore(64)
    start = time.process_time()
    for _ in range(n):
        async with sem:
            pass
    return (time.process_time() - start) / n


async def time_checkpoint(n: int) -> float:
    checkpoint = anyio.lowlevel.checkpoint
    start = time.process_time()
    for _ in range(n):
        await checkpoint()
    return (time.process_time() - start) / n


def bench_acquire(rounds: int) -> list[tuple[str, float, float, float]]:
    rows = []
    for backend in ("asyncio", "trio"):
        best = {"fair": float("inf"), "sem": float("inf"), "checkpoint": float("inf")}
        for _ in range(rounds):
            best["sem"] = min(best["sem"], anyio.run(time_semaphore, N_ACQUIRE, backend=backend))
            best["fair"] = min(best["fair"], anyio.run(time_fair_queue, N_ACQUIRE, backend=backend))
            best["checkpoint"] = min(
                best["checkpoint"], anyio.run(time_checkpoint, N_ACQUIRE, backend=backend)
            )
        rows.append((backend, best["fair"], best["sem"], best["checkpoint"]))
    return rows


def time_decisions(flows: int, n: int) -> float:
    """Seconds per queued request (one dispatching release + one queuing submit), saturated."""
    granted: list[Turn] = []
    sched = FairScheduler(64, queues=256, hand_size=8, queue_length=100, wake=granted.append)
    names = [f"tenant-{i}" for i in range(flows)]
    for name in names:  # steady state: every tenant's hand was dealt (and cached) long ago
        deal_hand(name, 256, 8)
    held = [sched.submit(names[i % flows]) for i in range(64)]
    for i in range(BACKLOG):
        sched.submit(names[i % flows])
    assert sched.queued == BACKLOG
    submit, release = sched.submit, sched.release
    k = BACKLOG
    start = time.process_time()
    for i in range(n):
        release(held[i])
        submit(names[k % flows])
        k += 1
        held.append(granted[-1])
    elapsed = time.process_time() - start
    assert all(t.state is TurnState.GRANTED for t in held[n:])
    return elapsed / n


def bench_decisions(rounds: int) -> dict[int, float]:
    best = dict.fromkeys((10, 100, 1000, 10_000), float("inf"))
    for _ in range(rounds):
        for flows in best:
            best[flows] = min(best[flows], time_decisions(flows, N_DECISIONS))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    print(
        f"Measured on Python {sys.version.split()[0]}, best of {args.rounds} interleaved rounds\n"
    )

    print(f"## Uncontended acquire + release ({N_ACQUIRE:,} per round)\n")
    print("| backend | FairQueue.acquire us | anyio.Semaphore us | ratio | bare checkpoint us |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for backend, fair, sem, checkpoint in bench_acquire(args.rounds):
        ratio = fair / sem
        worst = max(worst, ratio)
        emit(f"FairQueue.acquire / anyio.Semaphore, {backend}", ratio, "x", better="lower")
        emit(f"FairQueue.acquire, {backend}", fair * 1e6, "us", better="lower")
        print(
            f"| {backend} | {fair * 1e6:.2f} | {sem * 1e6:.2f} | {ratio:.2f}x | {checkpoint * 1e6:.2f} |"
        )
    ok_acquire = worst <= 3.0
    print(
        f"\n- {'ok  ' if ok_acquire else 'FAIL'} FairQueue.acquire <= 3x anyio.Semaphore (worst {worst:.2f}x)\n"
    )

    print(f"## Decision cost per queued request, {BACKLOG:,} waiting ({N_DECISIONS:,} per round)\n")
    print("| flows | us per queued request | vs 10 flows |")
    print("|---|---|---|")
    best = bench_decisions(args.rounds)
    for flows, seconds in best.items():
        print(f"| {flows:,} | {seconds * 1e6:.2f} | {seconds / best[10]:.2f}x |")
        emit(f"per queued request, {flows:,} flows", seconds * 1e6, "us", better="lower")
    flat = best[10_000] / best[10]
    emit("per queued request, 10,000 / 10 flows", flat, "x", better="lower")
    ok_flat = flat <= 1.5
    print(f"\n- {'ok  ' if ok_flat else 'FAIL'} 10,000 flows within 1.5x of 10 flows ({flat:.2f}x)")
    return 0 if ok_acquire and ok_flat else 1


if __name__ == "__main__":
    sys.exit(main())
