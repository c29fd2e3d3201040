"""The live demo behind `python -m tenantlb demo`: real sockets, a real gateway, real traffic.

Six backends listen on loopback (uvicorn, in this process): a fast pair, one slow, one that starts
failing a third of the way in, one that is stopped (listener and connections closed) at 40 % and
comes back at 70 %, and one private to a tenant. `ProxyApp` runs under uvicorn in front of them with
three tenants: acme (shuffle-sharded on the shared pool, a generous quota), globex (the same pool, a
tight quota, so it sees 429s) and initech (its own private pool). An httpx client per tenant sends
real HTTP requests through `AsyncBalancingTransport` to the gateway for ``--duration`` seconds.

Shown live (with rich when installed, plain text without): each endpoint's share, p50/p99 latency,
health and ejections, and each tenant's admitted / 429 / 503 counts; a summary at the end.
"""

from __future__ import annotations

import importlib.util
import math
import socket
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import anyio

from ._events import Event
from .balancing import (
    Balancer,
    Endpoint,
    LeastRequest,
    PeakEWMA,
    Pool,
    Rendezvous,
    RoundRobin,
    WeightedRandom,
)
from .gateway import Gateway
from .health import HealthChecker, HTTPProbe, OutlierDetector
from .ratelimit import MemoryStore, Rate
from .tenants import Tenant, TenantRegistry, hash_api_key

__all__ = ["STRATEGIES", "run_live_demo"]

KEYS = {
    "acme": "sk-acme-demo-0123456789abcdef",
    "globex": "sk-globex-demo-0123456789abcdef",
    "initech": "sk-initech-demo-0123456789abcdef",
}
# name -> (latency in seconds, role)
BACKENDS = {
    "fast-1": (0.004, "fast"),
    "fast-2": (0.004, "fast"),
    "slow": (0.060, "slow"),
    "flaky": (0.004, "fails from 30 %"),
    "phoenix": (0.004, "stopped 40-70 %"),
    "private": (0.004, "initech only"),
}
WORKERS = {"acme": 6, "globex": 3, "initech": 2}
STRATEGIES: dict[str, Callable[[], Balancer]] = {
    "peak_ewma": PeakEWMA,
    "least_request": LeastRequest,
    "round_robin": RoundRobin,
    "weighted_random": WeightedRandom,
    "rendezvous": Rendezvous,
}

ASGIApp = Callable[[dict[str, Any], Any, Any], Any]


def run_live_demo(duration: float, strategy: str, tenants: int) -> int:
    """Run the live demo for *duration* seconds; returns the process exit code."""
    missing = [m for m in ("httpx", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"error: the live demo needs {' and '.join(missing)}: pip install 'tenantlb[demo]'"
            " (or run the in-memory simulation: python -m tenantlb demo --simulate)",
            file=sys.stderr,
        )
        return 2
    demo = _Demo(duration, strategy, tenants)
    try:
        anyio.run(demo.run)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping", file=sys.stderr)
        demo.summary()
        return 130
    return demo.summary()


class _Backend:
    """One backend: a tiny ASGI app under uvicorn on a fixed loopback port, stoppable."""

    def __init__(self, name: str, latency: float) -> None:
        self.name = name
        self.latency = latency
        self.failing = False
        self.port = _free_port()
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/healthz":
            await anyio.sleep(self.latency)
        status = 503 if self.failing else 200  # a failing backend fails its health check too
        body = b'{"backend": "%s"}' % self.name.encode()
        headers = [(b"content-type", b"application/json"), (b"x-backend", self.name.encode())]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def start(self, tg: Any) -> None:
        self._server = await _serve(tg, self.app, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(force=True)  # close open connections too, as a crash would
            self._server = None


class _Server:
    """A uvicorn server running in a task of ours (public uvicorn API only)."""

    def __init__(self, app: ASGIApp, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="error",
            lifespan="off",
            access_log=False,
            interface="asgi3",
        )
        self.server = uvicorn.Server(config)
        self.done = anyio.Event()

    async def serve(self) -> None:
        try:
            await self.server.serve()
        finally:
            self.done.set()

    async def stop(self, *, force: bool = False) -> None:
        self.server.should_exit = True
        self.server.force_exit = force
        await self.done.wait()


async def _serve(tg: Any, app: ASGIApp, port: int) -> _Server:
    server = _Server(app, port)
    tg.start_soon(server.serve)
    while not server.server.started:
        if server.done.is_set():
            msg = f"could not listen on 127.0.0.1:{port}"
            raise RuntimeError(msg)
        await anyio.sleep(0.01)
    return server


class _Demo:
    def __init__(self, duration: float, strategy: str, tenants: int) -> None:
        self.duration = duration
        self.strategy = strategy
        self.tenants = ("acme", "globex", "initech")[:tenants]
        self.backends = {name: _Backend(name, lat) for name, (lat, _) in BACKENDS.items()}
        self.latencies: defaultdict[str, list[float]] = defaultdict(list)
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.events: list[Event] = []
        self.notes: list[tuple[float, str]] = []
        self.gateway: Gateway | None = None
        self._servers: Any = None
        self.started = 0.0
        self.in_flight_end: int | None = None
        self.final_rows: list[tuple[str, ...]] | None = None

    # -- setup -------------------------------------------------------------------------------

    def build_gateway(self) -> Gateway:
        shared = [b for n, b in self.backends.items() if n != "private"]
        detector = OutlierDetector(
            consecutive_5xx=3, base_ejection_time=2.0, interval=1.0, max_ejection_percent=50
        )
        pool = Pool(
            [Endpoint(b.url, metadata={"name": b.name}) for b in shared],
            name="shared",
            balancer=STRATEGIES[self.strategy](),
            outlier_detector=detector,
            on_event=self.events.append,
        )
        private = Pool(
            [Endpoint(self.backends["private"].url, metadata={"name": "private"})],
            name="private",
            on_event=self.events.append,
        )
        checker = HealthChecker(pool, probe=HTTPProbe("/healthz"), interval=1.0, timeout=0.5)
        tenants = [
            Tenant(
                "acme",
                api_keys=[hash_api_key(KEYS["acme"])],
                upstream="shared",
                limits=[Rate(400, per=1.0)],
                max_concurrency=32,
                shard_size=4,
            ),
            Tenant(
                "globex",
                api_keys=[hash_api_key(KEYS["globex"])],
                upstream="shared",
                limits=[Rate(10, per=1.0, burst=5)],
                max_concurrency=8,
                shard_size=4,
            ),
            Tenant(
                "initech",
                api_keys=[hash_api_key(KEYS["initech"])],
                upstream="private",
                limits=[Rate(200, per=1.0)],
            ),
        ]
        return Gateway(
            registry=TenantRegistry(tenants),
            pools={"shared": pool, "private": private},
            store=MemoryStore(),
            services=[checker],
        )

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> None:
        from .adapters.asgi import ProxyApp

        self.gateway = gateway = self.build_gateway()
        gateway_port = _free_port()
        async with anyio.create_task_group() as servers:
            self._servers = servers
            for backend in self.backends.values():
                await backend.start(servers)
            try:
                async with gateway:  # runs the health checker
                    proxy = ProxyApp(gateway)
                    gateway_server = await _serve(servers, proxy, gateway_port)
                    try:
                        await self._traffic(f"http://127.0.0.1:{gateway_port}")
                    finally:
                        await gateway_server.stop()
                        await proxy.aclose()
                        pools = gateway.stats().pools.values()
                        self.in_flight_end = sum(p.in_flight for p in pools)
                        # The summary shows health as the traffic saw it: leaving the gateway
                        # stops the checker, which puts the endpoints it took out back in.
                        self.final_rows = self.rows()
            finally:  # backends go last, so no check sees them die
                for backend in self.backends.values():
                    await backend.stop()

    async def _traffic(self, gateway_url: str) -> None:
        self.started = time.monotonic()
        deadline = self.started + self.duration
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._script, deadline)
            tg.start_soon(self._show, deadline)
            for tenant in self.tenants:
                for i in range(WORKERS[tenant]):
                    tg.start_soon(self._client, gateway_url, tenant, deadline, i)

    async def _script(self, deadline: float) -> None:
        """The faults: flaky fails from 30 %; phoenix is stopped at 40 % and back at 70 %."""
        d = self.duration
        await _sleep_until(self.started + 0.3 * d)
        self.backends["flaky"].failing = True
        self._note("flaky starts answering 503")
        await _sleep_until(self.started + 0.4 * d)
        await self.backends["phoenix"].stop()
        self._note("phoenix stopped (listener and connections closed)")
        await _sleep_until(self.started + 0.7 * d)
        await self.backends["phoenix"].start(self._servers)
        self._note("phoenix is back on the same port")

    def _note(self, text: str) -> None:
        self.notes.append((time.monotonic(), text))

    async def _client(self, gateway_url: str, tenant: str, deadline: float, seed: int) -> None:
        import httpx

        from .adapters.httpx import AsyncBalancingTransport

        transport = AsyncBalancingTransport(Pool([gateway_url], name=f"gateway-{tenant}-{seed}"))
        headers = {"x-api-key": KEYS[tenant]}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=headers, timeout=5.0
        ) as client:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.get("/v1/work")
                except httpx.HTTPError as exc:
                    self.outcomes[tenant, type(exc).__name__] += 1
                    continue
                latency = time.perf_counter() - started
                self.outcomes[tenant, str(response.status_code)] += 1
                backend = response.headers.get("x-backend")
                if backend is not None and response.status_code < 500:
                    self.latencies[backend].append(latency)
                await anyio.sleep(0.01 if response.status_code != 429 else 0.05)

    # -- output ------------------------------------------------------------------------------

    async def _show(self, deadline: float) -> None:
        if importlib.util.find_spec("rich") is not None and sys.stdout.isatty():
            from rich.live import Live

            with Live(self._rich_table(), refresh_per_second=4, transient=True) as live:
                while time.monotonic() < deadline:
                    await anyio.sleep(0.5)
                    live.update(self._rich_table())
            return
        step = max(1.0, self.duration / 4)
        while time.monotonic() + step < deadline + 0.01:
            await anyio.sleep(step)
            print(self._text(live=True), flush=True)

    def rows(self) -> list[tuple[str, ...]]:
        """One row per endpoint: name, role, share of attempts, p50, p99, failures, state.

        Shares and failures are the gateway's own counts (every attempt, retries included);
        latencies are what the clients saw for the requests each backend served.
        """
        assert self.gateway is not None
        attempts: dict[str, int] = {}
        failures: dict[str, int] = {}
        states: dict[str, str] = {}
        for pool in self.gateway.stats().pools.values():
            for e in pool.endpoints:
                name = next(b.name for b in self.backends.values() if b.url == e.url)
                attempts[name], failures[name] = e.requests, e.failures
                states[name] = "ejected" if e.ejected else ("healthy" if e.healthy else "unhealthy")
        ejections = Counter(
            next((b.name for b in self.backends.values() if b.url == ev.url), "")
            for ev in self.events
            if ev.kind == "ejected"
        )
        total = sum(attempts.values()) or 1
        rows: list[tuple[str, ...]] = []
        for name, (_, role) in BACKENDS.items():
            lat = sorted(self.latencies.get(name, []))
            rows.append(
                (
                    name,
                    role,
                    f"{attempts.get(name, 0) / total:6.1%}",
                    _ms(_quantile(lat, 0.50)),
                    _ms(_quantile(lat, 0.99)),
                    str(failures.get(name, 0)),
                    f"{states.get(name, '?')} ({ejections[name]} ejections)",
                )
            )
        return rows

    def tenant_rows(self) -> list[tuple[str, int, int, int, int]]:
        rows = []
        for tenant in self.tenants:
            got = {k: v for (t, k), v in self.outcomes.items() if t == tenant}
            ok = sum(v for k, v in got.items() if k.isdigit() and int(k) < 400)
            other = sum(got.values()) - ok - got.get("429", 0) - got.get("503", 0)
            rows.append((tenant, ok, got.get("429", 0), got.get("503", 0), other))
        return rows

    def _text(self, *, live: bool) -> str:
        elapsed = time.monotonic() - self.started
        head = f"t={elapsed:5.1f}s  balancer={self.strategy}" if live else ""
        lines = [head] if head else []
        lines.append(
            f"  {'endpoint':9} {'role':16} {'share':>6} {'p50':>8} {'p99':>8} {'fails':>5}  state"
        )
        rows = self.rows() if live or self.final_rows is None else self.final_rows
        for name, role, share, p50, p99, failed, state in rows:
            lines.append(f"  {name:9} {role:16} {share:>6} {p50:>8} {p99:>8} {failed:>5}  {state}")
        lines.append(f"  {'tenant':9} {'2xx':>7} {'429':>7} {'503':>7} {'errors':>7}")
        for tenant, ok, limited, unavailable, other in self.tenant_rows():
            lines.append(f"  {tenant:9} {ok:7d} {limited:7d} {unavailable:7d} {other:7d}")
        return "\n".join(lines)

    def _rich_table(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        elapsed = time.monotonic() - self.started
        endpoints = Table(title=f"tenantlb demo — t={elapsed:4.1f}s, balancer {self.strategy}")
        for column in ("endpoint", "role", "share", "p50", "p99", "fails", "state"):
            endpoints.add_column(
                column, justify="left" if column in ("endpoint", "role") else "right"
            )
        for row in self.rows():
            endpoints.add_row(*row)
        tenants = Table(title="tenants")
        for column in ("tenant", "2xx", "429", "503", "errors"):
            tenants.add_column(column, justify="right")
        for tenant, *counts in self.tenant_rows():
            tenants.add_row(tenant, *(str(c) for c in counts))
        return Group(endpoints, tenants)

    def summary(self) -> int:
        if self.gateway is None:
            return 1
        requests = sum(self.outcomes.values())
        print(
            f"tenantlb demo: {requests} real HTTP requests from {len(self.tenants)} tenants in "
            f"{self.duration:g} s through ProxyApp (balancer {self.strategy})"
        )
        print(self._text(live=False))
        print("What happened (pool events and the demo's faults):")
        timeline = [(at, f"{'fault':10} {text}") for at, text in self.notes]
        for event in self.events:
            if event.reason == "health checker stopped":
                continue  # the demo's own shutdown, not news
            if event.kind in ("ejected", "unejected", "unhealthy", "healthy", "panic_entered"):
                where = next((b.name for b in self.backends.values() if b.url == event.url), "")
                timeline.append((event.at, f"{event.kind:10} {where:8} {event.reason}"))
        for at, text in sorted(timeline):
            print(f"  {at - self.started:5.1f}s {text}"[:120])
        in_flight = self.in_flight_end if self.in_flight_end is not None else -1
        print(f"In flight at the end: {in_flight} (every lease and slot released)")
        return 0 if in_flight == 0 else 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _sleep_until(when: float) -> None:
    await anyio.sleep(max(0.0, when - time.monotonic()))


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(q * len(values)))]


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}ms"
