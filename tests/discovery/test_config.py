"""Discovery from the config file: ``[pools.x] discovery = {...}`` runs inside ``async with gateway``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tenantlb as tlb
from tenantlb.config import build_gateway, validate_config

from .conftest import Dnsmasq

pytestmark = pytest.mark.anyio


def document(discovery: dict[str, Any], **pool: Any) -> dict[str, Any]:
    return {
        "pools": {"api": {"discovery": discovery, "balancer": "round_robin", **pool}},
        "tenants": [{"id": "acme", "upstream": "api"}],
    }


def runner(gateway: tlb.Gateway) -> tlb.Discovery:
    (found,) = [s for s in gateway.services if isinstance(s, tlb.Discovery)]
    return found


async def test_file_discovery_from_config(tmp_path: Path) -> None:
    """A pool with only a discovery section starts empty and is filled by ``async with gateway``."""
    path = tmp_path / "endpoints.toml"
    path.write_text('endpoints = ["http://10.0.0.1:8000"]\n')
    gateway = build_gateway(document({"type": "file", "path": str(path), "interval": 60}))
    pool = gateway.pools["api"]
    assert len(pool) == 0
    async with gateway:
        assert [e.url for e in pool.endpoints] == ["http://10.0.0.1:8000"]
        found = runner(gateway)
        assert found.running
        assert found.interval == 60
        path.write_text('endpoints = ["http://10.0.0.2:8000"]\n')
        await found.refresh()
        assert [e.url for e in pool.endpoints] == ["http://10.0.0.2:8000"]
    assert not found.running


async def test_dns_discovery_from_config(dnsmasq: Dnsmasq) -> None:
    """``type = "dns"`` follows a name's A records; health checks start after the first lookup."""
    dnsmasq.set_hosts({"svc.internal": ["10.0.0.1", "10.0.0.2"]})
    spec = {
        "type": "dns",
        "name": "svc.internal",
        "port": 8000,
        "nameservers": [dnsmasq.nameserver],
        "interval": 30,
    }
    gateway = build_gateway(
        document(spec, health_check={"type": "tcp", "interval": 60, "timeout": 1})
    )
    kinds = [type(s).__name__ for s in gateway.services]
    assert kinds == ["DNSDiscovery", "HealthChecker"]  # the pool is filled before checks begin
    async with gateway:
        assert {e.url for e in gateway.pools["api"].endpoints} == {
            "http://10.0.0.1:8000",
            "http://10.0.0.2:8000",
        }


def test_static_endpoints_are_the_starting_set(tmp_path: Path) -> None:
    """Endpoints listed beside a discovery section are the pool's set until the first answer."""
    path = tmp_path / "endpoints.json"
    gateway = build_gateway(
        document({"type": "file", "path": str(path)}, endpoints=["http://seed:1"])
    )
    assert [e.url for e in gateway.pools["api"].endpoints] == ["http://seed:1"]


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"type": "consul"}, "pools.api.discovery.type", "must be 'dns' or 'file'"),
        ({"name": "svc.internal", "port": 80}, "pools.api.discovery.type", "must be 'dns'"),
        ("dns", "pools.api.discovery", "must be a table"),
        (
            {"type": "dns", "nmae": "svc.internal", "port": 80},
            "pools.api.discovery.nmae",
            "unknown key",
        ),
        (
            {"type": "dns", "name": "svc.internal", "port": 70000},
            "pools.api.discovery.port",
            "port must be between 1 and 65535",
        ),
        (
            {"type": "dns", "name": "bad name!", "port": 80},
            "pools.api.discovery.name",
            "name must be a DNS hostname",
        ),
        (
            {"type": "dns", "name": "svc.internal", "port": 80, "interval": 0},
            "pools.api.discovery.interval",
            "interval must be > 0",
        ),
        (
            {"type": "dns", "name": "svc.internal", "port": 80, "nameservers": ["x:53"]},
            "pools.api.discovery.nameservers",
            "nameservers[0] must be 'IP' or 'IP:PORT'",
        ),
        (
            {"type": "file", "path": "endpoints.yaml"},
            "pools.api.discovery.path",
            "path must end in .toml or .json",
        ),
        ({"type": "file", "srv": "_x._tcp.a"}, "pools.api.discovery.srv", "unknown key"),
    ],
)
def test_bad_discovery_sections_name_the_path(spec: object, path: str, message: str) -> None:
    """A bad discovery section is a ConfigError at the exact field."""
    errors = validate_config(document(spec))  # type: ignore[arg-type]
    assert any(p == path and message in m for p, m in errors), errors


def test_endpoints_still_required_without_discovery() -> None:
    """A pool with neither endpoints nor discovery is still an error."""
    doc: dict[str, Any] = {
        "pools": {"api": {}},
        "tenants": [{"id": "acme", "upstream": "api"}],
    }
    errors = validate_config(doc)
    assert any(p == "pools.api.endpoints" for p, _ in errors), errors


async def test_gateway_relays_discovery_events(tmp_path: Path) -> None:
    """Discovery outages reach the gateway's subscribers (and so its exporters)."""
    path = tmp_path / "endpoints.toml"
    path.write_text('endpoints = ["http://10.0.0.1:8000"]\n')
    gateway = build_gateway(document({"type": "file", "path": str(path)}))
    seen: list[tlb.Event] = []
    gateway.subscribe(seen.append)
    async with gateway:
        path.write_text("endpoints = [")
        await runner(gateway).refresh()
        path.write_text('endpoints = ["http://10.0.0.2:8000"]\n')
        await runner(gateway).refresh()
    kinds = [e.kind for e in seen if e.kind.startswith("discovery_")]
    assert kinds == ["discovery_failed", "discovery_recovered"]
    assert all(e.pool == "api" for e in seen if e.kind.startswith("discovery_"))
