"""Argument checks shared by every layer: one message format for every number.

Messages name the argument and the offending value, anyio-style: ``"choices must be >= 2, got 1"``;
a wrong type is a `TypeError`, a bad value a `ValueError`. Like `_errors` and `_clock`, this module
imports nothing of tenantlb.
"""

from __future__ import annotations

import math

__all__ = ["count", "optional_count", "percent", "seconds"]


def count(name: str, value: object, *, minimum: int = 1) -> int:
    """Return *value* if it is an int >= *minimum*, else raise TypeError / ValueError naming *name*."""
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int, got {type(value).__name__}"
        raise TypeError(msg)
    if value < minimum:
        msg = f"{name} must be >= {minimum}, got {value!r}"
        raise ValueError(msg)
    return value


def optional_count(name: str, value: object) -> int | None:
    """Like `count`, but None (a disabled feature, no cap) passes through."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int or None, got {type(value).__name__}"
        raise TypeError(msg)
    return count(name, value)


def seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return *value* as a float if it is a finite number > 0 (>= 0 with *allow_zero*)."""
    number = _number(name, value)
    ok = number >= 0 if allow_zero else number > 0
    if not (ok and math.isfinite(number)):
        msg = f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}"
        raise ValueError(msg)
    return number


def percent(name: str, value: object) -> float:
    """Return *value* as a float if it is a number between 0 and 100."""
    pct = _number(name, value)
    if not 0 <= pct <= 100:
        msg = f"{name} must be between 0 and 100, got {value!r}"
        raise ValueError(msg)
    return pct


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a number, got {type(value).__name__}"
        raise TypeError(msg)
    return float(value)
