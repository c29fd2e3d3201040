"""Active health checks and outlier ejection on two real loopback backends (one of them failing)."""

from __future__ import annotations

import anyio
import anyio.abc

import tenantlb as tlb


async def serve(status: int, *, task_status: anyio.abc.TaskStatus[int]) -> None:
    """A tiny HTTP/1.1 server on 127.0.0.1 that answers every request with *status*."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                while b"\r\n\r\n" not in await stream.receive():
                    pass
                await stream.send(
                    f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
                )
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
    await listener.serve(handle)


async def main() -> None:
    async with anyio.create_task_group() as tg:
        good = await tg.start(serve, 200)
        bad = await tg.start(serve, 503)
        pool = tlb.Pool(
            [f"http://127.0.0.1:{good}", f"http://127.0.0.1:{bad}"],
            balancer=tlb.RoundRobin(),
            outlier_detector=tlb.OutlierDetector(consecutive_5xx=5),
            on_event=lambda e: print(f"{e.kind:10} {e.url} {e.reason}"),
        )
        checker = tlb.HealthChecker(pool, tlb.HTTPProbe("/healthz"), interval=0.2, timeout=0.1)
        async with checker:
            down = anyio.Event()
            pool.subscribe(lambda e: down.set() if e.kind == "unhealthy" else None)
            with anyio.fail_after(5):
                await down.wait()
            with pool.acquire() as lease:
                print("picked", lease.url)
                lease.record(status=200)
            print(checker.stats().endpoints[1].last_reason)
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
