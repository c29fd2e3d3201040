"""Noisy-neighbour simulation: FairQueue's real decision object against a plain FIFO limit.

A saturated upstream with a fixed number of slots (``--capacity``, exponential service times of
mean ``--service`` seconds) is shared by ten tenants: nine send Poisson traffic at their fair share
(capacity / 10), one ("noisy") at ten times its share. Time is virtual (a discrete-event loop with a
seeded RNG), and every admission decision is made by `tenantlb.fairness.FairScheduler`, the object
inside `FairQueue`. Each scenario also runs without the noisy tenant, and the quiet tenants' p99
latency (queue wait + service) is compared with and without it.

Second part: `AdaptiveConcurrency` as the FairScheduler's capacity in front of a backend that has
``--capacity`` workers and queues the rest; the backend's service time doubles for the middle third
of the run. The table shows the limit and the latencies per phase, against a fixed limit.

Usage: python benchmarks/fairness_sim.py [--seconds 120] [--seed 1] [--png]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _report import emit

import tenantlb as tlb
from tenantlb.fairness import FairScheduler, Turn, TurnState

QUIET = [f"quiet-{i}" for i in range(9)]
NOISY = "noisy"


class VirtualClock:
    """The simulation's clock: only the event loop moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Result:
    """What one run measured."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    busy: float = 0.0  # slot-seconds of service completed inside the measured window
    busy_by: dict[str, float] = field(default_factory=dict)  # the same, per tenant
    span: float = 0.0


class FifoLimit:
    """The baseline: a plain concurrency limit with one FIFO queue (a semaphore with a bound)."""

    def __init__(self, capacity: int, max_queue: int, wake: Callable[[object], None]) -> None:
        self.capacity = capacity
        self.max_queue = max_queue
        self.in_flight = 0
        self.queue: deque[object] = deque()
        self.wake = wake

    def submit(self, item: object) -> bool | None:
        """True: runs now; None: queued; False: refused."""
        if self.in_flight < self.capacity and not self.queue:
            self.in_flight += 1
            return True
        if len(self.queue) >= self.max_queue:
            return False
        self.queue.append(item)
        return None

    def release(self) -> None:
        self.in_flight -= 1
        if self.queue:
            self.in_flight += 1
            self.wake(self.queue.popleft())


def simulate(
    policy: str,
    *,
    with_noisy: bool,
    capacity: int,
    service: float,
    seconds: float,
    seed: int,
    warmup: float = 10.0,
) -> Result:
    """Run one scenario; *policy* is "fair" (FairScheduler) or "fifo"."""
    rng = random.Random(seed)
    clock = VirtualClock()
    events: list[tuple[float, int, str, object]] = []
    seq = 0
    result = Result(span=seconds)
    share = capacity / service / 10  # a tenant's fair share, requests per second
    rates = {name: share for name in QUIET}
    if with_noisy:
        rates[NOISY] = 10 * share
    for name in rates:
        result.latencies[name] = []
        result.rejected[name] = 0
        result.sent[name] = 0

    def schedule(at: float, kind: str, payload: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, payload))

    def start(payload: tuple[str, float], token: object) -> None:
        schedule(clock.now + rng.expovariate(1.0 / service), "done", (payload, token, clock.now))

    def on_wake(turn: Turn) -> None:
        if turn.state is TurnState.GRANTED:
            start((turn.flow, arrival(turn)), turn)

    scheduler = FairScheduler(capacity, wake=on_wake, clock=clock)
    fifo = FifoLimit(capacity, 64 * 50, wake=lambda item: start(item, None))  # type: ignore[arg-type]

    for name, rate in rates.items():
        schedule(rng.expovariate(rate), "arrive", name)
    end = warmup + seconds
    while events:
        at, _, kind, payload = heapq.heappop(events)
        if at > end:
            break
        clock.now = at
        measured = at >= warmup
        if kind == "arrive":
            name = payload  # type: ignore[assignment]
            assert isinstance(name, str)
            schedule(at + rng.expovariate(rates[name]), "arrive", name)
            if measured:
                result.sent[name] += 1
            item = (name, at)
            if policy == "fair":
                try:
                    turn = scheduler.submit(name)
                except tlb.QueueFull:
                    result.rejected[name] += measured
                    continue
                if turn.state is TurnState.GRANTED and turn.enqueued_at is None:
                    start(item, turn)
            else:
                admitted = fifo.submit(item)
                if admitted is False:
                    result.rejected[name] += measured
                elif admitted:
                    start(item, None)
        else:
            (name, arrived), token, began = payload  # type: ignore[misc]
            if arrived >= warmup:
                result.latencies[name].append(at - arrived)
            if at >= warmup:
                used = at - max(began, warmup)
                result.busy += used
                result.busy_by[name] = result.busy_by.get(name, 0.0) + used
            if policy == "fair":
                scheduler.release(token)  # type: ignore[arg-type]
            else:
                fifo.release()
    return result


def arrival(turn: Turn) -> float:
    """When *turn* was submitted (the simulation's clock is read at submit)."""
    at = turn.enqueued_at if turn.enqueued_at is not None else turn.granted_at
    assert at is not None
    return at


def p99(values: list[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def noisy_neighbour(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    capacity, service, seconds, seed = args.capacity, args.service, args.seconds, args.seed
    rows: dict[str, dict[str, float]] = {}
    print(
        f"## Noisy neighbour: {capacity} upstream slots, exponential service mean {service * 1000:.0f} ms,"
    )
    print(f"## {seconds:.0f} s virtual after 10 s warm-up, seed {seed}")
    print()
    print(
        "| policy | noisy tenant | quiet p99 ms (pooled) | worst quiet p99 ms | vs no noisy | "
        "quiet refused | throughput / capacity | noisy share of slots | noisy refused |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for policy in ("fair", "fifo"):
        common = {
            "capacity": capacity,
            "service": service,
            "seconds": seconds,
            "seed": seed,
        }
        alone = simulate(policy, with_noisy=False, **common)
        crowd = simulate(policy, with_noisy=True, **common)
        base = p99([x for q in QUIET for x in alone.latencies[q]])
        for label, res in (("absent", alone), ("10x share", crowd)):
            pooled = p99([x for q in QUIET for x in res.latencies[q]])
            worst = max(p99(res.latencies[q]) for q in QUIET)
            quiet_sent = sum(res.sent[q] for q in QUIET)
            quiet_refused = sum(res.rejected[q] for q in QUIET) / max(1, quiet_sent)
            throughput = res.busy / (capacity * seconds)
            # share of the slot-time used in the window (completions would undercount a tenant
            # whose requests wait longer than the window)
            noisy_share = res.busy_by.get(NOISY, 0.0) / res.busy if res.busy else 0.0
            noisy_refused = res.rejected.get(NOISY, 0) / max(1, res.sent.get(NOISY, 0))
            ratio = pooled / base
            name = "FairQueue" if policy == "fair" else "FIFO limit"
            print(
                f"| {name} | {label} | {pooled * 1000:.0f} | {worst * 1000:.0f} | {ratio:.2f}x | "
                f"{quiet_refused:.1%} | {throughput:.1%} | "
                f"{'-' if label == 'absent' else f'{noisy_share:.1%}'} | "
                f"{'-' if label == 'absent' else f'{noisy_refused:.1%}'} |"
            )
            if label != "absent":
                emit(
                    f"{name}: quiet p99 with / without the noisy tenant", ratio, "x", better="lower"
                )
                emit(f"{name}: throughput / capacity, noisy tenant present", throughput * 100, "%")
                emit(f"{name}: noisy tenant's share of the slots", noisy_share * 100, "%")
            rows[f"{policy}/{label}"] = {
                "pooled": pooled,
                "worst": worst,
                "ratio": ratio,
                "throughput": throughput,
                "noisy_share": noisy_share,
                "quiet_refused": quiet_refused,
            }
    print()
    fair = rows["fair/10x share"]
    checks = [
        ("quiet p99 with the noisy tenant <= 1.2x without (FairQueue)", fair["ratio"] <= 1.2),
        ("throughput >= 95% of capacity (FairQueue, noisy present)", fair["throughput"] >= 0.95),
        ("noisy tenant still served: share >= 5% (fair share 10%)", fair["noisy_share"] >= 0.05),
        ("FIFO: quiet p99 worse than 1.2x", rows["fifo/10x share"]["ratio"] > 1.2),
    ]
    for text, ok in checks:
        print(f"- {'ok  ' if ok else 'FAIL'} {text}")
    print()
    return rows


# --- adaptive concurrency ---------------------------------------------------------------------


@dataclass
class Phase:
    """Figures of one third of the adaptive run."""

    latencies: list[float] = field(default_factory=list)  # arrival to completion, served requests
    backend: list[float] = field(default_factory=list)  # time spent at the backend (queue + work)
    limits: list[int] = field(default_factory=list)
    refused: int = 0  # QueueFull or QueueTimeout
    sent: int = 0


def adaptive_run(
    limit: int | None, *, workers: int, service: float, rate: float, seconds: float, seed: int
) -> list[Phase]:
    """A backend with *workers* and a FIFO backlog; its service time doubles in the middle third.

    *limit* None puts an AdaptiveConcurrency behind the FairScheduler, else a fixed limit.
    """
    rng = random.Random(seed)
    clock = VirtualClock()
    events: list[tuple[float, int, str, object]] = []
    seq = 0
    third = seconds / 3

    def schedule(at: float, kind: str, payload: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, payload))

    adaptive = tlb.AdaptiveConcurrency(
        min_limit=3,
        max_limit=1000,
        update_interval=0.1,
        min_rtt_interval=30.0,
        clock=clock,
        rng=random.Random(seed),
    )
    busy = 0
    backlog: deque[tuple[Turn, float]] = deque()
    phases = [Phase() for _ in range(3)]

    def phase_at(at: float) -> Phase:
        return phases[min(2, int(at // third))]

    def backend_start(turn: Turn, entered: float) -> None:
        nonlocal busy
        if busy < workers:
            busy += 1
            slow = 2.0 if third <= clock.now < 2 * third else 1.0
            done = clock.now + rng.expovariate(1.0 / (service * slow))
            schedule(done, "done", (turn, entered))
        else:
            backlog.append((turn, entered))

    def on_wake(turn: Turn) -> None:
        if turn.state is TurnState.GRANTED:
            backend_start(turn, clock.now)
        else:
            phase_at(clock.now).refused += 1  # expired in the queue

    capacity: int | tlb.AdaptiveConcurrency = adaptive if limit is None else limit
    scheduler = FairScheduler(capacity, timeout=0.5, wake=on_wake, clock=clock)
    flows = [f"tenant-{i}" for i in range(10)]
    schedule(rng.expovariate(rate), "arrive", None)
    schedule(0.25, "sample", None)
    while events:
        at, _, kind, payload = heapq.heappop(events)
        if at > seconds:
            break
        clock.now = at
        phase = phase_at(at)
        if kind == "arrive":
            schedule(at + rng.expovariate(rate), "arrive", None)
            phase.sent += 1
            try:
                turn = scheduler.submit(rng.choice(flows))
            except tlb.QueueFull:
                phase.refused += 1
                continue
            if turn.state is TurnState.GRANTED and turn.enqueued_at is None:
                backend_start(turn, at)
        elif kind == "sample":
            schedule(at + 0.25, "sample", None)
            phase.limits.append(scheduler.limit)
        else:
            turn, entered = payload  # type: ignore[misc]
            phase.latencies.append(at - arrival(turn))
            phase.backend.append(at - entered)
            busy -= 1
            if backlog:
                backend_start(*backlog.popleft())
            scheduler.release(turn)
            scheduler.poll()  # the adaptive limit may have grown with the window that closed
    return phases


def adaptive_table(args: argparse.Namespace) -> list[Phase]:
    workers, service = args.capacity, args.service
    rate = 0.8 * workers / service
    print(
        f"## Adaptive concurrency: a backend with {workers} workers and a FIFO backlog, service "
        f"mean {service * 1000:.0f} ms, doubled in the middle third; {rate:.0f} req/s offered "
        f"(80% of normal capacity, 160% while slow); FairScheduler queue timeout 0.5 s"
    )
    print()
    print(
        "| gateway limit | phase | mean limit | backend p99 ms | end-to-end p50 ms | "
        "end-to-end p99 ms | served req/s | refused or timed out |"
    )
    print("|---|---|---|---|---|---|---|---|")
    names = ("normal", "latency x2", "recovered")
    kept: list[Phase] = []
    for label, limit in (("AdaptiveConcurrency", None), ("fixed 1000", 1000)):
        phases = adaptive_run(
            limit, workers=workers, service=service, rate=rate, seconds=args.seconds, seed=args.seed
        )
        if limit is None:
            kept = phases
        for name, ph in zip(names, phases, strict=True):
            lat = sorted(ph.latencies)
            p50 = lat[len(lat) // 2] if lat else math.nan
            emit(f"{label}, {name}: backend p99", p99(ph.backend) * 1000, "ms", better="lower")
            print(
                f"| {label} | {name} | {sum(ph.limits) / max(1, len(ph.limits)):.0f} | "
                f"{p99(ph.backend) * 1000:.0f} | {p50 * 1000:.0f} | {p99(ph.latencies) * 1000:.0f} | "
                f"{len(ph.latencies) / (args.seconds / 3):.0f} | {ph.refused / max(1, ph.sent):.1%} |"
            )
    print()
    return kept


def plot(rows: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["FairQueue\nno noisy", "FairQueue\nnoisy 10x", "FIFO\nno noisy", "FIFO\nnoisy 10x"]
    keys = ["fair/absent", "fair/10x share", "fifo/absent", "fifo/10x share"]
    values = [rows[k]["pooled"] * 1000 for k in keys]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = ax.bar(labels, values, color=["#4c72b0", "#4c72b0", "#c44e52", "#c44e52"])
    ax.set_yscale("log")
    ax.set_ylim(bottom=100)
    ax.set_ylabel("quiet tenants' p99 latency (ms, log)")
    ax.set_title("Nine quiet tenants and one at 10x its share, saturated upstream")
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            f"{value:.0f} ms", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom"
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="virtual seconds measured")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--capacity", type=int, default=32, help="upstream slots")
    parser.add_argument("--service", type=float, default=0.05, help="mean service time, seconds")
    parser.add_argument(
        "--png", action="store_true", help="write benchmarks/results/fairness_sim.png"
    )
    args = parser.parse_args(argv)
    rows = noisy_neighbour(args)
    adaptive_table(args)
    if args.png:
        plot(rows, Path(__file__).parent / "results" / "fairness_sim.png")
    fair = rows["fair/10x share"]
    ok = fair["ratio"] <= 1.2 and fair["throughput"] >= 0.95 and fair["noisy_share"] >= 0.05
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
