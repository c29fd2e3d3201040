"""`Decision`: what a rate limiter answered, and the HTTP headers that say so."""

from __future__ import annotations

import math
from typing import NamedTuple

from ._algorithms import EPSILON
from ._rate import Rate

__all__ = ["Decision"]


# A NamedTuple rather than an attrs class: a frozen attrs instance costs ~1.3 us to build, a tuple
# ~0.13 us, and one Decision is built per request on the hot path.
class Decision(NamedTuple):
    """The answer of a rate limiter for one request (immutable).

    Attributes:
        allowed: Whether the cost was admitted (and consumed).
        remaining: Cost still admissible now under `policy` (after this request, if allowed).
        reset_after: Seconds until `policy` is back to its full allowance.
        retry_after: Seconds until the same request could be admitted (0.0 when allowed;
            `math.inf` if it can never be, e.g. a fail-closed store).
        policy: The `Rate` that decided: the one that denied, or the one closest to its limit.
        policies: Every `Rate` of the limiter, for the ``RateLimit-Policy`` header.
    """

    allowed: bool
    remaining: float
    reset_after: float
    retry_after: float
    policy: Rate
    policies: tuple[Rate, ...]

    @property
    def limit(self) -> float:
        """The limit of the deciding `policy` (``policy.limit``)."""
        return self.policy.limit

    def headers(self, *, legacy: bool = False) -> list[tuple[str, str]]:
        """HTTP response headers describing this decision.

        By default the fields of draft-ietf-httpapi-ratelimit-headers:
        ``RateLimit-Policy: "burst";q=100;w=1, "hourly";q=10000;w=3600`` (every policy) and
        ``RateLimit: "burst";r=42;t=1`` (the deciding one: remaining rounded down, reset rounded up,
        both with a tolerance of 1e-6 so float noise never changes a field; MemoryStore and
        RedisStore answer the same fields for the same state),
        plus ``Retry-After`` (whole seconds, rounded up, at least 1) on denial.

        Args:
            legacy: Emit the older ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining`` /
                ``X-RateLimit-Reset`` (seconds) trio instead of the draft fields.

        Returns:
            ``(name, value)`` pairs, ready for an ASGI/httpx/aiohttp response.
        """
        policy = self.policy
        remaining = max(0, math.floor(self.remaining + EPSILON))
        reset = max(0, math.ceil(self.reset_after - EPSILON))
        if legacy:
            headers = [
                ("X-RateLimit-Limit", str(policy.quota)),
                ("X-RateLimit-Remaining", str(remaining)),
                ("X-RateLimit-Reset", str(reset)),
            ]
        else:
            items = ", ".join(
                f"{_sf_string(p.label)};q={p.quota};w={p.window}" for p in self.policies
            )
            headers = [
                ("RateLimit-Policy", items),
                ("RateLimit", f"{_sf_string(policy.label)};r={remaining};t={reset}"),
            ]
        if not self.allowed:
            headers.append(("Retry-After", str(self.retry_after_seconds)))
        return headers

    @property
    def retry_after_seconds(self) -> int:
        """`retry_after` as the whole seconds of a ``Retry-After`` header (rounded up, >= 1)."""
        if self.allowed:
            return 0
        if not math.isfinite(self.retry_after):
            return max(1, math.ceil(self.policy.per))
        return max(1, math.ceil(self.retry_after - EPSILON))


def _sf_string(text: str) -> str:
    """An RFC 8941 sf-string (Rate validates names as printable ASCII)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
