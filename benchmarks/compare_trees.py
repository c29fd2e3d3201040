"""Before/after: the balancing cycle and the gateway round trip of two source trees, in one process.

A refactor is checked against the code it replaces by loading both trees side by side (each
``src/tenantlb`` is imported under its own name: the package uses relative imports only) and
measuring every cell of both, rounds interleaved, best round kept, in this thread's CPU time (so
time spent descheduled on a busy machine does not count). On a shared machine this is far steadier
than two runs of `balancing.py` / `gateway.py` one after the other.

Run: ``python benchmarks/compare_trees.py BEFORE_SRC AFTER_SRC [--rounds 7] [-n 20000]``, e.g.
``git archive main src | tar -x -C /tmp/before`` then ``... /tmp/before/src src``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import shutil
import sys
import tempfile
import time
import timeit
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from _report import emit

STRATEGIES = ("RoundRobin", "LeastRequest", "PeakEWMA", "Maglev", "BoundedLoad")
SIZES = (3, 1000)


def load(src: str, alias: str, scratch: Path) -> ModuleType:
    """Import ``<src>/tenantlb`` as the package *alias*."""
    target = scratch / alias
    shutil.copytree(Path(src) / "tenantlb", target)
    spec = importlib.util.spec_from_file_location(alias, target / "__init__.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


def cells(tlb: Any, n_admit: int) -> dict[str, Callable[[], object]]:
    out: dict[str, Callable[[], object]] = {}
    for name in STRATEGIES:
        for size in SIZES:
            urls = [f"http://10.0.{i // 250}.{i % 250}:8000" for i in range(size)]
            acquire = tlb.Pool(urls, getattr(tlb, name)()).acquire

            def cycle(acquire: Callable[[], Any] = acquire) -> None:
                with acquire() as lease:
                    lease.record(status=200)

            out[f"{name} n={size} cycle"] = cycle

    key = "sk-tenant-000001-0123456789abcdef"
    tenant = tlb.Tenant(
        "t1",
        api_keys=[tlb.hash_api_key(key)],
        upstream="shared",
        limits=[tlb.Rate(1e9, per=1.0)],
        max_concurrency=100,
    )
    pool = tlb.Pool([f"http://10.0.0.{i}:8000" for i in range(1, 11)], tlb.RoundRobin())
    gateway = tlb.Gateway(registry=tlb.TenantRegistry([tenant]), pools={"shared": pool})
    headers = [("x-api-key", key)]

    async def admit_many() -> None:
        for _ in range(n_admit):
            async with gateway.admit(tlb.RequestInfo("GET", "/v1/chat", headers)) as ticket:
                ticket.record(status=200)

    out["gateway admit round trip"] = lambda: asyncio.run(admit_many())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("-n", type=int, default=20_000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # Maglev's small-table warning at 1000 endpoints
    with tempfile.TemporaryDirectory() as tmp:
        trees = {
            "before": load(args.before, "tenantlb_before", Path(tmp)),
            "after": load(args.after, "tenantlb_after", Path(tmp)),
        }
        n_admit = max(args.n // 10, 100)
        built = {label: cells(tlb, n_admit) for label, tlb in trees.items()}
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):
            for cell in built["before"]:
                for label in ("before", "after"):  # interleaved: noise hits both alike
                    stmt = built[label][cell]
                    gc.collect()
                    timer = timeit.Timer(stmt, timer=time.thread_time)
                    if cell.startswith("gateway"):
                        us = timer.timeit(number=1) / n_admit * 1e6
                    else:
                        us = timer.timeit(number=args.n) / args.n * 1e6
                    best[cell, label] = min(us, best.get((cell, label), us))
    print(f"# before: {args.before}  after: {args.after}  (best of {args.rounds} rounds)")
    print("| cell | before us | after us | after / before |")
    print("|---|---|---|---|")
    for cell in built["before"]:
        before, after = best[cell, "before"], best[cell, "after"]
        print(f"| {cell} | {before:.2f} | {after:.2f} | {after / before:.3f} |")
        emit(f"{cell}: after / before", after / before, "x", better="lower")


if __name__ == "__main__":
    main()
