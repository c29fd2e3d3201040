"""Argument checks shared by the limiters (clear TypeError / ValueError messages)."""

from __future__ import annotations

import math

__all__ = ["check_cost", "check_key", "unchecked_cost"]


def check_key(key: object) -> None:
    if not isinstance(key, str):
        msg = f"key must be a str, got {type(key).__name__}"
        raise TypeError(msg)
    if not key:
        msg = "key must be a non-empty str, got ''"
        raise ValueError(msg)


def check_cost(cost: object, max_cost: float) -> None:
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        msg = f"cost must be a number, got {type(cost).__name__}"
        raise TypeError(msg)
    if not cost > 0 or cost == float("inf"):
        msg = f"cost must be a finite number > 0, got {cost!r}"
        raise ValueError(msg)
    if cost > max_cost:
        msg = f"cost must be <= {max_cost!r} (the smallest burst of the limiter), got {cost!r}"
        raise ValueError(msg)


def unchecked_cost(max_cost: float) -> float:
    """The cost the hot paths may skip `check_cost` for: 1, unless 1 exceeds *max_cost*.

    ``cost != unchecked_cost(m)`` is as cheap as ``cost != 1``; NaN compares unequal to every
    cost, so with a capacity below 1 (``Rate(0.5)``) the default cost is checked (and refused).
    """
    return 1 if max_cost >= 1 else math.nan
