"""A real DNS server for the discovery tests: dnsmasq on a free loopback port, with its own hosts
file (A/AAAA records, reloaded on SIGHUP) and SRV records (in its conf file, read at start: a
change restarts it). Names under ``.internal`` are dnsmasq's own (``--local``): a name it does not
hold is NXDOMAIN; names elsewhere are REFUSED (no upstream servers)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.nameserver
import dns.resolver
import pytest

TTL = 7  # dnsmasq's --local-ttl: the TTL of every record it serves here


def free_udp_tcp_port() -> int:
    """A loopback port free for both TCP and UDP (dnsmasq listens on both)."""
    for _ in range(100):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    msg = "no free loopback port for TCP and UDP"
    raise RuntimeError(msg)


class Dnsmasq:
    """One dnsmasq process; `set_hosts` and `set_srv` change what it serves and wait until it does."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_udp_tcp_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tenantlb-dnsmasq-"))
        self.hosts_file = self.dir / "hosts"
        self.conf_file = self.dir / "dnsmasq.conf"
        self.hosts: dict[str, list[str]] = {}
        self.srv: list[tuple[str, str, int, int, int]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_hosts()
        self._write_conf()

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--no-daemon",  # foreground; no pid file, no change of user
                "--log-facility=-",
                "--no-resolv",
                "--no-hosts",
                f"--addn-hosts={self.hosts_file}",
                f"--conf-file={self.conf_file}",
                f"--port={self.port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                f"--local-ttl={TTL}",
                "--local=/internal/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until(self._listening)
        self._wait_until(lambda: self._serves("ready.internal", ["127.0.0.1"]))

    def stop(self) -> None:
        """Kill it (SIGKILL): an unreachable DNS server from then on."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def set_hosts(self, hosts: Mapping[str, Sequence[str]]) -> None:
        """Serve exactly these A/AAAA records (SIGHUP re-reads the hosts file)."""
        gone = set(self.hosts) - set(hosts)
        self.hosts = {name: list(addresses) for name, addresses in hosts.items()}
        self._write_hosts()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)
            expected = {n: sorted(a for a in addrs if ":" not in a) for n, addrs in hosts.items()}
            expected.update({name: [] for name in gone})  # NXDOMAIN once dnsmasq re-read
            for name, want in expected.items():
                self._wait_until(lambda n=name, w=want: self._serves(n, w))

    def set_srv(self, records: Sequence[tuple[str, str, int, int, int]]) -> None:
        """Serve these SRV records ``(name, target, port, priority, weight)``; restarts dnsmasq."""
        self.srv = list(records)
        self._write_conf()
        if self.proc is not None:
            self.stop()
            self.start()

    def _write_hosts(self) -> None:
        lines = [f"{a} {name}" for name, addresses in self.hosts.items() for a in addresses]
        _atomic_write(self.hosts_file, "".join(line + "\n" for line in lines))

    def _write_conf(self) -> None:
        lines = ["host-record=ready.internal,127.0.0.1"]
        lines += [f"srv-host={n},{t},{p},{prio},{w}" for n, t, p, prio, w in self.srv]
        _atomic_write(self.conf_file, "".join(line + "\n" for line in lines))

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
        except OSError:
            return False
        return True

    def _serves(self, name: str, addresses: list[str]) -> bool:
        got = self._answers(name)
        return got is not None and sorted(got) == addresses

    def _answers(self, name: str) -> list[str] | None:
        # Test plumbing, not the code under test: a plain synchronous query.
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", self.port)]
        try:
            answer = resolver.resolve(name, "A", lifetime=0.5, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException:
            return None
        return [r.address for r in answer.rrset] if answer.rrset is not None else []

    def _wait_until(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.01)
        msg = f"dnsmasq on port {self.port} did not serve the expected records"
        raise RuntimeError(msg)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _dnsmasq_binary() -> str:
    found = (
        os.environ.get("TENANTLB_DNSMASQ")
        or shutil.which("dnsmasq")
        or (os.access("/usr/sbin/dnsmasq", os.X_OK) and "/usr/sbin/dnsmasq")
    )
    if not found:
        msg = "dnsmasq not found: apt-get install dnsmasq-base, or set TENANTLB_DNSMASQ"
        raise RuntimeError(msg)
    return found


@pytest.fixture
def dnsmasq() -> Iterator[Dnsmasq]:
    """A private dnsmasq (tests kill and restart it), stopped and cleaned up afterwards."""
    server = Dnsmasq(_dnsmasq_binary())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
