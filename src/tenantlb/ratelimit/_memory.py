"""`MemoryStore`: rate-limit and concurrency state in this process.

O(1) per decision, no background threads or timers, thread-safe for sync callers (one uncontended
`threading.Lock` per limiter), bounded memory: idle keys are dropped by a lazy sweep that runs when
the table has doubled since the last one (amortised O(1)), and never more than *max_keys* are kept.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast, final

from .._clock import Clock
from ._algorithms import EPSILON, GCRA, Kernel, State
from ._decision import Decision
from ._rate import Rate
from ._store import ConcurrencySpec, RateSpec, Slot
from ._validate import check_cost, check_key, unchecked_cost

__all__ = ["MemoryStore"]

_new_decision = tuple.__new__  # builds a Decision without NamedTuple.__new__'s overhead
_MIN_SWEEP = 1024


@final
class MemoryStore:
    """Keeps limiter state in a dict in this process; the default store.

    One store may serve many limiters; limiters with the same rates, algorithm and name share
    state per key, as they would in Redis.

    Args:
        clock: Seconds as a float; `time.monotonic` by default, a `ManualClock` in tests.
        max_keys: The most keys kept per limiter. Idle keys go first; if live keys exceed it,
            the oldest are forgotten (those keys start afresh, so keep it well above your tenant count).

    Raises:
        TypeError: *clock* is not callable or *max_keys* not an int.
        ValueError: *max_keys* < 1.
    """

    __slots__ = ("_clock", "_concurrency", "_lock", "_max_keys", "_tables")

    def __init__(self, clock: Clock = time.monotonic, *, max_keys: int = 1_000_000) -> None:
        if not callable(clock):
            msg = f"clock must be callable, got {type(clock).__name__}"  # type: ignore[unreachable,unused-ignore]
            raise TypeError(msg)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int):
            msg = f"max_keys must be an int, got {type(max_keys).__name__}"
            raise TypeError(msg)
        if max_keys < 1:
            msg = f"max_keys must be >= 1, got {max_keys}"
            raise ValueError(msg)
        self._clock = clock
        self._max_keys = max_keys
        self._tables: dict[RateSpec, _Table] = {}
        self._concurrency: dict[ConcurrencySpec, _MemoryConcurrency] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore(max_keys={self._max_keys})"

    @property
    def clock(self) -> Clock:
        """The clock decisions are made with."""
        return self._clock

    def bind_rates(self, spec: RateSpec) -> _MemoryGCRA | _MemoryRates:
        """Return the backend deciding for *spec* (shared by limiters with an equal spec)."""
        fast = len(spec.rates) == 1 and type(spec.algorithm) is GCRA
        with self._lock:
            table = self._tables.get(spec)
            if table is None:
                expires: Callable[[Any], float] = float if fast else _expiry(spec)
                table = self._tables[spec] = _Table(self._max_keys, expires)
        if fast:
            return _MemoryGCRA(spec, table, self._clock)
        return _MemoryRates(spec, table, self._clock)

    def bind_concurrency(self, spec: ConcurrencySpec) -> _MemoryConcurrency:
        """Return the slot backend for *spec* (shared by limiters with an equal spec)."""
        with self._lock:
            backend = self._concurrency.get(spec)
            if backend is None:
                backend = self._concurrency[spec] = _MemoryConcurrency(spec)
            return backend

    def keys(self) -> int:
        """How many keys are held across all rate limiters (live and not yet swept)."""
        with self._lock:  # bind_rates (another thread) may add a table meanwhile
            tables = list(self._tables.values())
        return sum(len(t.states) for t in tables)


class _Table:
    """A dict of per-key state with a lazy sweep of idle keys and a hard cap."""

    __slots__ = ("expires", "lock", "max_keys", "states", "sweep_at")

    def __init__(self, max_keys: int, expires: Callable[[Any], float]) -> None:
        self.states: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.max_keys = max_keys
        self.sweep_at = min(_MIN_SWEEP, max_keys)
        self.expires = expires

    def sweep(self, now: float) -> None:
        """Drop idle keys; called (under the lock) when the table outgrew `sweep_at`.

        The GCRA fast path calls it *before* inserting a new key, so a full table must make
        room: ``>=`` below, or the table would hold ``max_keys + 1``.
        """
        states, expires = self.states, self.expires
        for key in [k for k, v in states.items() if expires(v) <= now]:
            del states[key]
        if len(states) >= self.max_keys:
            # Still over the cap with live keys: forget the oldest, down to 90% so the next
            # sweep is not on the very next insert.
            excess = len(states) - (self.max_keys * 9) // 10
            for key in list(itertools.islice(states, excess)):
                del states[key]
        self.sweep_at = min(max(_MIN_SWEEP, 2 * len(states)), self.max_keys)


def _expiry(spec: RateSpec) -> Callable[[Any], float]:
    algorithm, rates = spec.algorithm, spec.rates
    if len(rates) == 1:
        (rate,) = rates
        return lambda state: algorithm.expires(state, rate)

    def expires(states: tuple[State | None, ...]) -> float:
        return max(
            (algorithm.expires(s, r) for s, r in zip(states, rates, strict=True) if s is not None),
            default=-float("inf"),
        )

    return expires


class _MemoryGCRA:
    """The hot path: one rate, GCRA, state is one float (the theoretical arrival time)."""

    __slots__ = ("_clock", "_interval", "_lock", "_policies", "_rate", "_table", "acquire_nowait")

    def __init__(self, spec: RateSpec, table: _Table, clock: Clock) -> None:
        (rate,) = spec.rates
        self._rate = rate
        self._policies = spec.rates
        self._interval = rate.per / rate.limit
        self._table = table
        self._lock = table.lock
        self._clock = clock
        self.acquire_nowait = self.compile(rate.burst)

    def compile(self, max_cost: float) -> Callable[[str, float], Decision]:
        """Build ``acquire_nowait(key, cost=1)`` as a closure, arguments checked as RateLimiter does.

        A closure over local cells is the cheapest thing CPython can call and run: no attribute
        lookups on the hot path. `RateLimiter` installs it as its own ``acquire_nowait``.
        """
        table, rate, policies, clock, lock = (
            self._table,
            self._rate,
            self._policies,
            self._clock,
            self._lock,
        )
        states = table.states
        get = states.get
        acquire, release = lock.acquire, lock.release
        interval = self._interval
        tau = rate.burst * interval
        eps = EPSILON * interval
        new_decision, decision = _new_decision, Decision
        unchecked = unchecked_cost(max_cost)

        def acquire_nowait(key: str, cost: float = 1) -> Decision:
            if type(key) is not str or not key:
                check_key(key)
            if cost != unchecked:
                check_cost(cost, max_cost)
            acquire()  # try/finally with pre-bound methods is cheaper than `with lock:`
            try:
                now = clock()
                tat = get(key)
                if tat is None:
                    tat = now
                    if len(states) >= table.sweep_at:  # only a new key can grow the table
                        table.sweep(now)
                elif tat < now:
                    tat = now
                new = tat + cost * interval
                allow_at = new - tau
                if allow_at - now <= eps:
                    states[key] = new
                    remaining = (now - allow_at) / interval
                    return new_decision(
                        decision,
                        (
                            True,
                            remaining if remaining > 0.0 else 0.0,
                            new - now,
                            0.0,
                            rate,
                            policies,
                        ),
                    )
                remaining = (now + tau - tat) / interval
                return new_decision(
                    decision,
                    (
                        False,
                        remaining if remaining > 0.0 else 0.0,
                        tat - now,
                        allow_at - now,
                        rate,
                        policies,
                    ),
                )
            finally:
                release()

        return acquire_nowait

    async def acquire(self, key: str, cost: float) -> Decision:
        return self.acquire_nowait(key, cost)

    def peek_nowait(self, key: str, cost: float) -> Decision:
        with self._lock:
            now = self._clock()
            tat = self._table.states.get(key)
            step = GCRA().step(None if tat is None else (tat,), self._rate, now, cost)
        return Decision(
            step.allowed,
            step.remaining,
            step.reset_after,
            step.retry_after,
            self._rate,
            self._policies,
        )

    async def peek(self, key: str, cost: float) -> Decision:
        return self.peek_nowait(key, cost)

    def refund_nowait(self, key: str, cost: float) -> None:
        states = self._table.states
        with self._lock:
            tat = states.get(key)
            if tat is not None:
                tat -= cost * self._interval
                if tat > self._clock():
                    states[key] = tat
                else:
                    del states[key]

    async def refund(self, key: str, cost: float) -> None:
        self.refund_nowait(key, cost)


class _MemoryRates:
    """Any algorithm, any number of rates, checked atomically (a denial consumes nothing).

    With one rate the table holds that rate's state; with several, a tuple of them.
    """

    __slots__ = ("_algorithm", "_clock", "_fast", "_lock", "_rates", "_single", "_table")

    def __init__(self, spec: RateSpec, table: _Table, clock: Clock) -> None:
        self._rates = spec.rates
        self._algorithm = spec.algorithm
        self._table = table
        self._lock = table.lock
        self._clock = clock
        self._single = len(spec.rates) == 1
        max_cost = min(spec.algorithm.capacity(rate) for rate in spec.rates)
        self._fast = self.compile(max_cost)

    def _decide(self, key: str, cost: float, commit: bool) -> Decision:
        table = self._table
        rates, step = self._rates, self._algorithm.step
        if self._single:
            rate = rates[0]
            with self._lock:
                now = self._clock()
                chosen = step(table.states.get(key), rate, now, cost)
                if chosen.allowed and commit:
                    table.states[key] = chosen.state
                    if len(table.states) > table.sweep_at:
                        table.sweep(now)
            return _new_decision(
                Decision,
                (
                    chosen.allowed,
                    chosen.remaining,
                    chosen.reset_after,
                    chosen.retry_after,
                    rate,
                    rates,
                ),
            )
        with self._lock:
            now = self._clock()
            old: tuple[State | None, ...] | None = table.states.get(key)
            if old is None:
                old = (None,) * len(rates)
            steps = [step(s, r, now, cost) for s, r in zip(old, rates, strict=True)]
            index = pick(steps)
            chosen = steps[index]
            if chosen.allowed and commit:
                table.states[key] = tuple(s.state for s in steps)
                if len(table.states) > table.sweep_at:
                    table.sweep(now)
        return _new_decision(
            Decision,
            (
                chosen.allowed,
                chosen.remaining,
                chosen.reset_after,
                chosen.retry_after,
                rates[index],
                rates,
            ),
        )

    def acquire_nowait(self, key: str, cost: float) -> Decision:
        if self._fast is not None:
            return self._fast(key, cost)
        return self._decide(key, cost, True)

    async def acquire(self, key: str, cost: float) -> Decision:
        return self.acquire_nowait(key, cost)

    def compile(self, max_cost: float) -> Callable[[str, float], Decision] | None:
        """Build ``acquire_nowait(key, cost=1)`` from the rates' kernels (None without kernels).

        The same decision as `_decide` (tests prove it), without a method call, attribute
        lookup or `Step` per rate; `RateLimiter` installs it as its own ``acquire_nowait``, and
        ``acquire`` uses it too. Arguments are checked as `RateLimiter.acquire_nowait` does.
        """
        kernels = [self._algorithm.kernel(rate) for rate in self._rates]
        if None in kernels:
            return None
        steps = cast("list[Kernel]", kernels)
        if len(steps) == 1:
            fast = _compile_one(steps[0], self._table, self._rates, self._clock, max_cost)
        elif len(steps) == 2:
            fast = _compile_two(steps, self._table, self._rates, self._clock, max_cost)
        else:
            fast = _compile_many(steps, self._table, self._rates, self._clock, max_cost)
        return fast

    def peek_nowait(self, key: str, cost: float) -> Decision:
        return self._decide(key, cost, False)

    async def peek(self, key: str, cost: float) -> Decision:
        return self._decide(key, cost, False)

    def refund_nowait(self, key: str, cost: float) -> None:
        table, refund, rates = self._table, self._algorithm.refund, self._rates
        with self._lock:
            old = table.states.get(key)
            if old is None:
                return
            now = self._clock()
            if self._single:
                new = refund(old, rates[0], now, cost)
                if new is None:
                    del table.states[key]
                else:
                    table.states[key] = new
                return
            news = tuple(refund(s, r, now, cost) for s, r in zip(old, rates, strict=True))
            if all(s is None for s in news):
                del table.states[key]
            else:
                table.states[key] = news

    async def refund(self, key: str, cost: float) -> None:
        self.refund_nowait(key, cost)


def pick(steps: Sequence[tuple[Any, ...]]) -> int:
    """The index of the deciding step: the denial with the longest wait, else the least remaining.

    *steps* are `Step`s or kernel results, both ``(allowed, state, remaining, reset_after,
    retry_after)`` tuples. The Redis script applies the same rule.
    """
    chosen = -1
    denied = False
    for i, s in enumerate(steps):
        if not s[0]:
            if not denied or s[4] > steps[chosen][4]:
                chosen = i
            denied = True
        elif not denied and (chosen < 0 or s[2] < steps[chosen][2]):
            chosen = i
    return chosen


def _compile_one(
    step: Kernel, table: _Table, rates: tuple[Rate, ...], clock: Clock, max_cost: float
) -> Callable[[str, float], Decision]:
    """``acquire_nowait`` for one rate: the kernel between a lock, a dict read and a dict write."""
    states = table.states
    get = states.get
    acquire, release = table.lock.acquire, table.lock.release
    (rate,) = rates
    new_decision, decision = _new_decision, Decision
    unchecked = unchecked_cost(max_cost)

    def acquire_nowait(key: str, cost: float = 1) -> Decision:
        if type(key) is not str or not key:
            check_key(key)
        if cost != unchecked:
            check_cost(cost, max_cost)
        acquire()
        try:
            now = clock()
            allowed, state, remaining, reset_after, retry_after = step(get(key), now, cost)
            if allowed:
                states[key] = state
                if len(states) > table.sweep_at:
                    table.sweep(now)
        finally:
            release()
        return new_decision(decision, (allowed, remaining, reset_after, retry_after, rate, rates))

    return acquire_nowait


def _compile_two(
    steps: list[Kernel], table: _Table, rates: tuple[Rate, ...], clock: Clock, max_cost: float
) -> Callable[[str, float], Decision]:
    """``acquire_nowait`` for two rates (per second + per hour, the common tenant setup), unrolled.

    Commits both states only when both admit; the deciding rate is chosen as `pick` does.
    """
    states = table.states
    get = states.get
    acquire, release = table.lock.acquire, table.lock.release
    step1, step2 = steps
    rate1, rate2 = rates
    new_decision, decision = _new_decision, Decision
    unchecked = unchecked_cost(max_cost)

    def acquire_nowait(key: str, cost: float = 1) -> Decision:
        if type(key) is not str or not key:
            check_key(key)
        if cost != unchecked:
            check_cost(cost, max_cost)
        acquire()
        try:
            now = clock()
            old = get(key)
            if old is None:
                one = step1(None, now, cost)
                two = step2(None, now, cost)
            else:
                one = step1(old[0], now, cost)
                two = step2(old[1], now, cost)
            if one[0]:
                if two[0]:
                    states[key] = (one[1], two[1])
                    if len(states) > table.sweep_at:
                        table.sweep(now)
                    if two[2] < one[2]:
                        return new_decision(decision, (True, two[2], two[3], 0.0, rate2, rates))
                    return new_decision(decision, (True, one[2], one[3], 0.0, rate1, rates))
                return new_decision(decision, (False, two[2], two[3], two[4], rate2, rates))
            if not two[0] and two[4] > one[4]:
                return new_decision(decision, (False, two[2], two[3], two[4], rate2, rates))
            return new_decision(decision, (False, one[2], one[3], one[4], rate1, rates))
        finally:
            release()

    return acquire_nowait


def _compile_many(
    steps: list[Kernel], table: _Table, rates: tuple[Rate, ...], clock: Clock, max_cost: float
) -> Callable[[str, float], Decision]:
    """``acquire_nowait`` for three or more rates: the kernels in a loop, the choice by `pick`."""
    states = table.states
    get = states.get
    acquire, release = table.lock.acquire, table.lock.release
    fresh: tuple[None, ...] = (None,) * len(rates)
    new_decision, decision = _new_decision, Decision
    unchecked = unchecked_cost(max_cost)

    def acquire_nowait(key: str, cost: float = 1) -> Decision:
        if type(key) is not str or not key:
            check_key(key)
        if cost != unchecked:
            check_cost(cost, max_cost)
        acquire()
        try:
            now = clock()
            old = get(key) or fresh
            results = [step(s, now, cost) for step, s in zip(steps, old, strict=True)]
            allowed = all(r[0] for r in results)
            if allowed:
                states[key] = tuple(r[1] for r in results)
                if len(states) > table.sweep_at:
                    table.sweep(now)
        finally:
            release()
        index = pick(results)
        chosen = results[index]
        return new_decision(
            decision, (allowed, chosen[2], chosen[3], chosen[4], rates[index], rates)
        )

    return acquire_nowait


class _MemoryConcurrency:
    """Per-key slot counts in this process (no leases needed: the state dies with the process).

    A count per key, not a set of tokens: the `Slot` itself remembers that it was released, so
    a second release is refused without any bookkeeping here.
    """

    __slots__ = ("_counts", "_lock", "_max")

    def __init__(self, spec: ConcurrencySpec) -> None:
        self._max = spec.max
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire_nowait(self, key: str) -> Slot | None:
        lock = self._lock
        lock.acquire()  # hot path (one per admitted request): not `with`, which costs twice as much
        try:
            held = self._counts.get(key, 0)
            if held >= self._max:
                return None
            self._counts[key] = held + 1
        finally:
            lock.release()
        return Slot(key=key, token="", backend=self)

    async def acquire(self, key: str) -> Slot | None:
        return self.acquire_nowait(key)

    def release_nowait(self, slot: Slot) -> bool:
        lock = self._lock
        lock.acquire()
        try:
            if slot._released:
                return False
            slot._released = True
            key = slot.key
            held = self._counts.get(key, 0) - 1
            if held > 0:
                self._counts[key] = held
            else:
                self._counts.pop(key, None)
            return True
        finally:
            lock.release()

    async def release(self, slot: Slot) -> bool:
        return self.release_nowait(slot)

    def renew_nowait(self, slot: Slot) -> bool:
        return not slot._released  # no lease in memory: held until released

    async def renew(self, slot: Slot) -> bool:
        return not slot._released

    async def in_use(self, key: str) -> int:
        return self.count(key)

    def count(self, key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)
