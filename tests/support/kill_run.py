"""The kill-one-backend run shared by the client adapters' end-to-end tests.

2,000 GETs go to three real backends; one is SIGKILLed after 500 have completed. `KillRun`
counts answers, kills the victim, and checks afterwards that no request failed, that the dead
backend got no attempt in the second half of the run, and that nothing is left in flight.
"""

from __future__ import annotations

import threading
from collections import Counter

import tenantlb as tlb
from tests.support.backends import BackendProcess

TOTAL = 2000
KILL_AT = 500  # completed requests before the SIGKILL
CHECK_FROM = 1200  # from here on, the dead backend must get no attempt at all


def make_pool(backends: list[BackendProcess]) -> tlb.Pool:
    """A PeakEWMA pool over *backends* whose outlier detector ejects at the first failure.

    One failure, not Envoy's five: PeakEWMA's failure penalty alone already starves a dead
    endpoint, so it may never collect five in a row, and a probe of it once the penalty has
    decayed would be traffic to the dead backend. The ejection outlasts the run.
    """
    detector = tlb.OutlierDetector(
        consecutive_5xx=1, max_ejection_percent=50, base_ejection_time=120.0
    )
    return tlb.Pool([b.url for b in backends], outlier_detector=detector)


class KillRun:
    """Counts completions, kills the victim once at KILL_AT, snapshots its attempts at CHECK_FROM."""

    def __init__(self, pool: tlb.Pool, victim: BackendProcess) -> None:
        self.pool = pool
        self.victim = victim
        self.victim_url = victim.url
        self.lock = threading.Lock()
        self.done = 0
        self.backends: Counter[str] = Counter()
        self.attempts_at_check: int | None = None
        self.failures: list[BaseException] = []
        self.budget: tlb.RetryBudget | None = None

    def failed(self, exc: BaseException) -> None:
        """Count one request that raised (the test fails at `verify`, with the details)."""
        with self.lock:
            self.failures.append(exc)

    def attempts(self) -> int:
        return {e.url: e.requests for e in self.pool.stats().endpoints}[self.victim_url]

    def completed(self, status: int, backend: str) -> None:
        """Count one answer (thread-safe); kill or snapshot when the count says so."""
        assert status == 200, (status, backend)
        with self.lock:
            self.done += 1
            self.backends[backend] += 1
            done = self.done
        if done == KILL_AT:
            self.victim.kill()
        elif done == CHECK_FROM:
            self.attempts_at_check = self.attempts()

    def verify(self) -> None:
        """Zero failures, the dead backend starved, nothing left in flight."""
        details = (self.failures[:3], self.budget and self.budget.stats(), self.pool.stats())
        assert not self.failures, details
        assert self.done == TOTAL, (self.done, details)  # every GET answered 200
        assert self.backends[self.victim.name] > 0, self.backends  # it served before it died
        assert self.attempts_at_check is not None
        # no attempt after it was found dead
        assert self.attempts() == self.attempts_at_check, (self.attempts_at_check, details)
        assert self.pool.stats().in_flight == 0, details
