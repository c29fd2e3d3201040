"""Rate-limiting algorithms: each one's math, once in Python (memory) and once in Lua (Redis).

An algorithm keeps a small state per key and rate (a tuple of floats) and answers `Algorithm.step`:
may *cost* be spent *now*, and what is the state afterwards? A built-in algorithm writes that math
once, as `Algorithm.kernel` (a closure over one rate's constants, which `MemoryStore` calls
directly); the same formulas appear in the class's `lua` text, which `RedisStore` runs inside Redis
with the server's clock.

- `GCRA` (default): the generic cell rate algorithm; state is one timestamp (the theoretical arrival
  time). Equivalent to a leaky/token bucket of capacity ``burst`` refilled at ``limit / per``.
- `TokenBucket`: the same envelope, state ``(tokens, last)``.
- `SlidingWindow`: the sliding-window counter (Cloudflare): ``previous * overlap + current <= limit``.
- `FixedWindow`: ``limit`` per window of ``per`` seconds, windows aligned to the clock.

Guarantees (tested with hypothesis over a manual clock): for the bucket algorithms, the cost admitted
in any interval of length W is at most ``burst + W * limit / per``, and a request is denied only when
admitting it would break that bound. For the window algorithms, the cost admitted in any aligned
window is at most ``limit``; the sliding window admits at most ``2 * limit`` in any span of ``per``
seconds (its estimate assumes the previous window's traffic was even). Under steady load the sliding
window also admits about one unit per window *less* than ``limit``: after a window of ``limit - 1``,
the weighted previous count leaves room for the last unit only at the window's very end, so it
settles at ``limit - 1`` per window (91 in 10 s at 10/s, offered 100/s). Floats are compared with a
tolerance of `EPSILON` cost units, so rounding never denies the last unit of an allowance.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable
from typing import ClassVar, Final, NamedTuple, final

from .._registry import Registry
from ._rate import Rate

__all__ = [
    "ALGORITHMS",
    "EPSILON",
    "GCRA",
    "Algorithm",
    "FixedWindow",
    "Kernel",
    "KernelResult",
    "SlidingWindow",
    "State",
    "Step",
    "TokenBucket",
    "register_algorithm",
    "resolve_algorithm",
]

EPSILON: Final = 1e-6
"""Tolerance, in units of cost, when comparing floats (rounding must not deny the last unit)."""

State = tuple[float, ...]


KernelResult = tuple[bool, "State | None", float, float, float]
"""``(allowed, state, remaining, reset_after, retry_after)``: a `Step` as a plain tuple."""

Kernel = Callable[["State | None", float, float], KernelResult]
"""``kernel(state, now, cost)``: `Algorithm.step` for one fixed rate (see `Algorithm.kernel`)."""


class Step(NamedTuple):
    """The outcome of one `Algorithm.step` for one rate."""

    allowed: bool
    state: State | None
    remaining: float
    reset_after: float
    retry_after: float


class Algorithm(abc.ABC):
    """The extension point for rate-limiting algorithms: subclass it to add one.

    A subclass sets `name` (used in storage keys) and `lua` (a Lua chunk defining
    ``step(s, limit, per, burst, now, cost)`` returning ``ok, state, remaining, reset_after,
    retry_after, ttl`` and ``refund(s, limit, per, burst, now, cost)`` returning ``state_or_nil,
    ttl``; ``s`` is an array of numbers or ``nil``), and implements the same math in Python:
    `kernel` (fast, used by `MemoryStore` directly) or `step`, plus `refund` and `expires`.
    """

    name: ClassVar[str]
    lua: ClassVar[str]

    def capacity(self, rate: Rate) -> float:
        """The largest cost one request may have under *rate* (``burst`` for buckets)."""
        return rate.burst

    def step(self, state: State | None, rate: Rate, now: float, cost: float) -> Step:
        """Decide whether *cost* may be spent at *now*; *state* is None for a fresh key.

        The built-in algorithms define their math once, in `kernel`; this runs it. A new
        algorithm overrides either this or `kernel`.
        """
        kernel = _kernel_of(self, rate)
        if kernel is None:
            msg = f"{type(self).__name__} must implement step() or kernel()"
            raise NotImplementedError(msg)
        return Step(*kernel(state, now, cost))

    def kernel(self, rate: Rate) -> Kernel | None:
        """`step` for one fixed *rate*, as a fast closure ``(state, now, cost) -> KernelResult``.

        The rate's constants live in the closure and the result is a plain tuple, so a
        `MemoryStore` decision costs well under a microsecond (``step`` through a method call,
        attribute lookups and a `Step` per call costs ~2). None (the default) means the
        algorithm only implements `step`; `MemoryStore` then takes its generic path.
        """
        return None

    @abc.abstractmethod
    def refund(self, state: State | None, rate: Rate, now: float, cost: float) -> State | None:
        """Give *cost* back; returns the new state (None when it equals a fresh key)."""

    @abc.abstractmethod
    def expires(self, state: State, rate: Rate) -> float:
        """The time from which *state* behaves like a fresh key (so it may be dropped)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


@final
class GCRA(Algorithm):
    """Generic cell rate algorithm (ITU-T I.371 virtual scheduling); the default.

    With emission interval ``T = per / limit`` and tolerance ``tau = burst * T``, a request of cost
    ``c`` at ``now`` is admitted iff ``max(tat, now) + c*T - tau <= now``, and then
    ``tat = max(tat, now) + c*T``. One float of state per key.
    """

    name = "gcra"
    lua = """
local function step(s, limit, per, burst, now, cost)
  -- Offsets from now (d = tat - now), not absolute times: server time is ~1e8 s, and
  -- subtracting such large doubles would cost remaining ~1e-6 of precision.
  local T = per / limit
  local d = 0
  if s and s[1] > now then d = s[1] - now end
  local nd = d + cost * T
  local allow = nd - burst * T
  if allow <= EPSILON * T then
    local rem = -allow / T
    if rem < 0 then rem = 0 end
    return true, {now + nd}, rem, nd, 0, nd
  end
  local rem = (burst * T - d) / T
  if rem < 0 then rem = 0 end
  return false, s, rem, d, allow, d
end
local function refund(s, limit, per, burst, now, cost)
  if not s then return nil, 0 end
  local tat = s[1] - cost * per / limit
  if tat <= now then return nil, 0 end
  return {tat}, tat - now
end
"""

    def kernel(self, rate: Rate) -> Kernel:
        """See `Algorithm.kernel`: the math of this algorithm, for one rate."""
        interval = rate.per / rate.limit
        tau = rate.burst * interval
        eps = EPSILON * interval

        def step(state: State | None, now: float, cost: float) -> KernelResult:
            tat = state[0] if state is not None and state[0] > now else now
            new = tat + cost * interval
            allow_at = new - tau
            if allow_at - now <= eps:
                remaining = (now - allow_at) / interval
                return True, (new,), remaining if remaining > 0.0 else 0.0, new - now, 0.0
            remaining = (now + tau - tat) / interval
            return False, state, remaining if remaining > 0.0 else 0.0, tat - now, allow_at - now

        return step

    def refund(self, state: State | None, rate: Rate, now: float, cost: float) -> State | None:
        """See `Algorithm.refund`."""
        if state is None:
            return None
        tat = state[0] - cost * rate.per / rate.limit
        return (tat,) if tat > now else None

    def expires(self, state: State, rate: Rate) -> float:
        """See `Algorithm.expires`."""
        return state[0]


@final
class TokenBucket(Algorithm):
    """Token bucket: holds up to ``burst`` tokens, refilled continuously at ``limit / per``.

    State ``(tokens, last)``; admits a request of cost ``c`` iff ``c <= tokens``.
    """

    name = "token_bucket"
    lua = """
local function step(s, limit, per, burst, now, cost)
  local r = limit / per
  local tokens = burst
  if s then
    tokens = s[1] + (now - s[2]) * r
    if tokens > burst then tokens = burst end
  end
  if cost <= tokens + EPSILON then
    local left = tokens - cost
    if left < 0 then left = 0 end
    return true, {left, now}, left, (burst - left) / r, 0, (burst - left) / r
  end
  return false, s, tokens, (burst - tokens) / r, (cost - tokens) / r, (burst - tokens) / r
end
local function refund(s, limit, per, burst, now, cost)
  if not s then return nil, 0 end
  local r = limit / per
  local tokens = s[1] + (now - s[2]) * r + cost
  if tokens >= burst then return nil, 0 end
  return {tokens, now}, (burst - tokens) / r
end
"""

    def kernel(self, rate: Rate) -> Kernel:
        """See `Algorithm.kernel`: the math of this algorithm, for one rate."""
        refill = rate.limit / rate.per
        burst = rate.burst

        def step(state: State | None, now: float, cost: float) -> KernelResult:
            if state is None:
                tokens = burst
            else:
                tokens = state[0] + (now - state[1]) * refill
                tokens = tokens if tokens < burst else burst
            if cost <= tokens + EPSILON:
                left = tokens - cost
                left = left if left > 0.0 else 0.0
                return True, (left, now), left, (burst - left) / refill, 0.0
            return False, state, tokens, (burst - tokens) / refill, (cost - tokens) / refill

        return step

    def refund(self, state: State | None, rate: Rate, now: float, cost: float) -> State | None:
        """See `Algorithm.refund`."""
        if state is None:
            return None
        tokens = state[0] + (now - state[1]) * rate.limit / rate.per + cost
        return None if tokens >= rate.burst else (tokens, now)

    def expires(self, state: State, rate: Rate) -> float:
        """See `Algorithm.expires`."""
        return state[1] + (rate.burst - state[0]) * rate.per / rate.limit


class _Window(Algorithm):
    """What the window algorithms share: they count ``limit`` per window and ignore ``burst``."""

    def capacity(self, rate: Rate) -> float:
        """Window algorithms admit at most ``limit`` per request."""
        return rate.limit


@final
class SlidingWindow(_Window):
    """Sliding-window counter: ``previous * (1 - elapsed / per) + current + cost <= limit``.

    State ``(window index, previous count, current count)``; windows are ``per`` seconds long and
    aligned to the clock. ``burst`` is not used. Under steady load it admits about one unit per
    window less than ``limit`` (see the module docstring).
    """

    name = "sliding_window"
    lua = """
local function step(s, limit, per, burst, now, cost)
  local idx = math.floor(now / per)
  local prev, cur = 0, 0
  if s then
    if s[1] == idx then prev, cur = s[2], s[3]
    elseif s[1] == idx - 1 then prev = s[3] end
  end
  local start = idx * per
  local est = prev * (1 - (now - start) / per) + cur
  local reset = 0
  if cur > 0 then reset = start + 2 * per - now elseif prev > 0 then reset = start + per - now end
  if est + cost <= limit + EPSILON then
    local rem = limit - est - cost
    if rem < 0 then rem = 0 end
    return true, {idx, prev, cur + cost}, rem, start + 2 * per - now, 0, start + 2 * per - now
  end
  local room = limit - cur - cost
  local retry
  if room >= 0 and prev > 0 then
    retry = start + per * (1 - room / prev) - now
  elseif cur > 0 then
    retry = start + per + per * (1 - (limit - cost) / cur) - now
  else
    retry = start + per - now
  end
  if retry < 0 then retry = 0 end
  local rem = limit - est
  if rem < 0 then rem = 0 end
  return false, s, rem, reset, retry, reset
end
local function refund(s, limit, per, burst, now, cost)
  if not s then return nil, 0 end
  local idx = math.floor(now / per)
  if s[1] ~= idx then return s, (s[1] + 2) * per - now end
  local cur = s[3] - cost
  if cur < 0 then cur = 0 end
  return {s[1], s[2], cur}, (idx + 2) * per - now
end
"""

    def kernel(self, rate: Rate) -> Kernel:
        """See `Algorithm.kernel`: the math of this algorithm, for one rate."""
        per, limit = rate.per, rate.limit
        ceiling = limit + EPSILON
        span = 2 * per

        def step(state: State | None, now: float, cost: float) -> KernelResult:
            idx = now / per // 1.0
            prev = cur = 0.0
            if state is not None:
                if state[0] == idx:
                    prev, cur = state[1], state[2]
                elif state[0] == idx - 1:
                    prev = state[2]
            start = idx * per
            est = prev * (1 - (now - start) / per) + cur
            if est + cost <= ceiling:
                remaining = limit - est - cost
                return (
                    True,
                    (idx, prev, cur + cost),
                    remaining if remaining > 0.0 else 0.0,
                    start + span - now,
                    0.0,
                )
            room = limit - cur - cost
            if room >= 0 and prev > 0:
                retry = start + per * (1 - room / prev) - now
            elif cur > 0:
                retry = start + per + per * (1 - (limit - cost) / cur) - now
            else:
                retry = start + per - now
            if cur > 0:
                reset = start + span - now
            elif prev > 0:
                reset = start + per - now
            else:
                reset = 0.0
            remaining = limit - est
            return (
                False,
                state,
                remaining if remaining > 0.0 else 0.0,
                reset,
                retry if retry > 0.0 else 0.0,
            )

        return step

    def refund(self, state: State | None, rate: Rate, now: float, cost: float) -> State | None:
        """See `Algorithm.refund` (only cost of the current window can be given back)."""
        if state is None or state[0] != math.floor(now / rate.per):
            return state
        return (state[0], state[1], max(0.0, state[2] - cost))

    def expires(self, state: State, rate: Rate) -> float:
        """See `Algorithm.expires`."""
        return (state[0] + 2) * rate.per


@final
class FixedWindow(_Window):
    """Fixed window: at most ``limit`` per window of ``per`` seconds aligned to the clock.

    State ``(window index, count)``. ``burst`` is not used. Cheapest, but a client may spend up to
    ``2 * limit`` across a window boundary.
    """

    name = "fixed_window"
    lua = """
local function step(s, limit, per, burst, now, cost)
  local idx = math.floor(now / per)
  local count = 0
  if s and s[1] == idx then count = s[2] end
  local left = (idx + 1) * per - now
  if count + cost <= limit + EPSILON then
    local rem = limit - count - cost
    if rem < 0 then rem = 0 end
    return true, {idx, count + cost}, rem, left, 0, left
  end
  local rem = limit - count
  if rem < 0 then rem = 0 end
  return false, s, rem, left, left, left
end
local function refund(s, limit, per, burst, now, cost)
  if not s then return nil, 0 end
  local idx = math.floor(now / per)
  if s[1] ~= idx then return nil, 0 end
  local count = s[2] - cost
  if count <= 0 then return nil, 0 end
  return {idx, count}, (idx + 1) * per - now
end
"""

    def kernel(self, rate: Rate) -> Kernel:
        """See `Algorithm.kernel`: the math of this algorithm, for one rate."""
        per, limit = rate.per, rate.limit
        ceiling = limit + EPSILON

        def step(state: State | None, now: float, cost: float) -> KernelResult:
            idx = now / per // 1.0
            count = state[1] if state is not None and state[0] == idx else 0.0
            left = (idx + 1) * per - now
            if count + cost <= ceiling:
                remaining = limit - count - cost
                return True, (idx, count + cost), remaining if remaining > 0.0 else 0.0, left, 0.0
            remaining = limit - count
            return False, state, remaining if remaining > 0.0 else 0.0, left, left

        return step

    def refund(self, state: State | None, rate: Rate, now: float, cost: float) -> State | None:
        """See `Algorithm.refund` (only cost of the current window can be given back)."""
        if state is None or state[0] != math.floor(now / rate.per):
            return None
        count = state[1] - cost
        return (state[0], count) if count > 0 else None

    def expires(self, state: State, rate: Rate) -> float:
        """See `Algorithm.expires`."""
        return (state[0] + 1) * rate.per


ALGORITHMS: Final[Registry[Callable[..., Algorithm]]] = Registry("algorithm")
"""Algorithm factories by name (``Gateway(algorithm="gcra")``, config ``gateway.algorithm``)."""

register_algorithm = ALGORITHMS.register
"""``register_algorithm(name, factory, *, replace=False)``: add a algorithm factory to `ALGORITHMS`.

Also a class decorator: ``@register_algorithm("name")``. See `tenantlb._registry.Registry.register`;
a taken name is a ValueError unless *replace* is true.
"""

for _cls in (GCRA, TokenBucket, SlidingWindow, FixedWindow):
    register_algorithm(_cls.name, _cls)


@functools.lru_cache(maxsize=1024)
def _kernel_of(algorithm: Algorithm, rate: Rate) -> Kernel | None:
    # step() on the generic path (peek, user-visible Algorithm.step) reuses one closure per rate.
    return algorithm.kernel(rate)


def resolve_algorithm(algorithm: object) -> Algorithm:
    """Turn a registered name (``"gcra"``, ...) or an `Algorithm` instance into an `Algorithm`.

    Raises:
        TypeError: Neither a str nor an `Algorithm`.
        ValueError: An unknown name (the message lists the registered ones).
    """
    if isinstance(algorithm, Algorithm):
        return algorithm
    if isinstance(algorithm, str):
        made = ALGORITHMS.get(algorithm)()
        if not isinstance(made, Algorithm):
            msg = f"algorithm {algorithm!r} made a {type(made).__name__}, not an Algorithm"
            raise TypeError(msg)
        return made
    msg = f"algorithm must be a name (str) or an Algorithm, got {type(algorithm).__name__}"
    raise TypeError(msg)
