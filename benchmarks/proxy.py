"""ProxyApp under uvicorn vs asgiproxy vs nginx proxy_pass vs a direct call, measured with wrk.

One uvicorn backend process answers a small JSON body. In front of it, each in its own process:
``ProxyApp`` (key auth, one GCRA limit, a RoundRobin pool, X-Forwarded-*, pooled keep-alive httpcore
connections) under uvicorn, and the same with ``client="aiohttp"`` ("ProxyApp+aio") and
``client="httptools"`` ("ProxyApp+ht"); asgiproxy
(aiohttp's client, no auth/limits/balancing) under uvicorn; nginx ``proxy_pass`` with upstream
keep-alive (one worker); and the backend called directly. Every uvicorn process runs with the same
settings (one worker, ``--http`` and ``--loop`` pinned, h11 and asyncio by default), so the
contenders differ only in the app.

wrk drives each with 32 connections, one after the other in rounds (A, B, C, A, B, C, ...): each
round's requests/s and p99 are divided by asgiproxy's *of the same round*, and the median ratio is
printed with its spread (min-max over the rounds), so load from other work on the machine mostly
cancels. "CPU us/req" is the serving process's own CPU time per request (the steadiest figure on a
busy machine). ``--baseline SRC`` adds "...@base" rows: the ProxyApp rows again, run from another
source tree (e.g. ``git archive main src | tar -x -C /tmp/base``), for before/after comparisons.
Target: ProxyApp >= 1.0x asgiproxy's requests/s with a p99 no worse.

``--instructions`` measures instead what no other load on the machine disturbs: each Python proxy
runs under valgrind (callgrind, counting only while wrk drives it with 8 connections), and the
instructions it executes per request are printed with their ratio to asgiproxy's.

Run: python benchmarks/proxy.py [--duration S] [--rounds N] [--connections N] [--only a,b]
[--baseline SRC] [--http h11|httptools] [--loop asyncio|uvloop] [--instructions]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


def uvicorn(
    app: str, port: int, env: dict[str, str], settings: list[str]
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), f"_proxy_apps:{app}",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--no-access-log", "--no-proxy-headers", "--backlog", "4096", "--workers", "1",
        *settings,
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


VALGRIND = shutil.which("valgrind")


def instructions(
    app: str, env: dict[str, str], settings: list[str], duration: float, workdir: str
) -> tuple[float, int]:
    """Instructions per request of *app* under uvicorn and callgrind, and the requests counted."""
    assert VALGRIND is not None
    port = free_port()
    out = Path(workdir) / f"callgrind.{app}.{port}"
    cmd = [
        VALGRIND, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), f"_proxy_apps:{app}",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--no-access-log", "--no-proxy-headers", "--workers", "1", *settings,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(port, proc, timeout=300.0)
        url = f"http://127.0.0.1:{port}/"
        wrk(url, 3.0, 8)  # warm up under valgrind: its translations, our caches
        control = ["callgrind_control"]
        subprocess.run([*control, "-i", "on", str(proc.pid)], capture_output=True, check=True)
        _, _, total = wrk(url, duration, 8)
        subprocess.run([*control, "-i", "off", str(proc.pid)], capture_output=True, check=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    counted = sum(
        int(line.split()[1])
        for part in Path(workdir).glob(f"{out.name}*")
        for line in part.read_text().splitlines()
        if line.startswith("totals:")
    )
    return counted / total, total


def main_instructions(
    args: argparse.Namespace, settings: list[str], wanted: Callable[[str], bool]
) -> None:
    """The ``--instructions`` mode: one contender after the other under callgrind."""
    if VALGRIND is None:
        print("--instructions needs valgrind (apt-get install valgrind)")
        return
    workdir = tempfile.mkdtemp(prefix="tenantlb-bench-callgrind-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backend_port = free_port()
        procs.append(uvicorn("backend", backend_port, {}, settings))
        env = {"UPSTREAMS": f"http://127.0.0.1:{backend_port}", "BENCH_KEY": KEY}
        contenders = with_baseline(env, args.baseline)
        counts = {
            name: instructions(app, app_env, settings, args.duration, workdir)
            for name, app, app_env in contenders
            if wanted(name)
        }
        print(
            f"instructions per request of each proxy process (callgrind), wrk 8 connections, "
            f"{args.duration:g} s counted; uvicorn --http {args.http} --loop {args.loop}"
        )
        print(f"{'target':17s} {'instructions/req':>16s} {'x asgiproxy':>11s} {'requests':>8s}")
        base_count = counts["asgiproxy"][0]
        for name, (per, total) in counts.items():
            print(f"{name:17s} {per:16,.0f} {per / base_count:11.3f} {total:8d}")
            emit(f"{name} instructions per request", per, "instructions", better="lower")
            if name != "asgiproxy":
                emit(
                    f"{name} / asgiproxy instructions per request",
                    per / base_count,
                    "x",
                    better="lower",
                )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


APPS = {  # name -> app in _proxy_apps
    "ProxyApp": "tenantlb_proxy",
    "ProxyApp+aio": "tenantlb_proxy_aiohttp",
    "ProxyApp+ht": "tenantlb_proxy_httptools",
    "asgiproxy": "asgiproxy_app",
}


def with_baseline(
    env: dict[str, str], baseline: str | None
) -> list[tuple[str, str, dict[str, str]]]:
    """Every app as (name, app, env); with *baseline*, each tenantlb app again from that tree."""
    contenders = [(name, app, env) for name, app in APPS.items()]
    if baseline:
        base = str(Path(baseline).resolve())
        contenders += [
            (f"{name}@base", app, {**env, "PYTHONPATH": base})
            for name, app in APPS.items()
            if name != "asgiproxy"
        ]
    return contenders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", default="", help="comma-separated targets (asgiproxy always)")
    parser.add_argument("--baseline", default="", help="another src/ tree for ...@base rows")
    parser.add_argument("--http", default="h11", help="uvicorn --http for every uvicorn process")
    parser.add_argument("--loop", default="asyncio", help="uvicorn --loop for every process")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions per request (valgrind)"
    )
    args = parser.parse_args()
    if WRK is None:
        print("benchmarks/proxy.py needs wrk (apt-get install wrk); skipped")
        return
    only = {name for name in args.only.split(",") if name}

    def wanted(name: str) -> bool:
        return not only or name in only or name == "asgiproxy"

    settings = ["--http", args.http, "--loop", args.loop]
    if args.instructions:
        main_instructions(args, settings, wanted)
        return
    procs: list[subprocess.Popen[bytes]] = []
    workdir = tempfile.mkdtemp(prefix="tenantlb-bench-nginx-")
    load_before = os.getloadavg()
    try:
        backend_port = free_port()
        procs.append(uvicorn("backend", backend_port, {}, settings))
        upstream = f"http://127.0.0.1:{backend_port}"
        env = {"UPSTREAMS": upstream, "BENCH_KEY": KEY}
        targets: dict[str, int] = {}
        pids: dict[str, int] = {}
        if wanted("direct"):
            targets["direct"] = backend_port
            pids["direct"] = procs[0].pid
        contenders = with_baseline(env, args.baseline)
        for name, app, app_env in contenders:
            if wanted(name):
                port = free_port()
                procs.append(uvicorn(app, port, app_env, settings))
                targets[name] = port
                pids[name] = procs[-1].pid
        if NGINX is not None and wanted("nginx"):
            targets["nginx"] = free_port()
            procs.append(nginx(targets["nginx"], backend_port, workdir))
        elif NGINX is None:
            print("nginx not found (apt-get install nginx): its row is left out")
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in targets}
        for port in targets.values():  # warm up: imports, connection pools
            wrk(f"http://127.0.0.1:{port}/", 1.0, args.connections)
        for _ in range(args.rounds):
            for name, port in targets.items():
                before = cpu_seconds(pids[name]) if name in pids else 0.0
                rps, p99, total = wrk(f"http://127.0.0.1:{port}/", args.duration, args.connections)
                used = (cpu_seconds(pids[name]) - before) / total * 1e6 if name in pids else 0.0
                runs[name].append((rps, p99, used))
        load_after = os.getloadavg()
        report(args, runs, load_before, load_after)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def report(
    args: argparse.Namespace,
    runs: dict[str, list[tuple[float, float, float]]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    """Medians, and each round's ratio to asgiproxy's of the same round (median, min-max)."""
    base = runs["asgiproxy"]
    print(
        f"reverse proxies to one uvicorn backend, wrk {args.connections} connections, "
        f"{args.duration:g} s x {args.rounds} interleaved rounds; uvicorn --http {args.http} "
        f"--loop {args.loop} --workers 1 for every uvicorn process; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"{'target':17s} {'req/s':>7s} {'p99 ms':>7s} {'x asgiproxy (min-max)':>22s} "
        f"{'p99 x asgiproxy (min-max)':>26s} {'CPU us/req':>10s}"
    )

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):5.2f} ({min(values):.2f}-{max(values):.2f})"

    note = f"median of {args.rounds} interleaved rounds, load average {load_before[0]:.1f}"
    for name, rows in runs.items():
        rps = [r[0] / b[0] for r, b in zip(rows, base, strict=True)]
        p99 = [r[1] / b[1] for r, b in zip(rows, base, strict=True)]
        cpu = statistics.median(r[2] for r in rows) if name != "nginx" else None
        rps_median = statistics.median(r[0] for r in rows)
        p99_median = statistics.median(r[1] for r in rows)
        print(
            f"{name:17s} {rps_median:7.0f} {p99_median:7.2f} {spread(rps):>22s} "
            f"{spread(p99):>26s} {'-' if cpu is None else f'{cpu:.0f}':>10s}"
        )
        emit(f"{name} req/s", rps_median, "req/s", better="higher", note=note)
        emit(f"{name} p99", p99_median, "ms", better="lower", note=note)
        if name != "asgiproxy":
            spread_note = f"{note}, min-max {min(rps):.2f}-{max(rps):.2f}"
            emit(
                f"{name} / asgiproxy req/s",
                statistics.median(rps),
                "x",
                better="higher",
                note=spread_note,
            )
            emit(f"{name} / asgiproxy p99", statistics.median(p99), "x", better="lower", note=note)
        if cpu is not None:
            emit(f"{name} CPU per request", cpu, "us", better="lower", note=note)
    print("CPU us/req: the serving process's own CPU time per request (the backend's for direct)")


if __name__ == "__main__":
    main()
