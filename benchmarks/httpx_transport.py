"""httpx transport benchmark: `AsyncBalancingTransport` vs a plain `httpx.AsyncHTTPTransport`.

    python benchmarks/httpx_transport.py [--requests 3000] [--rounds 5] [--concurrency 64]

Both clients send GETs, ``--concurrency`` at a time, to the same minimal keep-alive HTTP server on
loopback (a separate process, so its CPU is not the client's). The balancing client's pool holds
that one server (default balancer, PeakEWMA), so every request pays the whole per-request path
(pool pick, lease, URL rewrite, retry bookkeeping, leased body) and the I/O is identical. Rounds
alternate plain / balancing in one run and the best round of each is kept; the ratio is
balancing / plain throughput (target >= 0.95). The same on trio and, for the sync twin, with
``httpx.Client`` from 8 threads.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx

import tenantlb as tlb
from tenantlb.adapters.httpx import AsyncBalancingTransport, BalancingTransport

SERVER = textwrap.dedent(
    """
    import asyncio
    RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 2\\r\\n\\r\\nok"
    async def handle(reader, writer):
        try:
            while True:
                await reader.readuntil(b"\\r\\n\\r\\n")
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()
    asyncio.run(main())
    """
)


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def limits(concurrency: int) -> httpx.Limits:
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


async def async_round(
    transport: httpx.AsyncBaseTransport, base_url: str, n: int, concurrency: int
) -> float:
    """Requests per second for *n* GETs, *concurrency* at a time."""
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        for _ in range(concurrency):  # warm the connections
            await client.get("/")
        remaining = n

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                response = await client.get("/")
                assert response.status_code == 200

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        return n / (time.perf_counter() - start)


def sync_round(transport: httpx.BaseTransport, base_url: str, n: int, threads: int) -> float:
    with httpx.Client(transport=transport, base_url=base_url) as client:
        lock = threading.Lock()
        remaining = n

        def worker() -> None:
            nonlocal remaining
            while True:
                with lock:
                    if remaining <= 0:
                        return
                    remaining -= 1
                assert client.get("/").status_code == 200

        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as executor:
            for future in [executor.submit(worker) for _ in range(threads)]:
                future.result()
        return n / (time.perf_counter() - start)


def compare(
    name: str,
    rounds: int,
    plain: Callable[[], float],
    balancing: Callable[[], float],
) -> tuple[str, float, float, float]:
    best_plain = best_lb = 0.0
    for _ in range(rounds):
        best_plain = max(best_plain, plain())
        best_lb = max(best_lb, balancing())
    return name, best_plain, best_lb, best_lb / best_plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    n, c = args.requests, args.concurrency
    proc, url = start_server()
    try:
        rows = []
        for backend in ("asyncio", "trio"):

            def plain(backend: str = backend) -> float:
                transport = httpx.AsyncHTTPTransport(limits=limits(c))
                return anyio.run(async_round, transport, url, n, c, backend=backend)

            def balancing(backend: str = backend) -> float:
                transport = AsyncBalancingTransport(
                    tlb.Pool([url]), transport=httpx.AsyncHTTPTransport(limits=limits(c))
                )
                return anyio.run(async_round, transport, "http://service", n, c, backend=backend)

            rows.append(
                compare(f"AsyncClient, {backend}, {c} concurrent", args.rounds, plain, balancing)
            )

        t = args.threads
        rows.append(
            compare(
                f"Client, {t} threads",
                args.rounds,
                lambda: sync_round(httpx.HTTPTransport(limits=limits(t)), url, n, t),
                lambda: sync_round(
                    BalancingTransport(
                        tlb.Pool([url]), transport=httpx.HTTPTransport(limits=limits(t))
                    ),
                    "http://service",
                    n,
                    t,
                ),
            )
        )
    finally:
        proc.kill()
        proc.wait()

    print(f"Python {platform.python_version()}, httpx {httpx.__version__}, {platform.machine()}")
    print(f"{n} GETs per round, best of {args.rounds} alternating rounds\n")
    print("| client | plain req/s | balancing req/s | ratio | target |")
    print("|---|---|---|---|---|")
    for name, p, b, ratio in rows:
        target = ">= 0.95" if name.startswith("AsyncClient") else "-"
        print(f"| {name} | {p:,.0f} | {b:,.0f} | {ratio:.3f} | {target} |")


if __name__ == "__main__":
    main()
