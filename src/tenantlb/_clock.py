"""The clock: a zero-argument callable returning seconds as a float.

Every time-based component takes ``clock=`` (default `time.monotonic`), so tests drive time with
`tenantlb.testing.ManualClock` instead of sleeping. Only differences between readings matter.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "default_clock"]


class Clock(Protocol):
    """Anything called with no arguments that returns the current time in seconds."""

    def __call__(self) -> float: ...


default_clock: Clock = time.monotonic
