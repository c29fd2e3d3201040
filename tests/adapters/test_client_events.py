"""Client adapters report retries and retry-budget refusals as events to per-request subscribers."""

from __future__ import annotations

import httpx

import tenantlb as tlb
from tenantlb.adapters.httpx import BalancingTransport
from tests.support.backends import start_backends


def test_retries_and_budget_refusals_are_events() -> None:
    """A 503 retried on another endpoint emits `retry`; a budget that says no emits
    `retry_budget_exhausted`; both name the endpoint that failed and the status."""
    with start_backends("e1", "e2") as backends:
        pool = tlb.Pool([b.url for b in backends], name="api", outlier_detector=None)
        events: list[tlb.Event] = []
        pool.subscribe(events.append, per_request=True)
        transport = BalancingTransport({"api": pool}, retries=1)
        with httpx.Client(transport=transport) as client:
            assert client.get("http://api/status/503").status_code == 503
        retries = [e for e in events if e.kind == "retry"]
        assert len(retries) == 1
        assert retries[0].pool == "api"
        assert retries[0].reason == "503"
        assert retries[0].url in {b.url for b in backends}

        events.clear()
        stingy = tlb.RetryBudget(ratio=0.0, min_retries_per_second=0)
        transport = BalancingTransport({"api": pool}, retries=1, retry_budget=stingy)
        with httpx.Client(transport=transport) as client:
            assert client.get("http://api/status/503").status_code == 503
        kinds = [e.kind for e in events]
        assert "retry_budget_exhausted" in kinds
        assert "retry" not in kinds
        assert pool.stats().in_flight == 0
