"""Every event kind fires once per decision, with the fields the docs promise."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import pytest
import redis

import tenantlb as tlb
from tenantlb.observability import EVENT_KINDS, PER_REQUEST_KINDS, REFUSAL_REASONS, Event
from tenantlb.testing import ManualClock
from tests.conftest import RedisServer

from .support import KEYS, URLS, Recorder, make_gateway, request


def make_pool(clock: ManualClock, **kwargs: Any) -> tlb.Pool:
    return tlb.Pool(URLS, balancer=tlb.RoundRobin(), name="api", clock=clock, **kwargs)


def test_kind_sets_are_consistent() -> None:
    """Per-request kinds and refusal reasons are subsets of the documented kinds and codes."""
    assert PER_REQUEST_KINDS < EVENT_KINDS
    assert {"pick", "outcome", "admitted", "refused", "rate_limit", "retry"} <= PER_REQUEST_KINDS
    assert "ejected" not in PER_REQUEST_KINDS
    assert "rate_limited" in REFUSAL_REASONS


def test_event_is_frozen() -> None:
    """An Event is an immutable value."""
    event = Event(kind="pick", pool="api")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.pool = "other"  # type: ignore[misc]


def test_pick_and_outcome(clock: ManualClock) -> None:
    """A pick names the endpoint; the outcome carries status and latency measured by the lease."""
    pool = make_pool(clock)
    seen = Recorder()
    pool.subscribe(seen, per_request=True)
    with pool.acquire() as lease:
        clock.advance(0.25)
        lease.record(status=503)
    pick, outcome = seen.events
    assert pick == Event(kind="pick", pool="api", url=lease.url, panic=False, at=1000.0)
    assert outcome == Event(
        kind="outcome", pool="api", url=lease.url, status=503, latency=0.25, at=1000.25
    )


def test_outcome_of_an_error_names_its_type(clock: ManualClock) -> None:
    """An outcome recorded with an error has no status and the error's type name as reason."""
    pool = make_pool(clock)
    seen = Recorder()
    pool.subscribe(seen, per_request=True)
    with pool.acquire() as lease:
        lease.record(error=ConnectionRefusedError("refused"))
    (outcome,) = seen.of("outcome")
    assert outcome.status is None
    assert outcome.reason == "ConnectionRefusedError"
    assert outcome.latency == 0.0


def test_released_lease_has_no_outcome(clock: ManualClock) -> None:
    """A lease released without an outcome (cancelled request) emits a pick but no outcome."""
    pool = make_pool(clock)
    seen = Recorder()
    pool.subscribe(seen, per_request=True)
    with pool.acquire():
        pass
    assert seen.kinds() == ["pick"]


def test_state_subscribers_get_no_per_request_events(clock: ManualClock) -> None:
    """A plain subscriber sees state changes only; picks and outcomes are opt-in."""
    pool = make_pool(clock)
    seen = Recorder()
    pool.subscribe(seen)
    with pool.acquire() as lease:
        lease.record(status=200)
    pool.emit(Event(kind="retry", pool="api"))
    assert seen.events == []
    pool.eject(URLS[0], 30.0, reason="5 consecutive 5xx")
    assert seen.kinds() == ["ejected"]


def test_ejection_and_return(clock: ManualClock) -> None:
    """Ejection and its end by time or early are events naming endpoint and reason."""
    pool = make_pool(clock)
    seen = Recorder()
    pool.subscribe(seen)
    pool.eject(URLS[0], 30.0, reason="5 consecutive 5xx")
    clock.advance(30.0)
    pool.acquire().release()  # time-driven changes apply at the next acquisition
    pool.eject(URLS[1], 30.0, reason="gateway failures")
    pool.uneject(URLS[1], reason="active check passed")
    assert [(e.kind, e.url, e.reason, e.at) for e in seen.events] == [
        ("ejected", URLS[0], "5 consecutive 5xx", 1000.0),
        ("unejected", URLS[0], "ejection time elapsed", 1030.0),
        ("ejected", URLS[1], "gateway failures", 1030.0),
        ("unejected", URLS[1], "active check passed", 1030.0),
    ]


def test_health_transitions_and_panic(clock: ManualClock) -> None:
    """Health transitions are events; losing too many endpoints enters panic, and picks say so."""
    pool = make_pool(clock)
    seen = Recorder()
    pool.subscribe(seen, per_request=True)
    pool.mark_unhealthy(URLS[0], reason="HTTP 500")
    pool.mark_unhealthy(URLS[1], reason="timeout")
    pool.acquire().release()
    pool.mark_healthy(URLS[0], reason="HTTP 200")
    assert [(e.kind, e.url, e.reason) for e in seen.events] == [
        ("unhealthy", URLS[0], "HTTP 500"),
        ("unhealthy", URLS[1], "timeout"),
        ("panic_entered", None, "0/2 endpoints available"),
        ("pick", seen.of("pick")[0].url, ""),
        ("healthy", URLS[0], "HTTP 200"),
        ("panic_left", None, "1/2 endpoints available"),
    ]
    assert seen.of("pick")[0].panic


def test_membership_changes(clock: ManualClock) -> None:
    """Adding, reweighting and removing endpoints are events."""
    pool = make_pool(clock)
    seen = Recorder()
    pool.subscribe(seen)
    pool.add("http://10.0.0.3:8000")
    pool.set_weight("http://10.0.0.3:8000", 3)
    pool.remove("http://10.0.0.3:8000")
    assert [(e.kind, e.url) for e in seen.events] == [
        ("endpoint_added", "http://10.0.0.3:8000"),
        ("weight_changed", "http://10.0.0.3:8000"),
        ("endpoint_removed", "http://10.0.0.3:8000"),
    ]


def test_subsets_report_to_the_pool_subscribers(clock: ManualClock) -> None:
    """Picks and outcomes of a shuffle-shard subset reach the pool's per-request subscribers."""
    pool = make_pool(clock)
    subset = pool.subset([URLS[1]])
    seen = Recorder()
    pool.subscribe(seen, per_request=True)
    with subset.acquire() as lease:
        lease.record(status=200)
    assert [(e.kind, e.url) for e in seen.events] == [("pick", URLS[1]), ("outcome", URLS[1])]


def test_adapters_emit_retry_events_through_the_pool(clock: ManualClock) -> None:
    """`Pool.emit` delivers retry and budget events to per-request subscribers; not an Event: TypeError."""
    pool = make_pool(clock)
    seen = Recorder()
    pool.subscribe(seen, per_request=True)
    retry = Event(kind="retry", pool="api", url=URLS[0], reason="ConnectError")
    exhausted = Event(kind="retry_budget_exhausted", pool="api")
    pool.emit(retry)
    pool.emit(exhausted)
    assert seen.events == [retry, exhausted]
    with pytest.raises(TypeError, match="must be an Event"):
        pool.emit("retry")  # type: ignore[arg-type]


def test_unsubscribe_stops_every_event(clock: ManualClock) -> None:
    """After unsubscribing, a handler receives neither state changes nor per-request events."""
    pool = make_pool(clock)
    seen = Recorder()
    unsubscribe = pool.subscribe(seen, per_request=True)
    unsubscribe()
    unsubscribe()  # idempotent
    with pool.acquire() as lease:
        lease.record(status=200)
    pool.eject(URLS[0], 1.0)
    assert seen.events == []


def test_a_failing_handler_does_not_break_traffic(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that raises is logged; the request goes on."""
    pool = make_pool(clock)

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    pool.subscribe(broken, per_request=True)
    with pool.acquire() as lease:
        lease.record(status=200)
    assert lease.released
    assert any("event handler" in r.getMessage() for r in caplog.records)


def test_subscribe_checks_the_handler(clock: ManualClock) -> None:
    """A handler that is not callable is a TypeError at subscription, not at the first event."""
    with pytest.raises(TypeError, match="handler must be callable"):
        make_pool(clock).subscribe("print")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="handler must be callable"):
        make_gateway(clock).subscribe(42)  # type: ignore[arg-type]


# -- the gateway -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_admitted_rate_limit_and_outcome(clock: ManualClock) -> None:
    """An admission emits rate_limit, pick, admitted and an outcome that names the tenant."""
    gateway = make_gateway(clock, limits=[tlb.Rate(10, per=60.0)])
    seen = Recorder()
    gateway.subscribe(seen, per_request=True)
    gateway.pools["shared"].subscribe(seen, per_request=True)
    async with gateway.admit(request(KEYS["acme"])) as ticket:
        clock.advance(0.5)
        ticket.record(status=200)
    assert seen.kinds() == ["rate_limit", "pick", "admitted", "outcome"]
    decision, _, admitted, outcome = seen.events
    assert decision.tenant == "acme"
    assert decision.pool == "shared"
    assert decision.allowed is True
    assert decision.remaining == pytest.approx(9.0)
    assert decision.retry_after == 0.0
    assert (admitted.tenant, admitted.pool, admitted.url, admitted.panic) == (
        "acme",
        "shared",
        ticket.endpoint.url,
        False,
    )
    assert (outcome.tenant, outcome.status, outcome.latency) == ("acme", 200, 0.5)


@pytest.mark.anyio
async def test_rate_limit_refusal(clock: ManualClock) -> None:
    """A denied decision is a rate_limit event (allowed False, retry_after) then a refusal."""
    gateway = make_gateway(clock, limits=[tlb.Rate(1, per=60.0)])
    seen = Recorder()
    gateway.subscribe(seen, per_request=True)
    async with gateway.admit(request(KEYS["acme"])) as ticket:
        ticket.record(status=200)
    with pytest.raises(tlb.RateLimited):
        async with gateway.admit(request(KEYS["acme"])):
            pass
    denied = seen.of("rate_limit")[-1]
    assert denied.allowed is False
    assert denied.retry_after is not None
    assert 59.0 < denied.retry_after <= 60.0
    (refused,) = seen.of("refused")
    assert (refused.reason, refused.status, refused.tenant, refused.pool) == (
        "rate_limited",
        429,
        "acme",
        "shared",
    )


async def _refusal(gateway: tlb.Gateway, info: tlb.RequestInfo) -> tuple[Event, Exception]:
    seen = Recorder()
    unsubscribe = gateway.subscribe(seen, per_request=True)
    try:
        with pytest.raises(tlb.RequestRejected) as caught:
            async with gateway.admit(info):
                pass
    finally:
        unsubscribe()
    (event,) = seen.of("refused")
    return event, caught.value


@pytest.mark.anyio
async def test_refusals_name_their_reason_and_status(clock: ManualClock) -> None:
    """Each refusal is one event with its fixed reason code and the status an adapter answers."""
    gateway = make_gateway(clock, max_concurrency=1)
    cases = {
        "unauthenticated": request(None),
        "forbidden": request("sk-initech-0123456789ab"),
    }
    for reason, info in cases.items():
        event, exc = await _refusal(gateway, info)
        assert (event.reason, event.status) == (reason, exc.status)  # type: ignore[attr-defined]
    async with gateway.admit(request(KEYS["acme"])):
        event, exc = await _refusal(gateway, request(KEYS["acme"]))
    assert (event.reason, event.status, event.tenant) == ("over_capacity", 503, "acme")

    unknown = tlb.Gateway(
        registry=tlb.TenantRegistry(
            [tlb.Tenant("acme", upstream="shared")], resolvers=[tlb.HeaderResolver("x-tenant")]
        ),
        pools={"shared": tlb.Pool(URLS, clock=clock)},
    )
    event, exc = await _refusal(unknown, request(None))
    assert (event.reason, event.status, event.tenant, event.pool) == (
        "unknown_tenant",
        401,
        None,
        "",
    )
    empty = make_gateway(clock, urls=[])
    event, exc = await _refusal(empty, request(KEYS["globex"]))
    assert (event.reason, event.status, event.tenant) == ("no_healthy_endpoint", 503, "globex")


@pytest.mark.anyio
async def test_refusals_never_carry_the_key(clock: ManualClock) -> None:
    """A wrong key is refused without the key or its digest in any field of the event."""
    gateway = make_gateway(clock)
    wrong = "sk-wrong-0123456789abcdef"
    event, _ = await _refusal(gateway, request(wrong))
    text = repr(event)
    assert wrong not in text
    assert tlb.hash_api_key(wrong).split(":")[1] not in text
    assert event.tenant is None


@pytest.mark.anyio
async def test_reroute_is_a_retry_event(clock: ManualClock) -> None:
    """`Ticket.reroute` emits a retry naming the failed endpoint; the next outcome names the tenant."""
    gateway = make_gateway(clock)
    seen = Recorder()
    gateway.subscribe(seen, per_request=True)
    gateway.pools["shared"].subscribe(seen, per_request=True)
    async with gateway.admit(request(KEYS["globex"])) as ticket:
        first = ticket.endpoint.url
        ticket.reroute(ConnectionRefusedError("refused"))
        ticket.record(status=200)
    (retry,) = seen.of("retry")
    assert (retry.pool, retry.url, retry.tenant, retry.reason) == (
        "shared",
        first,
        "globex",
        "ConnectionRefusedError",
    )
    assert [(e.url, e.status, e.tenant) for e in seen.of("outcome")] == [
        (first, None, "globex"),
        (ticket.endpoint.url, 200, "globex"),
    ]


@pytest.mark.anyio
async def test_store_outage_and_recovery(
    own_redis: RedisServer, anyio_backend: tuple[str, Any]
) -> None:
    """A RedisStore behind a gateway reports one store_unavailable per outage and one recovery."""
    client = redis.Redis.from_url(own_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = tlb.RedisStore(client, on_error="fail_open")
    gateway = make_gateway(limits=[tlb.Rate(100, per=60.0)], store=store)
    seen = Recorder()
    gateway.subscribe(seen)
    with contextlib.closing(client):
        for _ in range(2):
            async with gateway.admit(request(KEYS["acme"])):
                pass
        own_redis.stop()
        for _ in range(3):  # fail_open admits while Redis is down
            async with gateway.admit(request(KEYS["acme"])):
                pass
        own_redis.start()
        async with gateway.admit(request(KEYS["acme"])):
            pass
    assert seen.kinds() == ["store_unavailable", "store_recovered"]
    assert seen.events[0].reason.endswith("on_error=fail_open")


def test_subsets_emit_through_their_pool(clock: ManualClock) -> None:
    """A retry reported on a shuffle-shard subset reaches the pool's per-request subscribers."""
    pool = make_pool(clock)
    seen = Recorder()
    pool.subscribe(seen, per_request=True)
    retry = Event(kind="retry", pool="api", url=URLS[1], reason="ReadError")
    pool.subset([URLS[1]]).emit(retry)
    assert seen.events == [retry]


def test_lease_tenant_tag(clock: ManualClock) -> None:
    """A lease names no tenant until tagged; a tag must be a str or None."""
    pool = make_pool(clock)
    seen = Recorder()
    pool.subscribe(seen, per_request=True)
    with pool.acquire() as lease:
        assert lease.tenant is None
        lease.tenant = "acme"
        with pytest.raises(TypeError, match="tenant must be a str or None"):
            lease.tenant = 42  # type: ignore[assignment]
        lease.record(status=204)
    assert seen.of("outcome")[0].tenant == "acme"


@pytest.mark.anyio
async def test_gateway_relays_events_from_emit(clock: ManualClock) -> None:
    """`Gateway.emit` routes per-request kinds to per-request subscribers only."""
    gateway = make_gateway(clock)
    state, traffic = Recorder(), Recorder()
    gateway.subscribe(state)
    gateway.subscribe(traffic, per_request=True)
    exhausted = Event(kind="retry_budget_exhausted", pool="shared", tenant="acme")
    outage = Event(kind="store_unavailable", reason="test")
    gateway.emit(exhausted)
    gateway.emit(outage)
    assert state.events == [outage]
    assert traffic.events == [exhausted, outage]
    with pytest.raises(TypeError, match="must be an Event"):
        gateway.emit(None)  # type: ignore[arg-type]
