"""Per-tenant quotas shared by 4 uvicorn workers through one Redis: the quota holds exactly.

    pip install 'tenantlb[asgi,redis,httpx]' && python examples/redis_workers.py

Starts a redis-server on a free loopback port, then `uvicorn --workers 4` serving an app behind
`TenantMiddleware` whose gateway keeps its rate-limit state in Redis (`RedisStore`). 300 concurrent
requests from one tenant whose quota is 100 an hour arrive at all four worker processes, and
exactly 100 are admitted: every worker decides against the same counters, atomically.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
from _serve import free_port

import tenantlb as tlb

QUOTA = 100
KEY = "sk-acme-workers"


def create_app() -> Any:
    """The app each worker runs (uvicorn --factory): its gateway's store is the shared Redis."""
    import redis.asyncio

    from tenantlb.adapters.asgi import TenantMiddleware

    store = tlb.RedisStore(redis.asyncio.Redis.from_url(os.environ["REDIS_URL"]))
    tenant = tlb.Tenant(
        "acme", api_keys=[tlb.hash_api_key(KEY)], limits=[tlb.Rate(QUOTA, per=3600)]
    )
    gateway = tlb.Gateway(registry=tlb.TenantRegistry([tenant]), pools={}, store=store)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = str(os.getpid()).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return TenantMiddleware(app, gateway=gateway)


def wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}")


async def hammer(url: str) -> tuple[Counter[int], Counter[str]]:
    statuses: Counter[int] = Counter()
    workers: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one() -> None:
            response = await client.get("/", headers={"x-api-key": KEY})
            statuses[response.status_code] += 1
            if response.status_code == 200:
                workers[response.text] += 1

        async with anyio.create_task_group() as tg:
            for _ in range(3 * QUOTA):
                tg.start_soon(one)
    return statuses, workers


def main() -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    redis_port, app_port = free_port(), free_port()
    workdir = tempfile.mkdtemp(prefix="tenantlb-example-")
    redis = subprocess.Popen(
        [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0")
    here = str(Path(__file__).resolve().parent)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "redis_workers:create_app",
            "--app-dir",
            here,
            "--workers",
            "4",
            "--port",
            str(app_port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    try:
        wait_for(app_port)  # a request without a key: 401, and the workers are up
        statuses, workers = anyio.run(hammer, f"http://127.0.0.1:{app_port}")
        print(f"admitted {statuses[200]} of {3 * QUOTA} (quota {QUOTA}), refused {statuses[429]}")
        print(f"served by {len(workers)} worker processes: {dict(workers)}")
        assert statuses[200] == QUOTA
        assert statuses[429] == 2 * QUOTA
    finally:
        server.terminate()
        server.wait(timeout=30)
        redis.terminate()
        redis.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
