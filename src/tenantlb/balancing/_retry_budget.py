"""`RetryBudget`: cap retries to a share of recent requests, so retries cannot multiply an outage.

```python
budget = tlb.RetryBudget(ratio=0.2, ttl=10.0, min_retries_per_second=10)
budget.deposit()                  # once per request
if budget.try_withdraw():         # once per retry: False means "do not retry"
    ...
```

Finagle's ``RetryBudget``: each request deposits ``ratio`` of a retry, each retry withdraws a
whole one, and what was deposited or withdrawn more than ``ttl`` seconds ago no longer counts.
(Envoy's ``retry_budget`` states the same idea over requests in flight instead of a time window.) A reserve of ``min_retries_per_second * ttl`` retries is
always available on top, so a client with little traffic can still retry at all. With the defaults,
retries stay within 20% of the last ten seconds' requests plus 10 a second: when an upstream dies,
load on the others grows by at most that, not by the ``retries`` multiple.

Sans-I/O: the budget is arithmetic on a clock reading, guarded by a lock, so one budget can be
shared by threads, asyncio and trio (and by several transports or proxies).
"""

from __future__ import annotations

import math
import threading
from typing import final

import attrs

from .._clock import Clock, default_clock

__all__ = ["RetryBudget", "RetryBudgetStats"]

_UNIT = 1000  # integer arithmetic: a retry costs 1000 units, a request deposits ratio * 1000
_SLOTS = 10  # the window is kept as 10 slices of ttl / 10 (Finagle's WindowedAdder does the same)


@final
@attrs.define(frozen=True, kw_only=True)
class RetryBudgetStats:
    """A snapshot of a `RetryBudget`.

    Attributes:
        requests: Requests deposited since the budget was created.
        retries: Retries the budget allowed.
        exhausted: Retries the budget refused.
        available: Retries it would allow right now (whole retries, reserve included).
    """

    requests: int
    retries: int
    exhausted: int
    available: int


@final
class RetryBudget:
    """Allow retries up to *ratio* of the requests of the last *ttl* seconds, plus a floor.

    Args:
        ratio: Retries allowed per request (>= 0); 0.2 lets 20% of requests be retried.
        ttl: Seconds a deposit or withdrawal counts for (> 0; Finagle's default is 10).
        min_retries_per_second: The floor (>= 0): ``min_retries_per_second * ttl`` retries per
            window are allowed whatever the traffic (Finagle's default is 10).
        clock: Seconds as a float (default `time.monotonic`); tests pass a manual clock.

    Raises:
        TypeError: A parameter is not a number.
        ValueError: *ratio* or *min_retries_per_second* < 0, *ttl* <= 0, or one is not finite.
    """

    __slots__ = (
        "_clock",
        "_deposit",
        "_exhausted",
        "_lock",
        "_requests",
        "_reserve",
        "_retries",
        "_slot_width",
        "_slots",
        "_tick",
        "_total",
        "min_retries_per_second",
        "ratio",
        "ttl",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.2,
        ttl: float = 10.0,
        min_retries_per_second: float = 10.0,
        clock: Clock = default_clock,
    ) -> None:
        self.ratio = _non_negative("ratio", ratio)
        self.ttl = _non_negative("ttl", ttl)
        if self.ttl <= 0:
            msg = f"ttl must be > 0 and finite, got {ttl!r}"
            raise ValueError(msg)
        self.min_retries_per_second = _non_negative(
            "min_retries_per_second", min_retries_per_second
        )
        if not callable(clock):
            msg = f"clock must be a callable returning seconds, got {type(clock).__name__}"
            raise TypeError(msg)
        self._clock = clock
        self._lock = threading.Lock()
        self._deposit = round(self.ratio * _UNIT)
        self._reserve = round(self.min_retries_per_second * self.ttl * _UNIT)
        self._slot_width = self.ttl / _SLOTS
        self._slots = [0] * _SLOTS  # net units per slice; slot i holds tick i mod _SLOTS
        self._tick = math.floor(clock() / self._slot_width)
        self._total = 0  # sum of _slots
        self._requests = 0
        self._retries = 0
        self._exhausted = 0

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio:g}, ttl={self.ttl:g}, "
            f"min_retries_per_second={self.min_retries_per_second:g})"
        )

    def deposit(self) -> None:
        """Count one request (call it once per request, not per retry)."""
        with self._lock:
            self._advance()
            self._slots[self._tick % _SLOTS] += self._deposit
            self._total += self._deposit
            self._requests += 1

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; False (and counted as exhausted) if none is left."""
        with self._lock:
            self._advance()
            if self._total + self._reserve < _UNIT:
                self._exhausted += 1
                return False
            self._slots[self._tick % _SLOTS] -= _UNIT
            self._total -= _UNIT
            self._retries += 1
            return True

    def stats(self) -> RetryBudgetStats:
        """A frozen snapshot of the counters and the retries available now."""
        with self._lock:
            self._advance()
            return RetryBudgetStats(
                requests=self._requests,
                retries=self._retries,
                exhausted=self._exhausted,
                available=max(0, (self._total + self._reserve) // _UNIT),
            )

    def _advance(self) -> None:
        # Caller holds the lock: forget the slices that fell out of the window since the last call.
        tick = math.floor(self._clock() / self._slot_width)
        if tick <= self._tick:
            return  # same slice (or a clock that went back: keep counting in the newest slice)
        slots = self._slots
        if tick - self._tick >= _SLOTS:
            slots[:] = [0] * _SLOTS
            self._total = 0
        else:
            for t in range(self._tick + 1, tick + 1):
                i = t % _SLOTS
                self._total -= slots[i]
                slots[i] = 0
        self._tick = tick


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a number, got {type(value).__name__}"
        raise TypeError(msg)
    if not (value >= 0 and math.isfinite(value)):
        msg = f"{name} must be >= 0 and finite, got {value!r}"
        raise ValueError(msg)
    return float(value)
