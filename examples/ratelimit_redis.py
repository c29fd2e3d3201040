"""Two worker processes share one quota through Redis (this example starts its own redis-server)."""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import redis
import redis.asyncio

import tenantlb as tlb


def worker(url: str, results: multiprocessing.Queue[int]) -> None:
    async def run() -> int:
        client = redis.asyncio.Redis.from_url(url)
        limiter = tlb.RateLimiter(tlb.Rate(30, per=3600), store=tlb.RedisStore(client))
        decisions = await asyncio.gather(*(limiter.acquire("acme") for _ in range(25)))
        await client.aclose()
        return sum(d.allowed for d in decisions)

    results.put(asyncio.run(run()))


def main() -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not on PATH; nothing to show")
        return 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        admin = redis.Redis(port=port)
        for _ in range(250):
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        admin.close()
        url = f"redis://127.0.0.1:{port}/0"
        results: multiprocessing.Queue[int] = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=worker, args=(url, results)) for _ in range(2)]
        for p in procs:
            p.start()
        admitted = [results.get(timeout=30) for _ in procs]
        for p in procs:
            p.join()
        print(f"two processes x 25 requests, quota 30: admitted {admitted} = {sum(admitted)}")
        assert sum(admitted) == 30
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
