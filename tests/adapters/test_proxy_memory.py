"""Streaming through ProxyApp keeps memory bounded: peak RSS of the proxy process, measured."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.adapters.conftest import KEY
from tests.support.backends import BackendProcess, free_port, wait_for_port

SUPPORT = Path(__file__).resolve().parents[1] / "support"
CHUNK = 65536


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the highest resident set size the process has had, in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def stream_through_proxy(size: int, client: str = "httpcore") -> int:
    """Upload and download *size* bytes through a ProxyApp process (with the upstream *client*);
    return its peak RSS growth in bytes."""
    with BackendProcess("big") as backend:
        port = free_port()
        env = dict(os.environ, PROXY_KEY=KEY, PROXY_BACKENDS=backend.url, PROXY_CLIENT=client)
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--app-dir", str(SUPPORT), "proxy_server:app",
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                "--no-access-log", "--no-proxy-headers",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(port, 15.0, proc)
            url = f"http://127.0.0.1:{port}"
            headers = {"x-api-key": KEY}
            with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                # Warm up (imports, pools, the first buffers) so the baseline is the steady state.
                assert client.post("/upload", content=b"w" * 4 * CHUNK).json()["size"] == 4 * CHUNK
                assert len(client.get(f"/bytes/{4 * CHUNK}").content) == 4 * CHUNK
                baseline = peak_rss_kib(proc.pid)

                def body() -> Iterator[bytes]:
                    block = b"u" * CHUNK
                    for _ in range(size // CHUNK):
                        yield block

                uploaded = client.post("/upload", content=body())
                assert uploaded.json()["size"] == size // CHUNK * CHUNK
                received = 0
                with client.stream("GET", f"/bytes/{size}") as response:
                    assert response.status_code == 200
                    for chunk in response.iter_raw():
                        received += len(chunk)
                assert received == size
                return (peak_rss_kib(proc.pid) - baseline) * 1024
        finally:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("client", ["httpcore", "httptools"])
def test_forty_megabytes_each_way_in_bounded_memory(client: str) -> None:
    """40 MB up and 40 MB down through the proxy grow its peak RSS by less than 20 MB (the CI variant)."""
    growth = stream_through_proxy(40 * 1024 * 1024, client)
    assert growth < 20 * 1024 * 1024, f"peak RSS grew by {growth / 1e6:.1f} MB"


@pytest.mark.soak
@pytest.mark.parametrize("client", ["httpcore", "httptools"])
def test_hundred_megabytes_each_way_in_bounded_memory(client: str) -> None:
    """100 MB up and 100 MB down through the proxy grow its peak RSS by less than 50 MB."""
    growth = stream_through_proxy(100 * 1024 * 1024, client)
    print(f"peak RSS growth for 100 MB each way: {growth / 1e6:.1f} MB")
    assert growth < 50 * 1024 * 1024, f"peak RSS grew by {growth / 1e6:.1f} MB"
