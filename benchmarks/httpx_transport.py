"""httpx transport benchmark: `AsyncBalancingTransport` vs a plain `httpx.AsyncHTTPTransport`.

    python benchmarks/httpx_transport.py [--requests 3000] [--rounds 5] [--concurrency 64]

Both clients send GETs, ``--concurrency`` at a time, to the same minimal keep-alive HTTP server on
loopback (a separate process, so its CPU is not the client's). The balancing client's pool holds
that one server (default balancer, PeakEWMA), so every request pays the whole per-request path
(pool pick, lease, URL rewrite, retry bookkeeping, leased body) and the I/O is identical. Rounds
alternate plain / balancing in one run; each pair of rounds gives a throughput ratio
(balancing / plain, target >= 0.95) and the median of those ratios is reported, with the best
round of each side. Because wall-clock throughput swings on a shared machine, the client's CPU
time per request (``time.process_time``; the server is another process) is reported too: its
ratio (plain / balancing) says what the balancing path costs when the client is CPU-bound.
The same on trio and, for the sync twin, with ``httpx.Client`` from 8 threads.

Last, the transport's own cost without any I/O: ``handle_async_request`` + ``aclose`` of the
response through the balancing transport vs. straight on a null transport that returns a
ready response, in CPU microseconds per request.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
from _report import emit

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


Sample = tuple[float, float]  # (requests per second, client CPU microseconds per request)


async def async_round(
    transport: httpx.AsyncBaseTransport, base_url: str, n: int, concurrency: int
) -> Sample:
    """Requests per second and CPU per request for *n* GETs, *concurrency* at a time."""
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

        start, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6


def sync_round(transport: httpx.BaseTransport, base_url: str, n: int, threads: int) -> Sample:
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

        start, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(threads) as executor:
            for future in [executor.submit(worker) for _ in range(threads)]:
                future.result()
        return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6


class NullTransport(httpx.AsyncBaseTransport):
    """Answers 200 at once: what is left of a request when the I/O costs nothing."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"ok"))


async def overhead_us(rounds: int = 9, n: int = 5000) -> tuple[float, float]:
    """Median CPU us per request on a null transport, without and with the balancing transport."""
    null = NullTransport()
    balancing = AsyncBalancingTransport(tlb.Pool(["http://127.0.0.1:8000"]), transport=null)
    request = httpx.Request("GET", "http://service/v1/items?page=2")

    async def loop(transport: httpx.AsyncBaseTransport) -> float:
        start = time.process_time()
        for _ in range(n):
            response = await transport.handle_async_request(request)
            await response.aclose()
        return (time.process_time() - start) / n * 1e6

    plain, lb = [], []
    for _ in range(rounds):
        plain.append(await loop(null))
        lb.append(await loop(balancing))
    return statistics.median(plain), statistics.median(lb)


@dataclasses.dataclass
class Row:
    name: str
    plain: float  # best requests/s
    balancing: float
    ratio: float  # median over pairs of rounds, balancing / plain throughput
    plain_cpu: float  # median CPU us per request
    balancing_cpu: float


def compare(
    name: str, rounds: int, plain: Callable[[], Sample], balancing: Callable[[], Sample]
) -> Row:
    pairs = [(plain(), balancing()) for _ in range(rounds)]
    return Row(
        name=name,
        plain=max(p[0] for p, _ in pairs),
        balancing=max(b[0] for _, b in pairs),
        ratio=statistics.median(b[0] / p[0] for p, b in pairs),
        plain_cpu=statistics.median(p[1] for p, _ in pairs),
        balancing_cpu=statistics.median(b[1] for _, b in pairs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    n, c = args.requests, args.concurrency
    proc, url = start_server()
    try:
        rows = []
        for backend in ("asyncio", "trio"):

            def plain(backend: str = backend) -> Sample:
                transport = httpx.AsyncHTTPTransport(limits=limits(c))
                return anyio.run(async_round, transport, url, n, c, backend=backend)

            def balancing(backend: str = backend) -> Sample:
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
    null_us, balancing_us = anyio.run(overhead_us)

    print(f"Python {platform.python_version()}, httpx {httpx.__version__}, {platform.machine()}")
    print(f"{n} GETs per round, {args.rounds} alternating pairs of rounds\n")
    print(
        "| client | plain req/s (best) | balancing req/s (best) | throughput ratio (median)"
        " | CPU us/req plain | CPU us/req balancing | CPU ratio | target |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        target = ">= 0.95" if row.name.startswith("AsyncClient") else "-"
        emit(f"balancing / plain throughput, {row.name}", row.ratio, "x", better="higher")
        emit(f"plain / balancing CPU, {row.name}", row.plain_cpu / row.balancing_cpu, "x")
        print(
            f"| {row.name} | {row.plain:,.0f} | {row.balancing:,.0f} | {row.ratio:.3f}"
            f" | {row.plain_cpu:.0f} | {row.balancing_cpu:.0f}"
            f" | {row.plain_cpu / row.balancing_cpu:.3f} | {target} |"
        )
    emit("transport cost without I/O", balancing_us - null_us, "us", better="lower")
    print(
        f"\nWithout I/O (null transport): {null_us:.1f} us plain, {balancing_us:.1f} us through"
        f" AsyncBalancingTransport: {balancing_us - null_us:.1f} us added per request"
    )


if __name__ == "__main__":
    main()
