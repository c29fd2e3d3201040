"""ProxyApp under uvicorn vs asgiproxy vs nginx proxy_pass vs a direct call, measured with wrk.

One uvicorn backend process answers a small JSON body. In front of it, each in its own process:
``ProxyApp`` (key auth, one GCRA limit, a RoundRobin pool, X-Forwarded-*, pooled keep-alive httpcore
connections) under uvicorn, and the same with ``client="aiohttp"`` ("ProxyApp+aio"); asgiproxy (aiohttp's client, no auth/limits/balancing) under uvicorn;
nginx ``proxy_pass`` with upstream keep-alive (one worker); and the backend called directly.
wrk drives each with 32 connections; requests/s and p99 latency are printed with their ratios to
asgiproxy and to the direct call. Rounds are interleaved and the best kept.
Target: ProxyApp >= 1.0x asgiproxy's requests/s with a p99 no worse.

Run: python benchmarks/proxy.py [--duration S] [--rounds N] [--connections N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import emit

HERE = Path(__file__).resolve().parent
KEY = "sk-bench-0123456789abcdef"
WRK = shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def uvicorn(app: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), f"_proxy_apps:{app}",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--no-access-log", "--no-proxy-headers", "--backlog", "4096",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, **env})
    wait_for(port, proc)
    return proc


def nginx(port: int, upstream_port: int, workdir: str) -> subprocess.Popen[bytes]:
    conf = Path(workdir) / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""
    )
    assert NGINX is not None
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", workdir])
    wait_for(port, proc)
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, duration: float, connections: int) -> tuple[float, float, int]:
    """Requests/s, p99 latency (ms) and the number of requests of one wrk run."""
    assert WRK is not None
    out = subprocess.run(
        [WRK, "-t2", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "-H", f"x-api-key: {KEY}", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"errors from {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    match = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert match is not None, out
    value, unit = float(match.group(1)), match.group(2)
    p99 = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, p99, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if WRK is None:
        print("benchmarks/proxy.py needs wrk (apt-get install wrk); skipped")
        return
    procs: list[subprocess.Popen[bytes]] = []
    workdir = tempfile.mkdtemp(prefix="tenantlb-bench-nginx-")
    try:
        backend_port = free_port()
        procs.append(uvicorn("backend", backend_port, {}))
        upstream = f"http://127.0.0.1:{backend_port}"
        env = {"UPSTREAMS": upstream, "BENCH_KEY": KEY}
        targets: dict[str, int] = {"direct": backend_port}
        pids: dict[str, int] = {"direct": procs[0].pid}
        for name, app in (
            ("ProxyApp", "tenantlb_proxy"),
            ("ProxyApp+aio", "tenantlb_proxy_aiohttp"),
            ("asgiproxy", "asgiproxy_app"),
        ):
            port = free_port()
            procs.append(uvicorn(app, port, env))
            targets[name] = port
            pids[name] = procs[-1].pid
        if NGINX is not None:
            targets["nginx"] = free_port()
            procs.append(nginx(targets["nginx"], backend_port, workdir))
        else:
            print("nginx not found (apt-get install nginx): its row is left out")
        best: dict[str, tuple[float, float]] = {}
        cpu: dict[str, float] = {}  # proxy process CPU microseconds per request (lowest seen)
        for port in targets.values():  # warm up: imports, connection pools
            wrk(f"http://127.0.0.1:{port}/", 1.0, args.connections)
        for _ in range(args.rounds):
            for name, port in targets.items():
                before = cpu_seconds(pids[name]) if name in pids else 0.0
                rps, p99, total = wrk(f"http://127.0.0.1:{port}/", args.duration, args.connections)
                if name in pids:
                    used = (cpu_seconds(pids[name]) - before) / total * 1e6
                    cpu[name] = min(cpu.get(name, used), used)
                old = best.get(name)
                if old is None or rps > old[0]:
                    best[name] = (rps, p99)
        print(
            f"reverse proxies to one uvicorn backend, wrk {args.connections} connections, "
            f"{args.duration:g} s x {args.rounds} rounds (best)"
        )
        print(
            f"{'target':12s} {'req/s':>9s} {'p99 ms':>8s} {'x direct':>9s} {'x asgiproxy':>12s} "
            f"{'p99 x asgiproxy':>16s} {'CPU us/req':>11s}"
        )
        base_rps, base_p99 = best["asgiproxy"]
        for name, (rps, p99) in best.items():
            used = f"{cpu[name]:11.0f}" if name in cpu else f"{'-':>11s}"
            print(
                f"{name:12s} {rps:9.0f} {p99:8.2f} {rps / best['direct'][0]:9.2f} "
                f"{rps / base_rps:12.2f} {p99 / base_p99:16.2f} {used}"
            )
            emit(f"{name} req/s", rps, "req/s", better="higher")
            emit(f"{name} p99", p99, "ms", better="lower")
            if name != "direct":
                emit(f"{name} / direct req/s", rps / best["direct"][0], "x", better="higher")
            if name not in ("direct", "asgiproxy"):
                emit(f"{name} / asgiproxy req/s", rps / base_rps, "x", better="higher")
                emit(f"{name} / asgiproxy p99", p99 / base_p99, "x", better="lower")
            if name in cpu:
                emit(f"{name} CPU per request", cpu[name], "us", better="lower")
        print(
            "CPU us/req: the serving process's own CPU time per request (the backend's for direct)"
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
