"""Argument checks shared by the limiters (clear TypeError / ValueError messages)."""

from __future__ import annotations

__all__ = ["check_cost", "check_key"]


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
