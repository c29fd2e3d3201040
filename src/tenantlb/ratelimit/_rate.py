"""`Rate`: how much cost a key may spend per period, and how much of it at once."""

from __future__ import annotations

from fractions import Fraction
from typing import final

import attrs

from .._validate import FieldTypeError, FieldValueError, positive

__all__ = ["Rate"]

_SLOWEST = 1e-12  # about one unit in 30,000 years
_FASTEST = 1e15


def _check_limit(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    positive(attribute.name, value)


def _check_burst(_: object, attribute: attrs.Attribute[float], value: float | None) -> None:
    if value is not None:
        positive(attribute.name, value)


def _check_name(_: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        msg = f"name must be a str, got {type(value).__name__}"
        raise FieldTypeError(msg, field="name")
    # The name goes into a structured-field string (RateLimit headers): printable ASCII only.
    if not value or not all(" " <= ch <= "~" for ch in value):
        msg = f"name must be non-empty printable ASCII, got {value!r}"
        raise FieldValueError(msg, field="name")


@final
@attrs.define(frozen=True)
class Rate:
    """A quota: *limit* units of cost per *per* seconds, of which *burst* may be spent at once.

    ```python
    Rate(100)                      # 100 a second, all 100 usable at once
    Rate(100, per=1.0, burst=20)   # 100 a second, at most 20 back to back
    Rate(10_000, per=3600, name="hourly")
    ```

    The bucket algorithms (GCRA, token bucket) refill continuously at ``limit / per`` and hold at
    most ``burst``; the window algorithms (sliding and fixed window) count ``limit`` per window of
    ``per`` seconds and ignore ``burst``.

    Attributes:
        limit: Units of cost per period (> 0; need not be an integer).
        per: The period in seconds (> 0).
        burst: The most that may be spent at once; defaults to *limit*.
        name: The policy name shown in ``RateLimit`` headers; defaults to e.g. ``"100-per-1s"``.

    Raises:
        TypeError: A value is not a number (or *name* not a str).
        ValueError: A value is <= 0 or not finite, the rate is outside 1e-12..1e15 units a
            second, or *name* is empty or not printable ASCII.
    """

    limit: float = attrs.field(validator=_check_limit)
    per: float = attrs.field(default=1.0, validator=_check_limit)
    burst: float = attrs.field(default=None, validator=_check_burst)  # None: same as limit
    name: str | None = attrs.field(default=None, kw_only=True, validator=_check_name)
    # Derived once, used on every decision and header: not part of the value.
    _policy: tuple[str, int, int] = attrs.field(init=False, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        if self.burst is None:
            object.__setattr__(self, "burst", self.limit)  # type: ignore[unreachable,unused-ignore]
        # limit and per are each finite, but their ratio can still be 0 or infinite (1e-10 per
        # 1e300 s): bound the rate so every later computation stays finite.
        per_second = self.limit / self.per
        if not (_SLOWEST <= per_second <= _FASTEST):
            msg = (
                f"limit / per must be between {_SLOWEST:g} and {_FASTEST:g} units a second, "
                f"got {self.limit!r} per {self.per!r} s"
            )
            raise FieldValueError(msg, field="limit")
        quota, window = _integer_policy(self.limit, self.per)
        label = self.name if self.name is not None else f"{quota}-per-{window}s"
        object.__setattr__(self, "_policy", (label, quota, window))

    @property
    def label(self) -> str:
        """The policy name used in headers: *name*, or ``"<q>-per-<w>s"``."""
        return self._policy[0]

    @property
    def quota(self) -> int:
        """The quota *q* of the ``RateLimit-Policy`` header (an integer, as the draft requires)."""
        return self._policy[1]

    @property
    def window(self) -> int:
        """The window *w* in seconds of the ``RateLimit-Policy`` header (an integer)."""
        return self._policy[2]

    @property
    def interval(self) -> float:
        """Seconds it takes to earn back one unit of cost (``per / limit``)."""
        return self.per / self.limit


def _integer_policy(limit: float, per: float) -> tuple[int, int]:
    """Express limit/per as integers q/w (the header needs integers): 0.5 per 1s is q=1;w=2."""
    ratio = Fraction(limit) / Fraction(per)
    if float(per).is_integer() and float(limit).is_integer():
        return int(limit), int(per)
    approx = ratio.limit_denominator(86_400)
    if approx.numerator > 0:
        return approx.numerator, approx.denominator
    # Slower than one unit a day: one unit per (rounded) interval, never a more generous quota.
    return 1, max(1, round(per / limit))
