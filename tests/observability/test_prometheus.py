"""The Prometheus collector: parseable text, right values, tenant labels only when allowed, no keys."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import tenantlb as tlb
from tenantlb.config import build_gateway
from tenantlb.observability.prometheus import PrometheusMetrics
from tenantlb.testing import ManualClock
from tests.conftest import RedisServer

from .support import KEYS, URLS, make_gateway, request


def scrape(
    registry: CollectorRegistry,
) -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
    """The exposition text and its samples by sample name, parsed by prometheus-client itself."""
    text = generate_latest(registry).decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return text, samples


async def traffic(gateway: tlb.Gateway, clock: ManualClock) -> None:
    """Two admitted requests of acme (a 200 and a 503), one refusal by rate limit, one wrong key."""
    for status in (200, 503):
        async with gateway.admit(request(KEYS["acme"])) as ticket:
            clock.advance(0.2)
            ticket.record(status=status)
    with pytest.raises(tlb.RateLimited):
        async with gateway.admit(request(KEYS["acme"])):
            pass
    with pytest.raises(tlb.Unauthenticated):
        async with gateway.admit(request("sk-wrong-0123456789abcdef")):
            pass


@pytest.mark.anyio
async def test_exposition_parses_and_counts(clock: ManualClock) -> None:
    """Requests, latency, admissions, refusals and decisions appear with the right values."""
    gateway = make_gateway(clock, limits=[tlb.Rate(2, per=60.0)])
    registry = CollectorRegistry()
    PrometheusMetrics(gateway, registry=registry)
    await traffic(gateway, clock)
    gateway.pools["shared"].eject(URLS[0], 30.0, reason="test")
    _, samples = scrape(registry)

    requests = {
        (s["endpoint"], s["outcome"]): v for s, v in samples["tenantlb_upstream_requests_total"]
    }
    assert requests == {(URLS[0], "2xx"): 1.0, (URLS[1], "5xx"): 1.0}
    counts = {
        s["endpoint"]: v for s, v in samples["tenantlb_upstream_request_duration_seconds_count"]
    }
    assert counts == {URLS[0]: 1.0, URLS[1]: 1.0}
    sums = [v for _, v in samples["tenantlb_upstream_request_duration_seconds_sum"]]
    assert sums == [pytest.approx(0.2)] * 2
    assert samples["tenantlb_admissions_total"] == [({"pool": "shared"}, 2.0)]
    refusals = {s["reason"]: v for s, v in samples["tenantlb_refusals_total"]}
    assert refusals == {"rate_limited": 1.0, "unauthenticated": 1.0}
    decisions = {s["decision"]: v for s, v in samples["tenantlb_rate_limit_decisions_total"]}
    assert decisions == {"allowed": 2.0, "refused": 1.0}
    assert samples["tenantlb_ejections_total"] == [({"pool": "shared", "endpoint": URLS[0]}, 1.0)]
    ejected = {s["endpoint"]: v for s, v in samples["tenantlb_endpoint_ejected"]}
    assert ejected == {URLS[0]: 1.0, URLS[1]: 0.0}
    assert samples["tenantlb_pool_available_endpoints"] == [({"pool": "shared"}, 1.0)]
    assert samples["tenantlb_gateway_in_flight"] == [({}, 0.0)]


@pytest.mark.anyio
async def test_gauges_read_live_state(clock: ManualClock) -> None:
    """In-flight gauges show requests being served at scrape time."""
    gateway = make_gateway(clock)
    registry = CollectorRegistry()
    PrometheusMetrics(gateway, registry=registry, tenant_label=True)
    async with gateway.admit(request(KEYS["globex"])) as ticket:
        _, samples = scrape(registry)
        ticket.record(status=200)
    in_flight = {s["endpoint"]: v for s, v in samples["tenantlb_endpoint_in_flight"]}
    assert in_flight == {ticket.endpoint.url: 1.0, URLS[1]: 0.0}
    assert samples["tenantlb_gateway_in_flight"] == [({"tenant": "globex"}, 1.0)]


@pytest.mark.anyio
@pytest.mark.parametrize("tenant_label", [False, True])
async def test_tenant_label_only_when_allowed(clock: ManualClock, tenant_label: bool) -> None:
    """Tenant ids are label values only with tenant_label=True; never a key or its digest."""
    gateway = make_gateway(clock, limits=[tlb.Rate(2, per=60.0)])
    registry = CollectorRegistry()
    PrometheusMetrics(gateway, registry=registry, tenant_label=tenant_label)
    await traffic(gateway, clock)
    text, samples = scrape(registry)

    labelled = [name for name, rows in samples.items() if any("tenant" in s for s, _ in rows)]
    if tenant_label:
        assert set(labelled) >= {
            "tenantlb_upstream_requests_total",
            "tenantlb_upstream_request_duration_seconds_count",
            "tenantlb_admissions_total",
            "tenantlb_refusals_total",
            "tenantlb_rate_limit_decisions_total",
        }
        refusals = {(s["reason"], s["tenant"]) for s, _ in samples["tenantlb_refusals_total"]}
        assert refusals == {("rate_limited", "acme"), ("unauthenticated", "")}
    else:
        assert labelled == []
        assert "acme" not in text
    for key in (KEYS["acme"], "sk-wrong-0123456789abcdef"):
        digest = tlb.hash_api_key(key)
        assert key not in text
        assert digest not in text
        assert digest.split(":", 1)[1] not in text


def test_bare_pool_and_close(clock: ManualClock) -> None:
    """A pool can be watched without a gateway; close() unsubscribes and unregisters."""
    pool = tlb.Pool(URLS, name="api", clock=clock)
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(pool, pool, registry=registry, namespace="myapp")
    metrics.watch(pool)  # watched once however often it is given
    with pool.acquire() as lease:
        lease.record(error=TimeoutError())
    _, samples = scrape(registry)
    assert samples["myapp_upstream_requests_total"] == [
        ({"pool": "api", "endpoint": lease.url, "outcome": "error"}, 1.0)
    ]
    metrics.close()
    with pool.acquire() as lease:
        lease.record(status=200)
    assert "myapp_upstream_requests_total" not in scrape(registry)[1]
    metrics.close()  # idempotent


def test_bad_arguments(clock: ManualClock) -> None:
    """A source that is neither a gateway nor a pool, or an empty namespace, is refused clearly."""
    with pytest.raises(TypeError, match="Gateway or Pool"):
        PrometheusMetrics("pool", registry=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        PrometheusMetrics(registry=None, namespace="")
    with pytest.raises(ValueError, match="buckets"):
        PrometheusMetrics(registry=None, buckets=())


@pytest.mark.anyio
async def test_store_outage_metrics(own_redis: RedisServer, anyio_backend: tuple[str, Any]) -> None:
    """A Redis outage shows as store_available 0 while it lasts and one counted outage."""
    client = redis.Redis.from_url(own_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    gateway = make_gateway(
        limits=[tlb.Rate(100, per=60.0)], store=tlb.RedisStore(client, on_error="fail_open")
    )
    registry = CollectorRegistry()
    PrometheusMetrics(gateway, registry=registry)
    with contextlib.closing(client):
        async with gateway.admit(request(KEYS["acme"])):
            pass
        assert scrape(registry)[1]["tenantlb_store_available"] == [({}, 1.0)]
        own_redis.stop()
        async with gateway.admit(request(KEYS["acme"])):
            pass
        down = scrape(registry)[1]
        own_redis.start()
        async with gateway.admit(request(KEYS["acme"])):
            pass
        up = scrape(registry)[1]
    assert down["tenantlb_store_available"] == [({}, 0.0)]
    assert up["tenantlb_store_available"] == [({}, 1.0)]
    assert up["tenantlb_store_outages_total"] == [({}, 1.0)]
    stats = gateway.stats().store
    assert isinstance(stats, tlb.ratelimit.RedisStoreStats)
    assert (stats.available, stats.outages) == (True, 1)


@pytest.mark.anyio
async def test_discovery_outages_are_counted_per_pool(tmp_path: Path) -> None:
    """A pool's service discovery failing is one counted outage however many refreshes fail."""
    path = tmp_path / "endpoints.toml"
    path.write_text('endpoints = ["http://10.0.0.1:8000"]\n')
    gateway = build_gateway(
        {
            "pools": {"api": {"discovery": {"type": "file", "path": str(path)}}},
            "tenants": [{"id": "acme", "upstream": "api"}],
        }
    )
    registry = CollectorRegistry()
    PrometheusMetrics(gateway, registry=registry)
    (found,) = [s for s in gateway.services if isinstance(s, tlb.Discovery)]
    async with gateway:
        path.write_text("endpoints = [")  # a broken file: refreshes fail, endpoints are kept
        await found.refresh()
        await found.refresh()
        path.write_text('endpoints = ["http://10.0.0.2:8000"]\n')
        await found.refresh()
        path.write_text("endpoints = [")
        await found.refresh()
    assert scrape(registry)[1]["tenantlb_discovery_outages_total"] == [({"pool": "api"}, 2.0)]
