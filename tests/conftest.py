"""Shared fixtures: both anyio backends, a manual clock, and a real redis-server on a free port."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tenantlb.testing import ManualClock

# CI must be reproducible: property tests draw the same examples on every run ("ci", the default).
# Explore new ones locally with `pytest --hypothesis-profile=explore`.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("TENANTLB_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """Run every async test on asyncio and on trio."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _collector_as_it_was() -> Iterator[None]:
    """Undo what a ProxyApp served in this process did to the garbage collector (``tune_gc``):
    every test runs with the interpreter's settings, and garbage is collected as usual."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A real redis-server on loopback that a test may stop and start again (same port)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tenantlb-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        msg = f"redis-server did not start on port {self.port}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)


def _redis_binary() -> str:
    found = os.environ.get("TENANTLB_REDIS_SERVER") or shutil.which("redis-server")
    if found is None:
        msg = "redis-server not found: install it (apt-get install redis-server) or set TENANTLB_REDIS_SERVER"
        raise RuntimeError(msg)
    return found


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped and cleaned up afterwards."""
    server = RedisServer(_redis_binary())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session, flushed by `redis_url` before each test."""
    with running_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.start()  # a previous test may have stopped it
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server for tests that kill and restart it."""
    with running_redis() as server:
        yield server
