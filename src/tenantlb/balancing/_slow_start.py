"""`SlowStart`: Envoy's slow start mode, ramping a new endpoint's weight over a window."""

from __future__ import annotations

from typing import final

import attrs

from .._validate import between, positive

__all__ = ["SlowStart"]


@final
@attrs.define(frozen=True, kw_only=True)
class SlowStart:
    """Ramp a new endpoint's weight up over ``window`` seconds (Envoy's slow start mode).

    ``weight * max(min_weight_percent / 100, time_factor ** (1 / aggression))`` with
    ``time_factor = max(seconds_since_start, 1) / window``. An endpoint enters slow start when it is
    added to a running pool or returns to health; endpoints the pool starts with do not (they are all
    equally cold). Weighted strategies honour it; hashing strategies see the ramped weight too, so
    keys may move during the window.

    Attributes:
        window: Length of the ramp in seconds (> 0).
        aggression: Curve shape (> 0); 1.0 is linear, larger ramps faster early on.
        min_weight_percent: Floor of the ramped weight, in percent of the full weight (0-100].
    """

    window: float
    aggression: float = 1.0
    min_weight_percent: float = 10.0

    def __attrs_post_init__(self) -> None:
        positive("window", self.window)
        positive("aggression", self.aggression)
        between("min_weight_percent", self.min_weight_percent, 0, 100, low_open=True)

    def factor(self, age: float) -> float:
        """The weight multiplier for an endpoint *age* seconds into its slow start (1.0 when done)."""
        time_factor = max(age, 1.0) / self.window
        if time_factor >= 1.0:
            return 1.0
        ramped: float = time_factor ** (1.0 / self.aggression)
        return max(self.min_weight_percent / 100.0, ramped)

    @property
    def step(self) -> float:
        """How often ramped weights are recomputed: 1/20 of the window, at least 50 ms."""
        return max(self.window / 20.0, 0.05)
