"""Discovery benchmarks: what a refresh of 1,000 endpoints costs.

    python benchmarks/discovery.py [--endpoints 1000] [--rounds 200]

Part 1 (no I/O): one `Discovery.refresh()` round whose in-memory source answers 1,000 endpoints,
(a) unchanged, (b) with one endpoint replaced, next to a bare `Pool.update` of the same list — the
runner skips no-op updates, so (a) is compared with what always calling `update` would cost. For
RoundRobin, PeakEWMA and Maglev (whose table rebuild dominates an applied update).

Part 2 (real DNS): dnsmasq on loopback serving 1,000 A records for one name (the answer is
truncated over UDP and fetched again over TCP, as in production); the raw dnspython lookup next to a
full `DNSDiscovery.refresh()` on asyncio and trio, and the ratio. Skipped if dnsmasq is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from _report import emit

import tenantlb as tlb


class Answers:
    """An in-memory source whose answer the benchmark swaps between rounds."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    async def resolve(self) -> list[str]:
        return self.urls


def per_round(fn: Callable[[], object], rounds: int) -> float:
    """Median seconds per call over 5 batches."""
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        samples.append((time.perf_counter() - start) / rounds)
    return statistics.median(samples)


async def aper_round(fn: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            await fn()  # type: ignore[misc]
        samples.append((time.perf_counter() - start) / rounds)
    return statistics.median(samples)


def part1(n: int, rounds: int) -> None:
    print(f"Part 1: one refresh round, {n} endpoints, in-memory source (median of 5 batches)")
    print(
        f"{'balancer':<12} {'unchanged':>11} {'update() of same':>17} {'one replaced':>13}"
        f" {'ratio same/unchanged':>21}"
    )
    urls = [f"http://10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000" for i in range(n)]
    for name, make in (
        ("RoundRobin", tlb.RoundRobin),
        ("PeakEWMA", tlb.PeakEWMA),
        ("Maglev", lambda: tlb.Maglev(table_size=100_003)),
    ):
        pool = tlb.Pool(urls, balancer=make())
        source = Answers(list(urls))
        discovery = tlb.Discovery(pool, source, interval=60.0)

        async def unchanged(d: tlb.Discovery = discovery) -> None:
            await d.refresh()

        async def measure(
            d: tlb.Discovery = discovery, s: Answers = source, p: tlb.Pool = pool
        ) -> tuple[float, float, float]:
            same = await aper_round(unchanged, rounds)
            naive = per_round(lambda: p.update(urls), max(rounds // 10, 5))
            other = [*urls[:-1], "http://10.255.255.255:8000"]
            flip = [other, urls]
            state = {"i": 0}

            async def replaced() -> None:
                s.urls = flip[state["i"] % 2]
                state["i"] += 1
                await d.refresh()

            changed = await aper_round(replaced, max(rounds // 10, 5))
            return same, naive, changed

        same, naive, changed = anyio.run(measure)
        print(
            f"{name:<12} {same * 1e6:>9.0f}us {naive * 1e6:>15.0f}us {changed * 1e6:>11.0f}us"
            f" {naive / same:>20.1f}x"
        )
        emit(f"refresh, unchanged answer, {name}", same * 1e3, "ms", better="lower")
        emit(f"refresh, one endpoint replaced, {name}", changed * 1e3, "ms", better="lower")
        emit(f"pool.update() of the same list / refresh, {name}", naive / same, "x")


def free_port() -> int:
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
    raise RuntimeError("no free port")


def part2(n: int, rounds: int) -> None:
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.access(binary, os.X_OK):
        print("\nPart 2 skipped: dnsmasq not installed")
        return
    import dns.asyncbackend
    import dns.asyncresolver
    import dns.nameserver

    workdir = Path(tempfile.mkdtemp(prefix="tenantlb-bench-dns-"))
    hosts = workdir / "hosts"
    hosts.write_text(
        "".join(f"10.{i // 65536}.{i // 256 % 256}.{i % 256} big.internal\n" for i in range(n))
    )
    (workdir / "empty.conf").write_text("")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--no-daemon",
            "--log-facility=-",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={hosts}",
            f"--conf-file={workdir / 'empty.conf'}",
            f"--port={port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--local=/internal/",
            "--local-ttl=30",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        print(
            f"\nPart 2: DNS refresh of {n} A records from dnsmasq on loopback (UDP truncated -> TCP)"
        )
        print(f"{'backend':<8} {'raw dnspython':>14} {'DNSDiscovery.refresh':>21} {'ratio':>6}")
        for backend in ("asyncio", "trio"):

            async def measure() -> tuple[float, float, int]:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", port)]
                be = dns.asyncbackend.get_backend(dns.asyncbackend.sniff())

                async def raw() -> None:
                    await resolver.resolve("big.internal", "A", backend=be)

                pool = tlb.Pool([], balancer=tlb.RoundRobin())
                discovery = tlb.DNSDiscovery(
                    pool,
                    "big.internal",
                    port=8000,
                    family="ipv4",
                    nameservers=[f"127.0.0.1:{port}"],
                )
                stats = await discovery.refresh()
                assert stats.last_outcome == "updated", stats

                async def refresh() -> None:
                    await discovery.refresh()

                raw_s = await aper_round(raw, rounds)
                ours = await aper_round(refresh, rounds)
                return raw_s, ours, len(pool)

            raw_s, ours, size = anyio.run(measure, backend=backend)
            assert size == n, size
            print(
                f"{backend:<8} {raw_s * 1e3:>12.2f}ms {ours * 1e3:>19.2f}ms {ours / raw_s:>5.2f}x"
            )
            emit(
                f"DNSDiscovery.refresh / raw dnspython, {backend}",
                ours / raw_s,
                "x",
                better="lower",
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    part1(args.endpoints, args.rounds)
    part2(args.endpoints, max(args.rounds // 10, 10))


if __name__ == "__main__":
    main()
