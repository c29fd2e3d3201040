"""Helpers for testing code that uses tenantlb: a manual clock.

```python
from tenantlb.testing import ManualClock

clock = ManualClock()
pool = tenantlb.Pool(["http://a:1"], clock=clock)
clock.advance(30.0)
```
"""

from __future__ import annotations

import math
import threading
from typing import final

__all__ = ["ManualClock"]


@final
class ManualClock:
    """A clock that only moves when told to; pass it as ``clock=`` to any tenantlb component.

    Args:
        start: The initial reading, in seconds.
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float = 0.0) -> None:
        if not math.isfinite(start):
            msg = f"start must be finite, got {start!r}"
            raise ValueError(msg)
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"

    def advance(self, seconds: float) -> float:
        """Move the clock forward by *seconds* (>= 0) and return the new reading."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            msg = f"seconds must be a finite number >= 0, got {seconds!r}"
            raise ValueError(msg)
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """Jump to *now*; a monotonic clock never goes back, so *now* must not be in the past."""
        if not (math.isfinite(now) and now >= self._now):
            msg = f"now must be finite and >= the current reading {self._now!r}, got {now!r}"
            raise ValueError(msg)
        self._now = float(now)
