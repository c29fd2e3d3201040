"""The OpenTelemetry exporter, read back through the SDK's in-memory reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import tenantlb as tlb
from tenantlb.config import build_gateway
from tenantlb.observability.otel import OTelMetrics
from tenantlb.testing import ManualClock

from .support import KEYS, URLS, make_gateway, request


@pytest.fixture
def sdk() -> Iterator[tuple[InMemoryMetricReader, MeterProvider]]:
    """An SDK meter provider whose metrics are read back in memory."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader, provider
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Data points by metric name: (attributes, point)."""
    data = reader.get_metrics_data()
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), point))
    return found


@pytest.mark.anyio
@pytest.mark.parametrize("tenant_label", [False, True])
async def test_measurements(
    sdk: tuple[InMemoryMetricReader, MeterProvider], clock: ManualClock, tenant_label: bool
) -> None:
    """Counters, the latency histogram and gauges carry the documented attributes and values."""
    gateway = make_gateway(clock, limits=[tlb.Rate(1, per=60.0)])
    reader, provider = sdk
    OTelMetrics(gateway, meter_provider=provider, tenant_label=tenant_label)
    async with gateway.admit(request(KEYS["acme"])) as ticket:
        clock.advance(0.3)
        ticket.record(status=200)
    with pytest.raises(tlb.RateLimited):
        async with gateway.admit(request(KEYS["acme"])):
            pass
    gateway.pools["shared"].eject(URLS[1], 10.0)
    found = points(reader)
    tenant = {"tenant": "acme"} if tenant_label else {}

    ((attributes, point),) = found["tenantlb.upstream.requests"]
    assert attributes == {"pool": "shared", "endpoint": URLS[0], "outcome": "2xx", **tenant}
    assert point.value == 1
    ((attributes, point),) = found["tenantlb.upstream.request.duration"]
    assert (point.count, point.sum) == (1, pytest.approx(0.3))
    assert [(a, p.value) for a, p in found["tenantlb.admissions"]] == [
        ({"pool": "shared", **tenant}, 1)
    ]
    assert [(a, p.value) for a, p in found["tenantlb.refusals"]] == [
        ({"reason": "rate_limited", **tenant}, 1)
    ]
    decisions = {a["decision"]: p.value for a, p in found["tenantlb.rate_limit.decisions"]}
    assert decisions == {"allowed": 1, "refused": 1}
    assert [(a, p.value) for a, p in found["tenantlb.ejections"]] == [
        ({"pool": "shared", "endpoint": URLS[1]}, 1)
    ]
    ejected = {a["endpoint"]: p.value for a, p in found["tenantlb.endpoint.ejected"]}
    assert ejected == {URLS[0]: 0, URLS[1]: 1}
    in_flight = {a["endpoint"]: p.value for a, p in found["tenantlb.endpoint.in_flight"]}
    assert in_flight == {URLS[0]: 0, URLS[1]: 0}
    assert [p.value for _, p in found["tenantlb.pool.panic"]] == [0]
    gateway_in_flight = [(a, p.value) for a, p in found["tenantlb.gateway.in_flight"]]
    assert gateway_in_flight == ([({"tenant": "acme"}, 0)] if tenant_label else [({}, 0)])
    text = repr(found)
    assert KEYS["acme"] not in text
    assert tlb.hash_api_key(KEYS["acme"]).split(":", 1)[1] not in text


def test_close_stops_recording(
    sdk: tuple[InMemoryMetricReader, MeterProvider], clock: ManualClock
) -> None:
    """After close(), outcomes are no longer recorded and the gauges report nothing."""
    pool = tlb.Pool(URLS, name="api", clock=clock)
    reader, provider = sdk
    metrics = OTelMetrics(pool, meter_provider=provider)
    with pool.acquire() as lease:
        lease.record(error=ConnectionResetError())
    metrics.close()
    with pool.acquire() as lease:
        lease.record(status=200)
    found = points(reader)
    assert [(a["outcome"], p.value) for a, p in found["tenantlb.upstream.requests"]] == [
        ("error", 1)
    ]
    assert "tenantlb.endpoint.in_flight" not in found


@pytest.mark.anyio
async def test_discovery_outages_are_counted_per_pool(
    sdk: tuple[InMemoryMetricReader, MeterProvider], tmp_path: Path
) -> None:
    """A pool's service discovery failing is one counted outage however many refreshes fail."""
    path = tmp_path / "endpoints.toml"
    path.write_text('endpoints = ["http://10.0.0.1:8000"]\n')
    gateway = build_gateway(
        {
            "pools": {"api": {"discovery": {"type": "file", "path": str(path)}}},
            "tenants": [{"id": "acme", "upstream": "api"}],
        }
    )
    reader, provider = sdk
    OTelMetrics(gateway, meter_provider=provider)
    (found,) = [s for s in gateway.services if isinstance(s, tlb.Discovery)]
    async with gateway:
        path.write_text("endpoints = [")
        await found.refresh()
        await found.refresh()
    assert [(a, p.value) for a, p in points(reader)["tenantlb.discovery.outages"]] == [
        ({"pool": "api"}, 1)
    ]
