"""The sliding window's known steady-state shortfall is documented next to its guarantee."""

from __future__ import annotations

import tenantlb as tlb
from tenantlb.ratelimit import _algorithms
from tenantlb.testing import ManualClock


def test_shortfall_is_documented_next_to_the_guarantee() -> None:
    """The module docstring, where the guarantees are, says a steady load gets limit - 1 a window."""
    doc = " ".join((_algorithms.__doc__ or "").split())
    guarantees = doc[doc.index("Guarantees") :]
    assert "about one unit per window *less* than ``limit``" in guarantees
    assert "91 in 10 s at 10/s" in guarantees


def test_shortfall_is_what_the_docs_say() -> None:
    """At 10/s with requests offered every 10 ms, the sliding window admits 10, then 9 a second."""
    clock = ManualClock()
    limiter = tlb.RateLimiter(
        [tlb.Rate(10, per=1.0)], store=tlb.MemoryStore(clock=clock), algorithm="sliding_window"
    )
    per_second = [0] * 10
    for tick in range(1000):
        clock.set(tick / 100)
        per_second[tick // 100] += limiter.acquire_nowait("k").allowed
    assert per_second == [10] + [9] * 9
