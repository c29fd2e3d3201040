"""HealthChecker against real loopback backends: failures, hangs, restarts, membership changes."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest

import tenantlb as tlb
from tenantlb.health import EndpointHealth, HealthChecker, HTTPProbe, ProbeResult, TCPProbe

from .conftest import BackendsFactory

INTERVAL = 0.05
TIMEOUT = 0.04


def make_pool(urls: list[str], **kwargs: object) -> tlb.Pool:
    return tlb.Pool(urls, balancer=tlb.RoundRobin(), **kwargs)  # type: ignore[arg-type]


class Waiter:
    """Collects pool events and lets a test wait for one (bounded by anyio.fail_after)."""

    def __init__(self, pool: tlb.Pool) -> None:
        self.events: list[tlb.Event] = []
        self._wanted: list[tuple[Callable[[tlb.Event], bool], anyio.Event]] = []
        pool.subscribe(self._on_event)

    def _on_event(self, event: tlb.Event) -> None:
        self.events.append(event)
        for match, flag in self._wanted:
            if match(event):
                flag.set()

    async def wait(self, kind: str, url: str | None = None, within: float = 5.0) -> tlb.Event:
        flag = anyio.Event()
        found: list[tlb.Event] = []

        def match(event: tlb.Event) -> bool:
            if event.kind == kind and (url is None or event.url == url):
                found.append(event)
                return True
            return False

        self._wanted.append((match, flag))
        try:
            with anyio.fail_after(within):
                await flag.wait()
        finally:
            self._wanted.remove((match, flag))
        return found[0]


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - polls stats snapshots; bounded by fail_after
            await anyio.sleep(0.005)


def health(checker: HealthChecker, url: str) -> EndpointHealth:
    return next(e for e in checker.stats().endpoints if e.url == url)


@pytest.mark.anyio
async def test_killed_backend_goes_unhealthy_and_comes_back(backends: BackendsFactory) -> None:
    """A killed backend is unhealthy within 3 intervals (+timeout) and healthy within 2 after restart."""
    async with backends(3) as servers:
        pool = make_pool([s.url for s in servers])
        waiter = Waiter(pool)
        victim = servers[0]
        checker = HealthChecker(
            pool, HTTPProbe("/healthz"), interval=INTERVAL, timeout=TIMEOUT,
            unhealthy_threshold=3, healthy_threshold=2,
        )  # fmt: skip
        async with checker:
            await wait_until(
                lambda: (
                    all(e.healthy for e in checker.stats().endpoints)
                    and len(checker.stats().endpoints) == 3
                )
            )
            await victim.stop()
            killed = time.monotonic()
            # Generous bound: 3 x (interval + timeout) plus scheduling slack on a busy machine.
            event = await waiter.wait(
                "unhealthy", victim.url, within=3 * (INTERVAL + TIMEOUT) + 2.0
            )
            took_down = time.monotonic() - killed
            assert took_down < 3 * (INTERVAL + TIMEOUT) + 2.0
            assert "3 failed" in event.reason
            for _ in range(4):
                with pool.acquire() as lease:
                    assert lease.url != victim.url
            await victim.start()
            restarted = time.monotonic()
            event = await waiter.wait("healthy", victim.url, within=2 * (INTERVAL + TIMEOUT) + 2.0)
            took_up = time.monotonic() - restarted
            assert took_up < 2 * (INTERVAL + TIMEOUT) + 2.0
            assert "2 passed" in event.reason
            picked = set()
            for _ in range(3):
                with pool.acquire() as lease:
                    picked.add(lease.url)
            assert victim.url in picked


@pytest.mark.anyio
async def test_hung_backend_is_caught_by_timeout_while_others_are_checked(
    backends: BackendsFactory,
) -> None:
    """A backend that accepts and never answers times out; the others keep being checked."""
    async with backends(3) as servers:
        hung, *others = servers
        hung.mode = "hang"
        pool = make_pool([s.url for s in servers])
        waiter = Waiter(pool)
        checker = HealthChecker(pool, HTTPProbe(), interval=INTERVAL, timeout=TIMEOUT)
        async with checker:
            # The first check decides: a timeout on the first pass marks it unhealthy.
            event = await waiter.wait("unhealthy", hung.url)
            assert "timeout after 0.04s" in event.reason
            before = [health(checker, s.url).checks for s in others]
            await wait_until(lambda: health(checker, hung.url).checks >= 3)
            after = [health(checker, s.url).checks for s in others]
            assert all(b > a for a, b in zip(before, after, strict=True))
            assert all(health(checker, s.url).healthy for s in others)
            assert checker.stats().timeouts >= 3
            assert not pool.state(hung.url).healthy


@pytest.mark.anyio
async def test_unexpected_status_is_immediately_unhealthy(backends: BackendsFactory) -> None:
    """A 500 from the health endpoint marks it unhealthy at the first failure (Envoy)."""
    async with backends(2) as (sick, _fine):
        pool = make_pool([s.url for s in (sick, _fine)])
        waiter = Waiter(pool)
        checker = HealthChecker(
            pool, HTTPProbe(), interval=INTERVAL, timeout=TIMEOUT, unhealthy_threshold=5
        )
        async with checker:
            await wait_until(lambda: health(checker, sick.url).checks >= 1)
            sick.mode = "error"
            event = await waiter.wait("unhealthy", sick.url)
            assert "1 failed (unexpected status 500)" in event.reason
            sick.mode = "ok"
            await waiter.wait("healthy", sick.url)


@pytest.mark.anyio
async def test_retriable_status_counts_towards_threshold(backends: BackendsFactory) -> None:
    """A status listed as retriable needs unhealthy_threshold failures in a row."""
    async with backends(1) as (server,):
        pool = make_pool([server.url])
        waiter = Waiter(pool)
        probe = HTTPProbe(retriable_statuses=[503])
        server.status_error = 503
        checker = HealthChecker(
            pool, probe, interval=INTERVAL, timeout=TIMEOUT, unhealthy_threshold=4
        )
        async with checker:
            await wait_until(lambda: health(checker, server.url).healthy is True)
            server.mode = "error"
            event = await waiter.wait("unhealthy", server.url)
            assert event.reason.startswith("active health check: 4 failed")


@pytest.mark.anyio
async def test_first_pass_marks_healthy(backends: BackendsFactory) -> None:
    """An endpoint out of rotation is marked healthy by its first passing check."""
    async with backends(1) as (server,):
        pool = make_pool([server.url])
        pool.mark_unhealthy(server.url, "operator")
        waiter = Waiter(pool)
        async with HealthChecker(pool, interval=INTERVAL, timeout=TIMEOUT, healthy_threshold=10):
            event = await waiter.wait("healthy", server.url)
            assert "1 passed" in event.reason


@pytest.mark.anyio
async def test_passing_check_unejects(backends: BackendsFactory) -> None:
    """A passing active check ends an outlier ejection early and clears the detector's counters."""
    async with backends(2) as servers:
        detector = tlb.OutlierDetector()
        pool = make_pool([s.url for s in servers], outlier_detector=detector)
        for _ in range(5):
            with pool.acquire(exclude=[servers[1].url]) as lease:
                lease.record(status=500)
        assert pool.state(servers[0].url).ejected
        waiter = Waiter(pool)
        async with HealthChecker(pool, interval=INTERVAL, timeout=TIMEOUT):
            event = await waiter.wait("unejected", servers[0].url)
            assert event.reason == "active health check passed"
        assert detector.stats().ejected == ()


@pytest.mark.anyio
async def test_expected_body_is_checked(backends: BackendsFactory) -> None:
    """A response without the expected body fails the check."""
    async with backends(2) as (plain, alive):
        alive.body = b"status: alive"
        pool = make_pool([plain.url, alive.url])
        checker = HealthChecker(
            pool, HTTPProbe(expect_body="alive"), interval=INTERVAL, timeout=TIMEOUT
        )
        async with checker:
            await wait_until(
                lambda: (
                    len(checker.stats().endpoints) == 2
                    and all(e.checks for e in checker.stats().endpoints)
                )
            )
            assert health(checker, plain.url).healthy is False
            assert health(checker, plain.url).last_reason == "expected body not found"
            assert health(checker, alive.url).healthy is True


@pytest.mark.anyio
async def test_http_probe_shares_one_connection_pool(backends: BackendsFactory) -> None:
    """The HTTP probe keeps one connection per backend alive across checks and closes it on exit."""
    async with backends(2) as servers:
        pool = make_pool([s.url for s in servers])
        probe = HTTPProbe()
        # A probe that times out closes its connection: give a loaded machine room to answer.
        checker = HealthChecker(pool, probe, interval=0.1, timeout=0.09)
        async with checker:
            assert probe.is_open
            await wait_until(lambda: all(s.hits >= 4 for s in servers))
        assert not probe.is_open
        assert [s.connections for s in servers] == [1, 1]


@pytest.mark.anyio
async def test_http_probe_closes_the_connection_of_a_removed_endpoint(
    backends: BackendsFactory,
) -> None:
    """Removing an endpoint closes the probe's keep-alive connection to it at once."""
    async with backends(2) as (kept, removed):
        pool = make_pool([kept.url, removed.url])
        checker = HealthChecker(pool, HTTPProbe(), interval=0.02, timeout=0.015)
        async with checker:
            await wait_until(lambda: kept.hits >= 2 and removed.hits >= 2)
            assert removed.open_connections == 1
            pool.remove(removed.url)
            await wait_until(lambda: removed.open_connections == 0)
            hits, kept_hits = removed.hits, kept.hits
            await wait_until(lambda: kept.hits >= kept_hits + 3)  # checks go on for the other
            assert kept.open_connections == 1
        assert removed.hits == hits


@pytest.mark.anyio
async def test_tcp_probe(backends: BackendsFactory) -> None:
    """The TCP probe passes while the port accepts connections and fails once it is closed."""
    async with backends(2) as (up, down):
        await down.stop()
        pool = make_pool([up.url, down.url])
        checker = HealthChecker(pool, TCPProbe(), interval=INTERVAL, timeout=TIMEOUT)
        async with checker:
            await wait_until(
                lambda: (
                    len(checker.stats().endpoints) == 2
                    and all(e.checks for e in checker.stats().endpoints)
                )
            )
            assert health(checker, up.url).healthy is True
            assert health(checker, down.url).healthy is False
            assert health(checker, down.url).last_reason.startswith("connect error")


@pytest.mark.anyio
async def test_misbehaving_probes_never_crash_the_checker() -> None:
    """Probes that raise, hang, return garbage or False fail their checks; the checker keeps going."""
    urls = {
        "raise": "http://raise.test:1",
        "hang": "http://hang.test:1",
        "garbage": "http://garbage.test:1",
        "false": "http://false.test:1",
        "ok": "http://ok.test:1",
    }

    async def probe(endpoint: tlb.Endpoint) -> ProbeResult | bool:
        if endpoint.url == urls["raise"]:
            raise ValueError("kaput")
        if endpoint.url == urls["hang"]:
            await anyio.sleep_forever()
        if endpoint.url == urls["garbage"]:
            return "yes"  # type: ignore[return-value]
        return endpoint.url != urls["false"]

    pool = make_pool(list(urls.values()), panic_threshold=0.0)
    checker = HealthChecker(pool, probe, interval=INTERVAL, timeout=TIMEOUT)
    async with checker:
        await wait_until(lambda: all(e.checks >= 3 for e in checker.stats().endpoints))
        stats = {e.url: e for e in checker.stats().endpoints}
        assert stats[urls["raise"]].last_reason == "probe raised ValueError: kaput"
        assert stats[urls["hang"]].last_reason == "timeout after 0.04s"
        assert stats[urls["garbage"]].last_reason == "probe returned str, not a bool or ProbeResult"
        assert stats[urls["false"]].last_reason == "failed"
        assert [u for u, e in stats.items() if e.healthy] == [urls["ok"]]
        assert checker.stats().tasks == 5
        with pool.acquire() as lease:
            assert lease.url == urls["ok"]


@pytest.mark.anyio
async def test_stats_count_each_endpoints_failed_checks() -> None:
    """Each endpoint's stats count its own failed checks, and the totals add them up."""
    good, bad = "http://good.test:1", "http://bad.test:1"

    async def probe(endpoint: tlb.Endpoint) -> bool:
        return endpoint.url == good

    checker = HealthChecker(make_pool([good, bad]), probe, interval=INTERVAL, timeout=TIMEOUT)
    async with checker:
        await wait_until(lambda: all(e.checks >= 2 for e in checker.stats().endpoints))
        stats = checker.stats()
    by_url = {e.url: e for e in stats.endpoints}
    assert by_url[good].failures == 0
    assert by_url[bad].failures == by_url[bad].checks >= 2
    assert stats.failures == by_url[bad].failures


@pytest.mark.anyio
async def test_membership_changes_while_checking() -> None:
    """Added endpoints get checked, removed ones are never checked again, and no loop is orphaned."""
    calls: list[str] = []
    in_flight: set[str] = set()

    async def probe(endpoint: tlb.Endpoint) -> bool:
        calls.append(endpoint.url)
        in_flight.add(endpoint.url)
        try:
            await anyio.sleep(0.01)
        finally:
            in_flight.discard(endpoint.url)
        return True

    pool = make_pool([f"http://10.0.0.{i}:8080" for i in range(3)])
    checker = HealthChecker(pool, probe, interval=0.03, timeout=0.02)
    async with checker:
        await wait_until(lambda: len(set(calls)) == 3)
        pool.add("http://10.0.0.9:8080")
        await wait_until(lambda: "http://10.0.0.9:8080" in calls)
        assert checker.stats().tasks == 4
        # Remove one while its probe is likely in flight: that probe is cancelled at once.
        await wait_until(lambda: "http://10.0.0.1:8080" in in_flight)
        pool.remove("http://10.0.0.1:8080")
        removed_at = len(calls)
        await wait_until(lambda: "http://10.0.0.1:8080" not in in_flight, within=1.0)
        pool.update(["http://10.0.0.0:8080", "http://10.0.0.9:8080", "http://10.0.0.7:8080"])
        await wait_until(lambda: "http://10.0.0.7:8080" in calls)
        await anyio.sleep(0.1)
        later = calls[removed_at:]
        assert "http://10.0.0.1:8080" not in later
        assert (
            "http://10.0.0.2:8080" not in calls[len(calls) - later.count("http://10.0.0.0:8080") :]
        )
        assert checker.stats().tasks == 3
        assert {e.url for e in checker.stats().endpoints} == {e.url for e in pool.endpoints}
        # A change from another thread is picked up too.
        await anyio.to_thread.run_sync(pool.add, "http://10.0.0.8:8080")
        await wait_until(lambda: "http://10.0.0.8:8080" in calls)
        assert checker.stats().tasks == 4
    assert checker.stats().tasks == 0
    assert not in_flight
    count = len(calls)
    await anyio.sleep(0.1)
    assert len(calls) == count


@pytest.mark.anyio
async def test_removed_endpoints_are_not_checked_after_removal() -> None:
    """After remove() returns, the removed endpoint's probe is never called again."""
    calls: list[str] = []

    async def probe(endpoint: tlb.Endpoint) -> bool:
        calls.append(endpoint.url)
        return True

    urls = [f"http://10.0.1.{i}:8080" for i in range(20)]
    pool = make_pool(urls)
    async with HealthChecker(pool, probe, interval=0.01, timeout=0.005):
        await wait_until(lambda: len(set(calls)) == 20)
        for url in urls[:10]:
            pool.remove(url)
        mark = len(calls)
        await anyio.sleep(0.1)
        assert not set(calls[mark:]) & set(urls[:10])
        assert set(calls[mark:]) == set(urls[10:])


@pytest.mark.anyio
async def test_stopping_restores_endpoints_it_marked_unhealthy() -> None:
    """Leaving `async with` puts endpoints the checker had taken out back in rotation."""

    async def probe(endpoint: tlb.Endpoint) -> bool:
        return False

    pool = make_pool(["http://10.0.2.1:8080"])
    checker = HealthChecker(pool, probe, interval=INTERVAL, timeout=TIMEOUT)
    async with checker:
        await wait_until(lambda: not pool.state("http://10.0.2.1:8080").healthy)
        stats = checker.stats()
        assert stats.running
        with pytest.raises(RuntimeError, match="already running"):
            await checker.__aenter__()
    assert pool.state("http://10.0.2.1:8080").healthy
    assert not checker.stats().running


@pytest.mark.anyio
async def test_panic_from_active_checks(backends: BackendsFactory) -> None:
    """Killing six of ten backends sends the pool into panic mode, and the event says so."""
    async with backends(10) as servers:
        pool = make_pool([s.url for s in servers])
        waiter = Waiter(pool)
        async with HealthChecker(
            pool, TCPProbe(), interval=INTERVAL, timeout=TIMEOUT, unhealthy_threshold=1
        ):
            for server in servers[:6]:
                await server.stop()
            event = await waiter.wait("panic_entered")
            assert event.reason == "4/10 endpoints available"
            assert pool.stats().panic


async def sync_probe(endpoint: tlb.Endpoint) -> bool:
    return True


def not_async(endpoint: tlb.Endpoint) -> bool:
    return True


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"interval": 0}, ValueError, "interval must be > 0 and finite, got 0"),
        ({"interval": -1.0}, ValueError, "interval must be > 0"),
        (
            {"interval": 1.0, "timeout": 1.0},
            ValueError,
            r"timeout must be < interval \(1\), got 1.0",
        ),
        ({"timeout": 0}, ValueError, "timeout must be > 0"),
        ({"unhealthy_threshold": 0}, ValueError, "unhealthy_threshold must be >= 1, got 0"),
        ({"healthy_threshold": 0}, ValueError, "healthy_threshold must be >= 1, got 0"),
        ({"healthy_threshold": 1.5}, TypeError, "healthy_threshold must be an int"),
        ({"jitter": -1}, ValueError, "jitter must be >= 0"),
        ({"no_traffic_interval": 0.5}, ValueError, "no_traffic_interval must be > timeout"),
        ({"probe": not_async}, TypeError, "probe must be an async callable"),
        ({"probe": lambda e: True}, TypeError, "probe must be an async callable"),
        ({"probe": HTTPProbe}, TypeError, "probe must be an async callable"),
        ({"interval": "5"}, TypeError, "interval must be a number"),
    ],
)
def test_bad_configuration(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    """Bad settings raise a typed error naming the field and the value."""
    pool = make_pool(["http://10.0.3.1:8080"])
    kwargs = {"probe": sync_probe, **kwargs}
    with pytest.raises(error, match=match):
        HealthChecker(pool, **kwargs)  # type: ignore[arg-type]


def test_pool_must_be_a_pool() -> None:
    """Passing something other than a Pool is a TypeError."""
    with pytest.raises(TypeError, match=r"pool must be a tenantlb\.Pool, got list"):
        HealthChecker(["http://a:1"], sync_probe)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"path": "healthz"}, ValueError, "path must be a str starting with '/'"),
        ({"expected_statuses": []}, ValueError, "expected_statuses must not be empty"),
        ({"expected_statuses": [200, 700]}, ValueError, "HTTP statuses"),
        ({"expected_statuses": 200}, TypeError, "iterable of ints"),
        ({"expect_body": 5}, TypeError, "expect_body must be bytes, str or None"),
        ({"verify": "yes"}, TypeError, "verify must be a bool or an ssl.SSLContext"),
    ],
)
def test_bad_http_probe(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    """Bad HTTPProbe settings raise a typed error."""
    with pytest.raises(error, match=match):
        HTTPProbe(**kwargs)  # type: ignore[arg-type]
