"""DNSDiscovery against a real dnsmasq: A/AAAA and SRV records, changes, outages, empty answers."""

from __future__ import annotations

import logging

import anyio
import pytest

import tenantlb as tlb
from tenantlb.testing import ManualClock

from .conftest import TTL, Dnsmasq

pytestmark = pytest.mark.anyio

NAME = "svc.internal"


def urls(pool: tlb.Pool) -> set[str]:
    return {e.url for e in pool.endpoints}


def a_urls(*last_octets: int, port: int = 8000) -> set[str]:
    return {f"http://10.0.0.{n}:{port}" for n in last_octets}


def hosts(*last_octets: int) -> dict[str, list[str]]:
    return {NAME: [f"10.0.0.{n}" for n in last_octets]}


def discovery(pool: tlb.Pool, server: Dnsmasq, **kwargs: object) -> tlb.DNSDiscovery:
    options: dict[str, object] = {"nameservers": [server.nameserver], "jitter": 0.0, "timeout": 1.0}
    options.update(kwargs)
    if "srv" not in options:
        options.setdefault("name", NAME)
        options.setdefault("port", 8000)
    return tlb.DNSDiscovery(pool, **options)  # type: ignore[arg-type]


def serve(pool: tlb.Pool, url: str, clock: ManualClock, latency: float) -> None:
    """One request to *url* that takes *latency* seconds on the pool's clock."""
    with pool.acquire(exclude=urls(pool) - {url}) as lease:
        assert lease.url == url
        clock.advance(latency)
        lease.record(status=200)


async def test_a_records_two_three_one(dnsmasq: Dnsmasq, clock: ManualClock) -> None:
    """The pool follows A records 2 -> 3 -> 1; kept endpoints keep requests, EWMA and ejection."""
    dnsmasq.set_hosts(hosts(1, 2))
    pool = tlb.Pool([], balancer=tlb.PeakEWMA(), clock=clock)
    found = discovery(pool, dnsmasq, interval=3600.0)

    stats = await found.refresh()
    assert stats.last_outcome == "updated"
    assert urls(pool) == a_urls(1, 2)
    for _ in range(3):
        serve(pool, "http://10.0.0.1:8000", clock, 0.250)
    serve(pool, "http://10.0.0.2:8000", clock, 0.010)
    pool.eject("http://10.0.0.1:8000", 600.0, "test")
    one = pool.state("http://10.0.0.1:8000")
    before = (one.requests, one.ewma)
    assert one.requests == 3

    dnsmasq.set_hosts(hosts(1, 2, 3))
    stats = await found.refresh()
    assert stats.last_outcome == "updated"
    assert urls(pool) == a_urls(1, 2, 3)
    kept = pool.state("http://10.0.0.1:8000")
    assert kept is one
    assert (kept.requests, kept.ewma) == before
    assert kept.ejected
    assert pool.state("http://10.0.0.2:8000").requests == 1

    # A sudden drop is the truth and is applied; the lone survivor is ejected, and panic mode
    # still serves it rather than nothing.
    dnsmasq.set_hosts(hosts(1))
    stats = await found.refresh()
    assert stats.last_outcome == "updated"
    assert urls(pool) == a_urls(1)
    assert pool.state("http://10.0.0.1:8000") is one
    assert one.ejected
    assert pool.stats().panic
    with pool.acquire() as lease:
        assert lease.url == "http://10.0.0.1:8000"
    assert stats.updates == 3
    assert stats.failures == 0


async def test_unchanged_answer_leaves_pool_alone(dnsmasq: Dnsmasq) -> None:
    """An answer equal to the pool is not applied again (no rebuild, no events)."""
    dnsmasq.set_hosts(hosts(1, 2))
    events: list[tlb.Event] = []
    pool = tlb.Pool([], on_event=events.append)
    found = discovery(pool, dnsmasq)
    await found.refresh()
    generation, seen = pool.generation, len(events)
    stats = await found.refresh()
    assert stats.last_outcome == "unchanged"
    assert pool.generation == generation
    assert len(events) == seen
    assert (stats.refreshes, stats.updates) == (2, 1)


async def test_background_task_follows_changes(dnsmasq: Dnsmasq) -> None:
    """Inside ``async with`` the pool is filled at once and then follows DNS by itself."""
    dnsmasq.set_hosts(hosts(1, 2))
    pool = tlb.Pool([])
    added = anyio.Event()
    pool.subscribe(lambda e: added.set() if e.url == "http://10.0.0.3:8000" else None)
    async with discovery(pool, dnsmasq, interval=0.05, min_interval=0.05) as found:
        assert urls(pool) == a_urls(1, 2)  # filled before the body runs
        assert found.running
        dnsmasq.set_hosts(hosts(1, 2, 3))
        with anyio.fail_after(20):  # a liveness bound, not a timing assertion
            await added.wait()
        assert urls(pool) == a_urls(1, 2, 3)
    assert not found.running
    assert found.stats().updates >= 2


async def test_ttl_shortens_the_interval(dnsmasq: Dnsmasq) -> None:
    """A TTL shorter than the interval sets the next delay, bounded below by min_interval."""
    dnsmasq.set_hosts(hosts(1))
    pool = tlb.Pool([])
    stats = await discovery(pool, dnsmasq, interval=30.0).refresh()
    assert stats.ttl == TTL
    assert stats.next_delay == TTL
    stats = await discovery(pool, dnsmasq, interval=5.0).refresh()
    assert stats.next_delay == 5.0
    stats = await discovery(pool, dnsmasq, interval=30.0, min_interval=10.0).refresh()
    assert stats.next_delay == 10.0


async def test_aaaa_records(dnsmasq: Dnsmasq) -> None:
    """AAAA addresses become bracketed IPv6 URLs; family='ipv4' leaves them out."""
    dnsmasq.set_hosts({NAME: ["10.0.0.1", "fd00::7"]})
    pool = tlb.Pool([])
    await discovery(pool, dnsmasq).refresh()
    assert urls(pool) == {"http://10.0.0.1:8000", "http://[fd00::7]:8000"}
    await discovery(pool, dnsmasq, family="ipv4").refresh()
    assert urls(pool) == {"http://10.0.0.1:8000"}
    await discovery(pool, dnsmasq, family="ipv6", scheme="https", port=8443).refresh()
    assert urls(pool) == {"https://[fd00::7]:8443"}
    assert pool.endpoints[0].metadata["hostname"] == NAME


async def test_srv_targets_ports_and_weights(dnsmasq: Dnsmasq, clock: ManualClock) -> None:
    """SRV targets, ports and weights become endpoints and weights; priorities become tiers."""
    dnsmasq.set_hosts(
        {
            "a.internal": ["10.1.0.1"],
            "b.internal": ["10.1.0.2"],
            "c.internal": ["10.1.0.3", "10.1.0.4"],
            "backup.internal": ["10.9.0.1"],
        }
    )
    srv = "_http._tcp.svc.internal"
    dnsmasq.set_srv(
        [
            (srv, "a.internal", 8001, 10, 10),
            (srv, "b.internal", 8002, 10, 30),
            (srv, "c.internal", 8003, 10, 20),  # two addresses share the weight
            (srv, "backup.internal", 9000, 20, 100),  # a higher value: the failover tier
        ]
    )
    pool = tlb.Pool([], balancer=tlb.RoundRobin(), clock=clock)
    found = discovery(pool, dnsmasq, srv=srv)
    stats = await found.refresh()
    assert stats.last_outcome == "updated"
    assert {e.url: (e.weight, e.priority) for e in pool.endpoints} == {
        "http://10.1.0.1:8001": (10.0, 0),
        "http://10.1.0.2:8002": (30.0, 0),
        "http://10.1.0.3:8003": (10.0, 0),
        "http://10.1.0.4:8003": (10.0, 0),
        "http://10.9.0.1:9000": (100.0, 1),
    }
    assert pool.state("http://10.1.0.3:8003").endpoint.metadata["hostname"] == "c.internal"
    picks = set()
    for _ in range(12):
        with pool.acquire() as lease:
            picks.add(lease.url)
    assert "http://10.9.0.1:9000" not in picks  # the backup tier idles while tier 0 is healthy
    serve(pool, "http://10.1.0.1:8001", clock, 0.01)

    # New weights and a new port: weights change in place, stats kept; the old port is replaced.
    dnsmasq.set_srv(
        [
            (srv, "a.internal", 8001, 10, 50),
            (srv, "b.internal", 8012, 10, 30),
            (srv, "backup.internal", 9000, 20, 100),
        ]
    )
    await found.refresh()
    assert {e.url: (e.weight, e.priority) for e in pool.endpoints} == {
        "http://10.1.0.1:8001": (50.0, 0),
        "http://10.1.0.2:8012": (30.0, 0),
        "http://10.9.0.1:9000": (100.0, 1),
    }
    assert pool.state("http://10.1.0.1:8001").requests == 1

    # The preferred targets no longer resolve: only the failover tier is left, and serves.
    dnsmasq.set_srv([(srv, "gone.internal", 8001, 10, 10), (srv, "backup.internal", 9000, 20, 1)])
    await found.refresh()
    assert urls(pool) == {"http://10.9.0.1:9000"}
    with pool.acquire() as lease:
        assert lease.url == "http://10.9.0.1:9000"


async def test_srv_zero_weights(dnsmasq: Dnsmasq) -> None:
    """SRV weight 0 gets a very small share (RFC 2782); all zero means equal shares."""
    dnsmasq.set_hosts({"a.internal": ["10.1.0.1"], "b.internal": ["10.1.0.2"]})
    srv = "_http._tcp.svc.internal"
    dnsmasq.set_srv([(srv, "a.internal", 80, 0, 0), (srv, "b.internal", 80, 0, 50)])
    pool = tlb.Pool([])
    await discovery(pool, dnsmasq, srv=srv).refresh()
    assert {e.url: e.weight for e in pool.endpoints} == {
        "http://10.1.0.1": 0.5,
        "http://10.1.0.2": 50.0,
    }
    dnsmasq.set_srv([(srv, "a.internal", 80, 0, 0), (srv, "b.internal", 80, 0, 0)])
    await discovery(pool, dnsmasq, srv=srv).refresh()
    assert {e.weight for e in pool.endpoints} == {1.0}


async def test_dnsmasq_killed_keeps_the_pool(
    dnsmasq: Dnsmasq, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead DNS server never empties the pool; the outage is counted and logged once, then
    updates resume when it is back."""
    dnsmasq.set_hosts(hosts(1, 2))
    events: list[tlb.Event] = []
    pool = tlb.Pool([], name="api")
    found = discovery(pool, dnsmasq, timeout=0.3, on_event=events.append)
    await found.refresh()
    assert urls(pool) == a_urls(1, 2)

    caplog.set_level(logging.INFO, logger="tenantlb.discovery")
    dnsmasq.stop()
    for _ in range(3):
        stats = await found.refresh()
    assert urls(pool) == a_urls(1, 2)
    assert stats.last_outcome == "failed"
    assert (stats.failures, stats.consecutive_failures, stats.outages) == (3, 3, 1)
    assert stats.in_outage
    assert stats.last_error is not None
    assert stats.endpoints == 2
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1
    assert "'api'" in errors[0].getMessage()
    assert "keeping its 2 endpoints" in errors[0].getMessage()
    assert [e.kind for e in events] == ["discovery_failed"]
    assert events[0].pool == "api"

    dnsmasq.set_hosts(hosts(2, 3))
    dnsmasq.start()
    stats = await found.refresh()
    assert stats.last_outcome == "updated"
    assert urls(pool) == a_urls(2, 3)
    assert not stats.in_outage
    assert stats.consecutive_failures == 0
    assert (stats.failures, stats.outages) == (3, 1)
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(recovered) == 1
    assert [e.kind for e in events] == ["discovery_failed", "discovery_recovered"]
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


async def test_refused_answer_is_a_failure(dnsmasq: Dnsmasq) -> None:
    """A server that refuses the query (REFUSED / SERVFAIL) is a failed lookup, not an empty one."""
    pool = tlb.Pool(["http://10.0.0.9:8000"])
    stats = await discovery(pool, dnsmasq, name="svc.elsewhere").refresh()
    assert stats.last_outcome == "failed"
    assert stats.last_error is not None
    assert "REFUSED" in stats.last_error
    assert urls(pool) == {"http://10.0.0.9:8000"}


async def test_empty_answer_needs_allow_empty(dnsmasq: Dnsmasq) -> None:
    """A name with no addresses (NXDOMAIN) empties the pool only with allow_empty=True."""
    dnsmasq.set_hosts(hosts(1, 2))
    pool = tlb.Pool([])
    found = discovery(pool, dnsmasq)
    await found.refresh()
    dnsmasq.set_hosts({})
    stats = await found.refresh()
    assert stats.last_outcome == "empty"
    assert (stats.empty_refused, stats.failures) == (1, 0)
    assert stats.in_outage
    assert urls(pool) == a_urls(1, 2)

    stats = await discovery(pool, dnsmasq, allow_empty=True).refresh()
    assert stats.last_outcome == "updated"
    assert len(pool) == 0


async def test_failures_back_off_from_min_interval(dnsmasq: Dnsmasq) -> None:
    """After failures the next try comes after min_interval, doubling up to the interval."""
    dnsmasq.stop()
    pool = tlb.Pool([])
    found = discovery(pool, dnsmasq, interval=3.0, min_interval=1.0, timeout=0.1)
    delays = [(await found.refresh()).next_delay for _ in range(4)]
    assert delays == [1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "svc.internal", "port": 80, "interval": 0}, ValueError, "interval must be > 0"),
        ({"name": "svc.internal", "port": 80, "interval": -5}, ValueError, "interval"),
        ({"name": "svc.internal", "port": 80, "interval": "30"}, TypeError, "interval"),
        ({"name": "not a host!", "port": 80}, ValueError, "name must be a DNS hostname"),
        ({"name": "-bad-.internal", "port": 80}, ValueError, "name must be a DNS hostname"),
        ({"name": "a..b", "port": 80}, ValueError, "name must be a DNS hostname"),
        ({"name": "x" * 64 + ".internal", "port": 80}, ValueError, "name must be a DNS hostname"),
        ({"name": "10.0.0.1", "port": 80}, ValueError, "not an IP address"),
        ({"name": 42, "port": 80}, TypeError, "name must be a hostname str"),
        ({"name": "svc.internal", "port": 0}, ValueError, "port must be between 1 and 65535"),
        ({"name": "svc.internal", "port": 65536}, ValueError, "port must be between 1 and 65535"),
        ({"name": "svc.internal", "port": "80"}, TypeError, "port must be an int"),
        ({"name": "svc.internal"}, ValueError, "port is required"),
        ({"srv": "_http._tcp.svc", "port": 80}, ValueError, "port must not be given"),
        ({}, ValueError, "exactly one of name"),
        ({"name": "a.internal", "port": 1, "srv": "_x._tcp.a"}, ValueError, "exactly one"),
        ({"srv": "bad name"}, ValueError, "srv must be a DNS hostname"),
        (
            {"name": "svc.internal", "port": 80, "nameservers": ["dns.google"]},
            ValueError,
            r"nameservers\[0\] must be 'IP' or 'IP:PORT'",
        ),
        (
            {"name": "svc.internal", "port": 80, "nameservers": ["127.0.0.1:99999"]},
            ValueError,
            r"nameservers\[0\] port must be between 1 and 65535",
        ),
        (
            {"name": "svc.internal", "port": 80, "nameservers": ["127.0.0.1", "1.1.1.1:x"]},
            ValueError,
            r"nameservers\[1\]",
        ),
        (
            {"name": "svc.internal", "port": 80, "nameservers": "127.0.0.1"},
            TypeError,
            "nameservers must be a list",
        ),
        ({"name": "svc.internal", "port": 80, "nameservers": []}, ValueError, "must not be empty"),
        ({"name": "svc.internal", "port": 80, "family": "ipx"}, ValueError, "family must be"),
        ({"name": "svc.internal", "port": 80, "scheme": "ht tp"}, ValueError, "scheme must be"),
        ({"name": "svc.internal", "port": 80, "timeout": 0}, ValueError, "timeout must be > 0"),
        (
            {"name": "svc.internal", "port": 80, "interval": 5, "min_interval": 10},
            ValueError,
            "min_interval must be <= interval",
        ),
        ({"name": "svc.internal", "port": 80, "jitter": -1}, ValueError, "jitter must be >= 0"),
    ],
)
def test_bad_input(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    """Bad arguments raise a typed error that names the argument."""
    with pytest.raises(error, match=match):
        tlb.DNSDiscovery(tlb.Pool([]), **kwargs)  # type: ignore[arg-type]


def test_good_nameservers() -> None:
    """IPv4 and IPv6 nameservers, with or without a port, are accepted."""
    found = tlb.DNSDiscovery(
        tlb.Pool([]),
        "svc.internal",
        port=80,
        nameservers=["127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:5353"],
    )
    assert "127.0.0.1, 127.0.0.1:5353, [::1], [::1]:5353" in found.stats().source


def test_pool_must_be_a_pool() -> None:
    """The pool argument is type-checked."""
    with pytest.raises(TypeError, match=r"pool must be a tenantlb\.Pool"):
        tlb.DNSDiscovery(["http://a"], "svc.internal", port=80)  # type: ignore[arg-type]
