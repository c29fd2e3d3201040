"""A failing outcome observer never leaks a tenant's slot nor replaces the request's own error."""

from __future__ import annotations

import logging

import pytest

import tenantlb as tlb
from tenantlb.balancing import EndpointState


class BrokenObserver:
    """A user's outcome observer (the OutcomeObserver protocol) with a bug: it always raises."""

    wake_at = float("-inf")

    def attach(self, pool: tlb.Pool) -> None:
        self.pool = pool

    def observe(
        self, state: EndpointState, status: int | None, error: BaseException | None, now: float
    ) -> None:
        raise OverflowError("ejection time overflowed")


def gateway() -> tlb.Gateway:
    pool = tlb.Pool(["http://a:1"], name="p", outlier_detector=BrokenObserver())  # type: ignore[arg-type]
    registry = tlb.TenantRegistry(
        [
            tlb.Tenant(
                "acme", api_keys=[tlb.hash_api_key("sk-acme")], upstream="p", max_concurrency=1
            )
        ]
    )
    return tlb.Gateway(registry=registry, pools={"p": pool})


REQUEST = tlb.RequestInfo("GET", "/", [("x-api-key", "sk-acme")])


@pytest.mark.anyio
async def test_error_in_the_block_survives_a_failing_observer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request's ConnectionError propagates, the observer's bug is logged, the slot is free."""
    gw = gateway()
    with caplog.at_level(logging.ERROR, logger="tenantlb"):
        for _ in range(3):  # max_concurrency=1: a leaked slot would refuse the second admission
            with pytest.raises(ConnectionError):
                async with gw.admit(REQUEST):
                    raise ConnectionError("upstream reset")
    assert "outcome observer" in caplog.text
    assert gw.pools["p"].stats().in_flight == 0


@pytest.mark.anyio
async def test_recorded_status_survives_a_failing_observer() -> None:
    """ticket.record(status=503) with a failing observer neither raises nor leaks the slot."""
    gw = gateway()
    for _ in range(3):
        async with gw.admit(REQUEST) as ticket:
            ticket.record(status=503)
    assert gw.pools["p"].stats().in_flight == 0
