"""Argument checks for the whole package: one message format, and errors that name their field.

Messages name the argument and the offending value, anyio-style: ``"choices must be >= 2, got 1"``.
A wrong type is a `FieldTypeError` (a `TypeError`), a bad value a `FieldValueError` (a
`ValueError`); both carry ``.field``, the argument's name, so the config loader reports the exact
path of the bad field without reading the message. Like `_errors` and `_clock`, this module imports
nothing of tenantlb.
"""

from __future__ import annotations

import math

__all__ = [
    "FieldError",
    "FieldTypeError",
    "FieldValueError",
    "between",
    "check_cost",
    "check_key",
    "count",
    "number",
    "optional_count",
    "percent",
    "positive",
    "require_type",
    "seconds",
    "unchecked_cost",
]


class FieldError(Exception):
    """A bad argument; ``.field`` is its name (``"per"``, ``"weight"``)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class FieldTypeError(FieldError, TypeError):
    """An argument of the wrong type."""


class FieldValueError(FieldError, ValueError):
    """An argument of the right type with a bad value."""


def number(name: str, value: object) -> float:
    """Return *value* as a float if it is an int or float (not a bool), else `FieldTypeError`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{name} must be a number, got {type(value).__name__}"
        raise FieldTypeError(msg, field=name)
    try:
        return float(value)
    except OverflowError:  # an int beyond a float's range (10**400): a bad value, not a crash
        msg = f"{name} must be a finite number, got an integer of {len(str(abs(value)))} digits"
        raise FieldValueError(msg, field=name) from None


def positive(name: str, value: object, *, above: float = 0.0, allow_equal: bool = False) -> float:
    """Return *value* as a float if it is a finite number > *above* (>= with *allow_equal*)."""
    result = number(name, value)
    ok = result >= above if allow_equal else result > above
    if not (ok and math.isfinite(result)):
        op = ">=" if allow_equal else ">"
        msg = f"{name} must be {op} {above:g} and finite, got {value!r}"
        raise FieldValueError(msg, field=name)
    return result


def seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return *value* as a float if it is a finite number of seconds > 0 (>= 0 with *allow_zero*)."""
    return positive(name, value, allow_equal=allow_zero)


def between(name: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    """Return *value* as a float if ``low <= value <= high`` (``low < value`` with *low_open*)."""
    result = number(name, value)
    if not ((low < result if low_open else low <= result) and result <= high):
        bounds = f"in ({low:g}, {high:g}]" if low_open else f"between {low:g} and {high:g}"
        msg = f"{name} must be {bounds}, got {value!r}"
        raise FieldValueError(msg, field=name)
    return result


def percent(name: str, value: object) -> float:
    """Return *value* as a float if it is a number between 0 and 100."""
    return between(name, value, 0, 100)


def count(name: str, value: object, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return *value* if it is an int >= *minimum* (and <= *maximum*, if given)."""
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int, got {type(value).__name__}"
        raise FieldTypeError(msg, field=name)
    if maximum is not None and not minimum <= value <= maximum:
        msg = f"{name} must be between {minimum} and {maximum}, got {value!r}"
        raise FieldValueError(msg, field=name)
    if value < minimum:
        msg = f"{name} must be >= {minimum}, got {value!r}"
        raise FieldValueError(msg, field=name)
    return value


def optional_count(name: str, value: object) -> int | None:
    """Like `count`, but None (a disabled feature, no cap) passes through."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int or None, got {type(value).__name__}"
        raise FieldTypeError(msg, field=name)
    return count(name, value)


def require_type(
    field: str, value: object, expected: type | tuple[type, ...], description: str
) -> None:
    """Raise ``FieldTypeError("<field> must be <description>, got <type>")`` unless *value* fits."""
    if not isinstance(value, expected):
        msg = f"{field} must be {description}, got {type(value).__name__}"
        raise FieldTypeError(msg, field=field)


def check_key(key: object) -> None:
    """A limiter key: a non-empty str."""
    if not isinstance(key, str):
        msg = f"key must be a str, got {type(key).__name__}"
        raise FieldTypeError(msg, field="key")
    if not key:
        msg = "key must be a non-empty str, got ''"
        raise FieldValueError(msg, field="key")


def check_cost(cost: object, max_cost: float) -> None:
    """A request's cost: a finite number > 0 and at most *max_cost* (the smallest burst)."""
    value = positive("cost", cost)
    if value > max_cost:
        msg = f"cost must be <= {max_cost!r} (the smallest burst of the limiter), got {cost!r}"
        raise FieldValueError(msg, field="cost")


def unchecked_cost(max_cost: float) -> float:
    """The cost the hot paths may skip `check_cost` for: 1, unless 1 exceeds *max_cost*.

    ``cost != unchecked_cost(m)`` is as cheap as ``cost != 1``; NaN compares unequal to every
    cost, so with a capacity below 1 (``Rate(0.5)``) the default cost is checked (and refused).
    """
    return 1 if max_cost >= 1 else math.nan
