"""Redis fixtures for the rate-limit tests: a real 3-master Redis Cluster, and a target fixture
that runs a test against one redis-server and against the cluster.

The cluster is three ``redis-server --cluster-enabled yes`` processes on free loopback ports
(each also needs its bus port, +10000, free), joined and given all 16384 slots by
``redis-cli --cluster create``, with ``cluster-require-full-coverage no`` so the surviving masters
keep serving when one dies (as an operator who wants that sets it).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from tenantlb import RedisStore
from tests.conftest import RedisServer, _redis_binary

FAST_FAIL: dict[str, Any] = {
    "socket_timeout": 1.0,
    "socket_connect_timeout": 1.0,
    "retry": Retry(NoBackoff(), 0),
}


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(n: int) -> list[int]:
    """*n* ports whose cluster bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 45000)
        if port not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisClusterServers:
    """Three real redis-server masters joined into a cluster; a test may kill one."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.ports = _cluster_ports(3)
        self.dir = tempfile.mkdtemp(prefix="tenantlb-cluster-")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        for port in self.ports:
            self.procs[port] = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"{self.dir}/nodes-{port}.conf",
                    "--cluster-node-timeout", "2000",
                    "--cluster-require-full-coverage", "no",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", self.dir,
                    "--dbfilename", f"dump-{port}.rdb",
                    "--loglevel", "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not all(_ping(p) for p in self.ports):
            if time.monotonic() > deadline:
                msg = f"redis-server (cluster) did not start on ports {self.ports}"
                raise RuntimeError(msg)
            time.sleep(0.02)
        cli = shutil.which("redis-cli") or "redis-cli"
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while not self._ready():
            if time.monotonic() > deadline:
                msg = "the Redis Cluster did not become ready"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def _ready(self) -> bool:
        for port in self.ports:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                info = client.cluster("info")
                slots = client.cluster("slots")
            except redis.RedisError:
                return False
            finally:
                client.close()
            if info.get("cluster_state") != "ok" or len(slots) != 3:
                return False
        return True

    def kill(self, index: int) -> None:
        """SIGKILL master *index*: its slots stay assigned to it, so its keys are unreachable."""
        proc = self.procs.pop(self.ports[index])
        proc.kill()
        proc.wait(timeout=10)

    def port_of(self, key: str | bytes) -> int:
        """The port of the master that holds *key*'s slot."""
        slot = redis.cluster.key_slot(key.encode() if isinstance(key, str) else key)
        client = redis.Redis(port=self.ports[0], socket_timeout=1)
        try:
            for start, end, *nodes in client.cluster("slots"):
                if start <= slot <= end:
                    return int(nodes[0][1])
        finally:
            client.close()
        msg = f"slot {slot} is not assigned"
        raise LookupError(msg)

    def flush(self) -> None:
        for port in self.procs:
            client = redis.Redis(port=port, socket_timeout=2)
            try:
                client.flushall()
                client.script_flush()
            finally:
                client.close()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(timeout=10)
        self.procs.clear()


@contextlib.contextmanager
def running_cluster() -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster on free loopback ports, stopped and cleaned up afterwards."""
    servers = RedisClusterServers(_redis_binary())
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()
        shutil.rmtree(servers.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """One 3-master Redis Cluster for the session, flushed by `redis_target` before each test."""
    with running_cluster() as servers:
        yield servers


class Target:
    """Where a test's Redis lives: one redis-server or the cluster; builds clients for it.

    Cluster clients are built from host and port: redis-py's sync ``RedisCluster.from_url``
    leaks its startup connection (a ResourceWarning) once keys are spread over the nodes.
    """

    def __init__(self, kind: str, url: str, ports: list[int]) -> None:
        self.kind = kind
        self.url = url
        self.ports = ports
        self.port = ports[0]

    def master_of(self, key: bytes) -> int:
        """The port of the master that holds *key*'s slot."""
        cluster = RedisClusterServers.__new__(RedisClusterServers)
        cluster.ports = self.ports
        return cluster.port_of(key)

    def script_flush(self) -> None:
        """Forget every cached script (as a restart would), on every master."""
        for port in self.ports:
            client = redis.Redis(port=port, socket_timeout=2)
            try:
                client.script_flush()
            finally:
                client.close()

    def __repr__(self) -> str:
        return f"Target({self.kind})"

    def async_client(self, **options: Any) -> Any:
        options = {**FAST_FAIL, **options}
        if self.kind == "cluster":
            options.pop("max_connections", None)
            return redis.asyncio.RedisCluster(host="127.0.0.1", port=self.port, **options)
        return redis.asyncio.Redis.from_url(self.url, **options)

    def sync_client(self, **options: Any) -> Any:
        options = {**FAST_FAIL, **options}
        if self.kind == "cluster":
            return redis.RedisCluster(host="127.0.0.1", port=self.port, **options)
        return redis.Redis.from_url(self.url, **options)

    @contextlib.asynccontextmanager
    async def store(self, backend: tuple[str, Any], **kwargs: Any) -> AsyncIterator[RedisStore]:
        """A RedisStore on the asyncio client under asyncio; on a sync client under trio.

        Its timeout is generous (a loaded CI machine is not an outage) unless a test sets one.
        """
        kwargs.setdefault("timeout", 10.0)
        if backend[0] == "trio":
            client = self.sync_client()
            try:
                yield RedisStore(client, **kwargs)
            finally:
                client.close()
            return
        aclient = self.async_client()
        try:
            yield RedisStore(aclient, **kwargs)
        finally:
            await aclient.aclose()


@pytest.fixture(params=["server", "cluster"])
def redis_target(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Target]:
    """The same test against one redis-server and against a 3-master cluster (both flushed)."""
    if request.param == "server":
        redis_server.start()
        redis_server.flush()
        yield Target("server", redis_server.url, [redis_server.port])
        return
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    cluster.flush()
    yield Target("cluster", cluster.url, list(cluster.procs))
