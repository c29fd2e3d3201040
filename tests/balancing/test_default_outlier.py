"""Default pools avoid failing endpoints: passive outlier detection is on unless turned off."""

from __future__ import annotations

from collections import Counter

import pytest

import tenantlb as tlb
from tenantlb.testing import ManualClock

GOOD = ["http://good-1:8000", "http://good-2:8000"]
FAILING = "http://failing:8000"  # answers 503 at once
REFUSING = "http://refusing:8000"  # refuses connections


def share_to_bad(pool: tlb.Pool, clock: ManualClock, n: int = 3000) -> float:
    hits: Counter[str] = Counter()
    for _ in range(n):
        clock.advance(0.01)  # 100 requests a second, one at a time
        with pool.acquire() as lease:
            url = lease.endpoint.url
            hits[url] += 1
            clock.advance(0.0005 if url in (FAILING, REFUSING) else 0.005)
            if url == FAILING:
                lease.record(status=503)
            elif url == REFUSING:
                lease.record(error=ConnectionRefusedError("refused"))
            else:
                lease.record(status=200)
    return (hits[FAILING] + hits[REFUSING]) / n


def test_default_pool_avoids_failing_endpoints() -> None:
    """With 2 of 4 endpoints failing, a default pool sends them under 1 % of 3,000 requests."""
    clock = ManualClock(0.0)
    pool = tlb.Pool([*GOOD, FAILING, REFUSING], clock=clock)
    assert isinstance(pool.outlier_detector, tlb.OutlierDetector)
    assert share_to_bad(pool, clock) < 0.01


def test_outlier_detection_can_be_turned_off() -> None:
    """outlier_detector=None turns it off: failing endpoints keep getting P2C's share."""
    clock = ManualClock(0.0)
    # A balancer blind to failures: PeakEWMA (three candidates and the previous pick) would
    # avoid them on its own.
    balancer = tlb.LeastRequest()
    pool = tlb.Pool([*GOOD, FAILING, REFUSING], balancer, clock=clock, outlier_detector=None)
    assert pool.outlier_detector is None
    assert share_to_bad(pool, clock) > 0.02


def test_config_turns_detection_off_with_false() -> None:
    """`outlier_detection = false` in a config turns it off; absent means Envoy's defaults."""
    config = {
        "pools": {
            "on": {"endpoints": GOOD},
            "off": {"endpoints": GOOD, "outlier_detection": False},
            "tuned": {"endpoints": GOOD, "outlier_detection": {"consecutive_5xx": 2}},
        }
    }
    pools = tlb.Gateway.from_config(config).pools
    assert isinstance(pools["on"].outlier_detector, tlb.OutlierDetector)
    assert pools["off"].outlier_detector is None
    tuned = pools["tuned"].outlier_detector
    assert isinstance(tuned, tlb.OutlierDetector)
    assert tuned.consecutive_5xx == 2


def test_a_bad_detector_is_a_typed_error() -> None:
    """Anything but a detector, 'default' or None is a TypeError naming the argument."""
    with pytest.raises(TypeError, match="outlier_detector must be"):
        tlb.Pool(GOOD, outlier_detector="on")  # type: ignore[arg-type]
