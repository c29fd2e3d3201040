"""Client-side balancing with httpx: three local backends, one of them broken, health checks on.

    python examples/httpx_balancing.py

Starts three tiny HTTP servers on loopback ("a" and "b" answer 200, "c" answers 503 to
everything, its health check included), balances an httpx.AsyncClient across them with
`AsyncBalancingTransport`, and shows that the health checker takes "c" out of rotation, that
retries hide its 503s before that, and that no lease is left in flight.
"""

from __future__ import annotations

from collections import Counter

import anyio
import anyio.abc
import httpx

import tenantlb as tlb
from tenantlb.adapters.httpx import AsyncBalancingTransport


async def serve(name: str, status: int, *, task_status: anyio.abc.TaskStatus[int]) -> None:
    """An HTTP/1.1 server on 127.0.0.1 answering every request with *status* and its name."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += await stream.receive()
                body = name.encode()
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                await stream.send(head.encode() + body)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
    await listener.serve(handle)


async def main() -> None:
    async with anyio.create_task_group() as servers:
        ports = [
            await servers.start(serve, "a", 200),
            await servers.start(serve, "b", 200),
            await servers.start(serve, "c", 503),
        ]
        pool = tlb.Pool(
            [f"http://127.0.0.1:{port}" for port in ports],
            outlier_detector=tlb.OutlierDetector(consecutive_5xx=3),
        )
        checker = tlb.HealthChecker(
            pool, probe=tlb.HTTPProbe("/healthz"), interval=0.5, timeout=0.2
        )
        transport = AsyncBalancingTransport(pool, health=checker)
        down = anyio.Event()
        pool.subscribe(lambda event: down.set() if event.kind == "unhealthy" else None)

        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            # Every GET succeeds: a 503 from "c" is retried on another endpoint.
            answers = Counter([(await client.get("/hello")).text for _ in range(30)])
            print("answers:", dict(sorted(answers.items())))
            assert set(answers) <= {"a", "b"}

            with anyio.fail_after(5):
                await down.wait()  # the health checker took "c" out of rotation
            before = {e.url: e.requests for e in pool.stats().endpoints}
            for _ in range(30):
                assert (await client.get("/hello")).status_code == 200
            after = {e.url: e.requests for e in pool.stats().endpoints}
            dead = f"http://127.0.0.1:{ports[2]}"
            print("requests to c after it was marked unhealthy:", after[dead] - before[dead])
            assert after[dead] == before[dead]
            print("available endpoints:", pool.stats().available, "of", pool.stats().total)

        # Leaving the client stopped the checker (it puts "c" back) and closed the connections.
        stats = pool.stats()
        print("in flight:", stats.in_flight)
        print("retry budget:", transport.retry_budget.stats())
        assert stats.in_flight == 0
        servers.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
