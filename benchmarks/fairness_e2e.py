"""Noisy neighbour with real requests: ProxyApp under uvicorn, real backends, a 4-slot budget.

    python benchmarks/fairness_e2e.py [--seconds 150]

Two backend processes (``tests/support/backend_app.py`` under uvicorn) answer ``/sleep/2.0``; a
proxy process runs `ProxyApp` in front of them with a budget of 8 requests in flight, so the
upstream's capacity is 8 / 2 s = 4 requests a second (slow requests, so that the proxy's own CPU
on a shared machine is never the bottleneck). Ten tenants send open-loop Poisson traffic from this
process with httpx: nine at their fair share (0.4 req/s each), and, in the noisy runs, one at ten
times it (4 req/s). Figures cover the run after a 20 s warm-up. The budget is either the pool's `FairQueue`
(``concurrency = { limit = 8 }``) or a plain FIFO limit (an ``anyio.Semaphore(8)`` around the same
`ProxyApp`). Latency is measured by the client, from sending to the end of the response.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import httpx  # noqa: E402
from _report import emit  # noqa: E402

from tests.support.backends import BackendProcess, free_port, wait_for_port  # noqa: E402

SLOTS = 8
SERVICE = 2.0  # slow requests, so the proxy's own CPU (on a shared 2-core box) is never the limit
WARMUP = 20.0  # the noisy tenant's backlog builds up first
QUIET = [f"quiet{i}" for i in range(9)]
NOISY = "noisy"


def key(tenant: str) -> str:
    return f"sk-{tenant}-0123456789abcdef"


def build_app(mode: str, backends: list[str]) -> Any:
    """The proxy: ProxyApp with a FairQueue (``fair``) or behind a FIFO semaphore (``fifo``)."""
    import tenantlb as tlb
    from tenantlb.adapters.asgi import ProxyApp

    tenants = [
        tlb.Tenant(name, api_keys=[tlb.hash_api_key(key(name))], upstream="p")
        for name in [*QUIET, NOISY]
    ]
    pool = tlb.Pool(backends, tlb.RoundRobin(), outlier_detector=None)
    concurrency = {"p": tlb.FairQueue(SLOTS)} if mode == "fair" else None
    gateway = tlb.Gateway(
        registry=tlb.TenantRegistry(tenants), pools={"p": pool}, concurrency=concurrency
    )
    proxy = ProxyApp(gateway)
    if mode == "fair":
        return proxy
    semaphore: list[anyio.Semaphore] = []

    async def fifo(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await proxy(scope, receive, send)
            return
        if not semaphore:
            semaphore.append(anyio.Semaphore(SLOTS))  # FIFO waiters, created on the server's loop
        async with semaphore[0]:
            await proxy(scope, receive, send)

    return fifo


def serve(mode: str, port: int, backends: str) -> None:
    import uvicorn

    app = build_app(mode, backends.split(","))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def load(
    url: str, seconds: float, with_noisy: bool, seed: int
) -> list[tuple[str, int, float, float]]:
    """Open-loop Poisson load for *seconds*; returns ``(tenant, status, sent, done)`` per request.

    Requests still unanswered 20 s after the load stops are cancelled (status 0, done = inf).
    """
    rng = random.Random(seed)
    share = SLOTS / SERVICE / 10
    rates = {name: share for name in QUIET}
    if with_noisy:
        rates[NOISY] = 10 * share
    records: list[tuple[str, int, float, float]] = []
    limits = httpx.Limits(max_connections=4000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def one(tenant: str) -> None:
            sent = time.perf_counter()
            try:
                response = await client.get(f"/sleep/{SERVICE}", headers={"x-api-key": key(tenant)})
            except anyio.get_cancelled_exc_class():
                records.append((tenant, 0, sent, math.inf))
                raise
            except httpx.HTTPError:  # e.g. a keep-alive connection closed under us: count it
                records.append((tenant, -1, sent, time.perf_counter()))
                return
            records.append((tenant, response.status_code, sent, time.perf_counter()))

        async def tenant_loop(tenant: str, tg: anyio.abc.TaskGroup, deadline: float) -> None:
            while time.perf_counter() < deadline:
                await anyio.sleep(rng.expovariate(rates[tenant]))
                tg.start_soon(one, tenant)

        deadline = time.perf_counter() + seconds
        with anyio.move_on_after(seconds + 30):
            async with anyio.create_task_group() as tg:
                for tenant in rates:
                    tg.start_soon(tenant_loop, tenant, tg, deadline)
    return records


def p99(values: list[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def run(
    mode: str, backends: list[BackendProcess], seconds: float, with_noisy: bool
) -> list[tuple[str, int, float, float]]:
    port = free_port()
    proxy = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode, str(port), ",".join(b.url for b in backends)],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)])),
    )
    try:
        wait_for_port(port, 20.0, proxy)
        return anyio.run(load, f"http://127.0.0.1:{port}", seconds, with_noisy, 1)
    finally:
        proxy.kill()  # requests may still wait in its queue: no graceful drain
        proxy.wait(timeout=20)


def summarize(records: list[tuple[str, int, float, float]], seconds: float) -> dict[str, float]:
    """Figures over the window after a 5 s warm-up: quiet p99 of requests sent in it, and what
    completed in it (throughput, the noisy tenant's share)."""
    start = min(sent for _, _, sent, _ in records) + WARMUP
    end = start - WARMUP + seconds
    quiet = [
        done - sent
        for t, s, sent, done in records
        if t != NOISY and start <= sent < end and s != 503
    ]
    done_in = [(t, s) for t, s, _, done in records if start <= done < end and s == 200]
    noisy_sent = [s for t, s, sent, _ in records if t == NOISY and start <= sent < end]
    quiet_sent = [s for t, s, sent, _ in records if t != NOISY and start <= sent < end]
    errors = sum(s == -1 for _, s, _, _ in records)
    return {
        "errors": errors,
        "p99": p99(quiet),
        "quiet_refused": sum(s == 503 for s in quiet_sent) / max(1, len(quiet_sent)),
        "throughput": len(done_in) / (end - start) / (SLOTS / SERVICE),
        "noisy_share": sum(t == NOISY for t, _ in done_in) / max(1, len(done_in)),
        "noisy_refused": sum(s == 503 for s in noisy_sent) / max(1, len(noisy_sent)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument(
        "--serve", nargs=3, metavar=("MODE", "PORT", "BACKENDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.serve[2])
        return 0
    print(
        f"## Real requests: {SLOTS} slots x {SERVICE * 1000:.0f} ms = {SLOTS / SERVICE:.0f} req/s capacity, "
        f"{args.seconds:.0f} s per run\n"
    )
    print(
        "| budget | noisy tenant | quiet p99 ms | vs no noisy | quiet refused | served / capacity | noisy share | noisy refused |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with BackendProcess("b1") as b1, BackendProcess("b2") as b2:
        for mode in ("fair", "fifo"):
            base = math.nan
            for with_noisy in (False, True):
                row = summarize(run(mode, [b1, b2], args.seconds, with_noisy), args.seconds)
                if not with_noisy:
                    base = row["p99"]
                name = "FairQueue" if mode == "fair" else "FIFO semaphore"
                noisy = "10x share" if with_noisy else "absent"
                share = f"{row['noisy_share']:.1%}" if with_noisy else "-"
                refused = f"{row['noisy_refused']:.1%}" if with_noisy else "-"
                if with_noisy:
                    emit(
                        f"{name}: quiet p99 with / without the noisy tenant", row["p99"] / base, "x"
                    )
                    emit(
                        f"{name}: served / capacity, noisy tenant present",
                        row["throughput"] * 100,
                        "%",
                    )
                    emit(
                        f"{name}: noisy tenant's share of the served", row["noisy_share"] * 100, "%"
                    )
                print(
                    f"| {name} | {noisy} | {row['p99'] * 1000:.0f} | {row['p99'] / base:.2f}x | "
                    f"{row['quiet_refused']:.1%} | {row['throughput']:.1%} | {share} | {refused} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
