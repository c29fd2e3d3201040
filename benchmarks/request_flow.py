"""Where a request's time goes inside the gateway: each step of `Gateway.admit`, measured.

    python benchmarks/request_flow.py            # prints the table, writes docs/images/request-flow.png

Each step is timed on its own with the same objects the gateway uses (a 3-endpoint Peak-EWMA
pool, one tenant with a key, one rate and a concurrency cap, a MemoryStore), as the median of
several rounds of many calls; the full `gateway.admit` round trip is measured the same way.
The figure is drawn from these numbers (matplotlib, a docs dependency).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from _report import emit

import tenantlb as tlb

KEY = "sk-flow-0123456789abcdef"
N = 20_000
ROUNDS = 5
OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "request-flow.png"


def per_call(fn: Callable[[], object], n: int = N) -> float:
    """Median over ROUNDS of the mean seconds per call of *fn*."""
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - started) / n)
    return statistics.median(samples)


def main() -> None:
    pool = tlb.Pool(["http://a:1", "http://b:1", "http://c:1"], name="api")
    tenant = tlb.Tenant(
        "acme",
        api_keys=[tlb.hash_api_key(KEY)],
        upstream="api",
        limits=[tlb.Rate(1e12, per=1.0)],
        max_concurrency=1000,
    )
    registry = tlb.TenantRegistry([tenant])
    gateway = tlb.Gateway(registry=registry, pools={"api": pool})
    headers = [("host", "api.example"), ("x-api-key", KEY), ("user-agent", "bench")]
    limiter = tlb.RateLimiter(tenant.limits)
    slots = tlb.ConcurrencyLimiter(1000)
    request = tlb.RequestInfo("GET", "/v1/items", headers, client=("203.0.113.9", 5555))

    def build() -> object:
        return tlb.RequestInfo("GET", "/v1/items", headers, client=("203.0.113.9", 5555))

    def resolve() -> object:
        return registry.resolve(tlb.RequestInfo("GET", "/v1/items", headers))

    def slot() -> None:
        slots.release_nowait(slots.acquire_nowait("acme"))

    def pick_and_record() -> None:
        with pool.acquire() as lease:
            lease.record(status=200)

    steps = [
        ("request view", per_call(build)),
        ("resolve + authenticate", per_call(resolve) - per_call(build)),
        ("rate limit", per_call(lambda: limiter.acquire_nowait("acme"))),
        ("concurrency slot", per_call(slot)),
        ("pick + record", per_call(pick_and_record)),
    ]

    async def admit_loop(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            async with gateway.admit(request) as ticket:
                ticket.record(status=200)
        return (time.perf_counter() - started) / n

    total = statistics.median(anyio.run(admit_loop, N // 4) for _ in range(ROUNDS))
    print(f"{'step':28} {'µs':>7}")
    for name, seconds in steps:
        print(f"{name:28} {seconds * 1e6:7.2f}")
    print(f"{'sum of the steps':28} {sum(s for _, s in steps) * 1e6:7.2f}")
    print(f"{'gateway.admit round trip':28} {total * 1e6:7.2f}   (the steps plus async glue)")
    for name, seconds in [*steps, ("gateway.admit round trip", total)]:
        emit(name, seconds * 1e6, "us", better="lower")
    if "--no-plot" not in sys.argv:
        plot(steps, total)


def plot(steps: list[tuple[str, float]], total: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 2.6), dpi=120)
    left = 0.0
    colors = ["#8da0cb", "#66c2a5", "#fc8d62", "#e78ac3", "#a6d854"]
    for (name, seconds), color in zip(steps, colors, strict=True):
        width = seconds * 1e6
        ax.barh(0, width, left=left, color=color, edgecolor="white")
        ax.text(left + width / 2, 0.45, name, ha="center", va="bottom", fontsize=8, rotation=20)
        left += width
    glue = max(0.0, total * 1e6 - left)
    ax.barh(0, glue, left=left, color="#d9d9d9", edgecolor="white")
    ax.text(left + glue / 2, -0.5, "async admission\n(context manager, slot/refund glue)",
            ha="center", va="top", fontsize=8)  # fmt: skip
    ax.set_yticks([])
    ax.set_xlim(0, max(total * 1e6, left) * 1.02)
    ax.set_ylim(-1.2, 1.4)
    ax.set_xlabel("microseconds per request (median, in process, MemoryStore)")
    ax.set_title("One request through Gateway.admit, measured step by step", fontsize=10)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT)
    print(f"wrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}")


if __name__ == "__main__":
    main()
