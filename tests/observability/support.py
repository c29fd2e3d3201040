"""A small gateway and an event recorder shared by the observability tests."""

from __future__ import annotations

from typing import Any

import tenantlb as tlb
from tenantlb.observability import Event
from tenantlb.testing import ManualClock

KEYS = {"acme": "sk-acme-0123456789abcdef", "globex": "sk-globex-0123456789abcdef"}
URLS = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]


class Recorder:
    """An event handler that keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def request(key: str | None = None, path: str = "/v1/chat") -> tlb.RequestInfo:
    headers = [] if key is None else [("x-api-key", key)]
    return tlb.RequestInfo("GET", path, headers)


def make_gateway(
    clock: ManualClock | None = None,
    *,
    limits: list[tlb.Rate] | None = None,
    max_concurrency: int | None = None,
    urls: list[str] | None = None,
    **kwargs: Any,
) -> tlb.Gateway:
    """Tenants acme and globex on pool "shared" (round robin), initech disabled."""
    clock = clock or ManualClock()
    tenants = [
        tlb.Tenant(
            tenant_id,
            api_keys=[tlb.hash_api_key(KEYS[tenant_id])],
            upstream="shared",
            limits=limits or [],
            max_concurrency=max_concurrency,
        )
        for tenant_id in ("acme", "globex")
    ]
    tenants.append(
        tlb.Tenant(
            "initech",
            api_keys=[tlb.hash_api_key("sk-initech-0123456789ab")],
            upstream="shared",
            enabled=False,
        )
    )
    pool = tlb.Pool(
        URLS if urls is None else urls, balancer=tlb.RoundRobin(), name="shared", clock=clock
    )
    return tlb.Gateway(registry=tlb.TenantRegistry(tenants), pools={"shared": pool}, **kwargs)
