"""`MemoryStore`: rate-limit and concurrency state in this process.

O(1) per decision, no background threads or timers, thread-safe for sync callers (one uncontended
`threading.Lock` per limiter), bounded memory without a sweep. Each limiter's keys live in an
`OrderedDict` kept in least-recently-used order (a decision moves its key to the end, O(1)):

- Expired state (a key whose quota has fully recovered, so forgetting it changes nothing) is
  dropped as it reaches the least-recently-used end: every new key checks the oldest two.
- At *max_keys*, a new key first drops an expired key among the 4 least recently used, and
  only if there is none evicts the least recently used live key. So an evicted *live* key is
  always the one that went longest without a decision (it then starts afresh); evictions are
  counted in `MemoryStore.stats` and the first one is logged.
- A table that may hold more than `SHARD_KEYS` keys is split into shards by key hash, each
  with its share of the bound and its own order (see `Table`), so no dict resize is big.

Each step is O(1), so no call pays for the table's size (no stop-the-world sweep).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, cast, final

import attrs

from .._clock import Clock
from .._validate import check_cost, check_key, unchecked_cost
from ._algorithms import EPSILON, GCRA, Kernel, State
from ._decision import Decision
from ._memory_compiled import compile_many, compile_one, compile_two, pick
from ._memory_table import EvictionLog, Table, expiry
from ._store import ConcurrencySpec, RateSpec, Slot

__all__ = ["MemoryStore", "MemoryStoreStats"]

_new_decision = tuple.__new__  # builds a Decision without NamedTuple.__new__'s overhead


@attrs.define(frozen=True, kw_only=True)
class MemoryStoreStats:
    """A snapshot of a `MemoryStore`.

    Attributes:
        keys: Keys held across all rate limiters.
        limiters: Rate-limit tables (one per distinct rate spec still in use or holding state).
        evictions: Live keys forgotten because a table reached *max_keys* (each was its table's
            least recently used key).
    """

    keys: int
    limiters: int
    evictions: int


@final
class MemoryStore:
    """Keeps limiter state in a dict in this process; the default store.

    One store may serve many limiters; limiters with the same rates, algorithm and name share
    state per key, as they would in Redis.

    Args:
        clock: Seconds as a float; `time.monotonic` by default, a `ManualClock` in tests.
        max_keys: The most keys kept per limiter. Expired keys go first; at the bound a new key
            evicts the least recently used one (which starts afresh if it comes back), so keep it
            well above the number of keys active within one window. Evictions are counted in
            `stats` and the first is logged. Above 256 keys the table is split by hash into
            shards that each hold their share of the bound (so no dict resize pauses a call
            for long): order and bound are then kept per shard, and evictions may begin a
            little before the whole table is full (filling it with exactly *max_keys* live
            keys evicts about 3% of them: 2.9% at 50,000, 2.6% at 1,000,000).

    Raises:
        TypeError: *clock* is not callable or *max_keys* not an int.
        ValueError: *max_keys* < 1.
    """

    __slots__ = ("_clock", "_concurrency", "_lock", "_log", "_max_keys", "_prune_at", "_tables")

    in_process: ClassVar[bool] = True  # see Store: decides without I/O
    supports_nowait: ClassVar[bool] = True

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
        self._tables: dict[RateSpec, Table] = {}
        self._prune_at = 64
        # Held weakly: a backend lives as long as a limiter or a held Slot refers to it.
        self._concurrency: weakref.WeakValueDictionary[ConcurrencySpec, _MemoryConcurrency] = (
            weakref.WeakValueDictionary()
        )
        self._lock = threading.Lock()
        self._log = EvictionLog(max_keys)

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
                if len(self._tables) >= self._prune_at:
                    self._prune()
                expires: Callable[[Any], float] = float if fast else expiry(spec)
                table = self._tables[spec] = Table(self._max_keys, expires, self._log)
        backend: _MemoryGCRA | _MemoryRates
        if fast:
            backend = _MemoryGCRA(spec, table, self._clock)
        else:
            backend = _MemoryRates(spec, table, self._clock)
        table.users.add(backend)
        return backend

    def _prune(self) -> None:
        """Drop tables no limiter uses that hold no live state (hot reloads leave such behind).

        Called when the number of tables doubled since the last prune: amortised O(1) per bind.
        """
        now = self._clock()
        for spec, table in list(self._tables.items()):
            if not table.users:
                with table.lock:
                    if all(table.expires(v) <= now for v in table.values()):
                        del self._tables[spec]
        self._prune_at = max(64, 2 * len(self._tables))

    def bind_concurrency(self, spec: ConcurrencySpec) -> _MemoryConcurrency:
        """Return the slot backend for *spec* (shared by limiters with an equal spec)."""
        with self._lock:
            backend = self._concurrency.get(spec)
            if backend is None:
                backend = self._concurrency[spec] = _MemoryConcurrency(spec)
            return backend

    def keys(self) -> int:
        """How many keys are held across all rate limiters (live and not yet dropped)."""
        with self._lock:  # bind_rates (another thread) may add a table meanwhile
            tables = list(self._tables.values())
        return sum(len(t) for t in tables)

    def stats(self) -> MemoryStoreStats:
        """A snapshot: keys held, rate-limit tables, live keys evicted at *max_keys*."""
        with self._lock:
            tables = list(self._tables.values())
        return MemoryStoreStats(
            keys=sum(len(t) for t in tables),
            limiters=len(tables),
            evictions=self._log.evictions,
        )


class _MemoryGCRA:
    """The hot path: one rate, GCRA, state is one float (the theoretical arrival time)."""

    __slots__ = (
        "__weakref__",
        "_clock",
        "_interval",
        "_lock",
        "_policies",
        "_rate",
        "_table",
        "acquire_nowait",
    )

    def __init__(self, spec: RateSpec, table: Table, clock: Clock) -> None:
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
        shards, mask, spread, make_room = table.shards, table.mask, table.spread, table.make_room
        tidy_from, first = table.tidy_from, table.shards[0]
        first_get, first_move = first.get, first.move_to_end  # pre-bound: no method lookups
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
                if spread[0]:  # a big table: the key's shard
                    states = shards[hash(key) & mask]
                    get, move_to_end = states.get, states.move_to_end
                else:
                    states, get, move_to_end = first, first_get, first_move
                tat = get(key)
                if tat is None:  # a new key, always admitted (cost <= burst): make room first
                    tat = now
                    if len(states) >= tidy_from:
                        states = make_room(states, key, now)
                else:
                    move_to_end(key)  # least-recently-used order, for eviction at max_keys
                    if tat < now:
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
            tat = self._table.shard(key).get(key)
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
        with self._lock:
            states = self._table.shard(key)
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

    __slots__ = (
        "__weakref__",
        "_algorithm",
        "_clock",
        "_fast",
        "_lock",
        "_rates",
        "_single",
        "_table",
    )

    def __init__(self, spec: RateSpec, table: Table, clock: Clock) -> None:
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
                states = table.shard(key)
                now = self._clock()
                state = states.get(key)
                chosen = step(state, rate, now, cost)
                if commit:
                    if state is not None:
                        states.move_to_end(key)
                    if chosen.allowed:
                        if state is None:
                            states = table.make_room(states, key, now)
                        states[key] = chosen.state
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
            states = table.shard(key)
            now = self._clock()
            old: tuple[State | None, ...] | None = states.get(key)
            if old is None:
                old = (None,) * len(rates)
            steps = [step(s, r, now, cost) for s, r in zip(old, rates, strict=True)]
            index = pick(steps)
            chosen = steps[index]
            if commit:
                if key in states:
                    states.move_to_end(key)
                if chosen.allowed:
                    if key not in states:
                        states = table.make_room(states, key, now)
                    states[key] = tuple(s.state for s in steps)
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
            fast = compile_one(steps[0], self._table, self._rates, self._clock, max_cost)
        elif len(steps) == 2:
            fast = compile_two(steps, self._table, self._rates, self._clock, max_cost)
        else:
            fast = compile_many(steps, self._table, self._rates, self._clock, max_cost)
        return fast

    def peek_nowait(self, key: str, cost: float) -> Decision:
        return self._decide(key, cost, False)

    async def peek(self, key: str, cost: float) -> Decision:
        return self._decide(key, cost, False)

    def refund_nowait(self, key: str, cost: float) -> None:
        table, refund, rates = self._table, self._algorithm.refund, self._rates
        with self._lock:
            states = table.shard(key)
            old = states.get(key)
            if old is None:
                return
            now = self._clock()
            if self._single:
                new = refund(old, rates[0], now, cost)
                if new is None:
                    del states[key]
                else:
                    states[key] = new
                return
            news = tuple(refund(s, r, now, cost) for s, r in zip(old, rates, strict=True))
            if all(s is None for s in news):
                del states[key]
            else:
                states[key] = news

    async def refund(self, key: str, cost: float) -> None:
        self.refund_nowait(key, cost)


class _MemoryConcurrency:
    """Per-key slot counts in this process (no leases needed: the state dies with the process).

    A count per key, not a set of tokens: the `Slot` itself remembers that it was released, so
    a second release is refused without any bookkeeping here.
    """

    __slots__ = ("__weakref__", "_counts", "_lock", "_max")

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
