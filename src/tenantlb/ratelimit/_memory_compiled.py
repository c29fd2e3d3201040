"""Compiled ``acquire_nowait`` closures of `MemoryStore` for any number of rates.

Each closure runs the rates' kernels (`Algorithm.kernel`) between one lock, one dict read and one
dict write, with no method call or attribute lookup on the hot path; `RateLimiter` installs it as
its own ``acquire_nowait``. The deciding rate is chosen by `pick`, as the Redis script does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._clock import Clock
from .._validate import check_cost, check_key, unchecked_cost
from ._algorithms import Kernel
from ._decision import Decision
from ._rate import Rate

if TYPE_CHECKING:
    from ._memory_table import Table

__all__ = ["TIDY_FROM", "compile_many", "compile_one", "compile_two", "pick"]

_new_decision = tuple.__new__  # builds a Decision without NamedTuple.__new__'s overhead
TIDY_FROM = 1024  # tables smaller than this do not bother dropping expired keys as they go


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


def compile_one(
    step: Kernel, table: Table, rates: tuple[Rate, ...], clock: Clock, max_cost: float
) -> Callable[[str, float], Decision]:
    """``acquire_nowait`` for one rate: the kernel between a lock, a dict read and a dict write."""
    shards, mask, spread, make_room = table.shards, table.mask, table.spread, table.make_room
    tidy_from, first = table.tidy_from, table.shards[0]
    first_get, first_move = first.get, first.move_to_end  # pre-bound: no method lookups
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
            if spread[0]:  # a big table: the key's shard (see Table)
                states = shards[hash(key) & mask]
                get, move_to_end = states.get, states.move_to_end
            else:
                states, get, move_to_end = first, first_get, first_move
            old = get(key)
            if old is None:
                if len(states) >= tidy_from:  # a new key is always admitted (cost <= capacity)
                    states = make_room(states, key, now)
            else:
                move_to_end(key)
            allowed, state, remaining, reset_after, retry_after = step(old, now, cost)
            if allowed:
                states[key] = state
        finally:
            release()
        return new_decision(decision, (allowed, remaining, reset_after, retry_after, rate, rates))

    return acquire_nowait


def compile_two(
    steps: list[Kernel], table: Table, rates: tuple[Rate, ...], clock: Clock, max_cost: float
) -> Callable[[str, float], Decision]:
    """``acquire_nowait`` for two rates (per second + per hour, the common tenant setup), unrolled.

    Commits both states only when both admit; the deciding rate is chosen as `pick` does.
    """
    shards, mask, spread, make_room = table.shards, table.mask, table.spread, table.make_room
    tidy_from, first = table.tidy_from, table.shards[0]
    first_get, first_move = first.get, first.move_to_end  # pre-bound: no method lookups
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
            if spread[0]:  # a big table: the key's shard (see Table)
                states = shards[hash(key) & mask]
                get, move_to_end = states.get, states.move_to_end
            else:
                states, get, move_to_end = first, first_get, first_move
            old = get(key)
            if old is None:
                if len(states) >= tidy_from:  # a new key is always admitted (cost <= capacity)
                    states = make_room(states, key, now)
                one = step1(None, now, cost)
                two = step2(None, now, cost)
            else:
                move_to_end(key)
                one = step1(old[0], now, cost)
                two = step2(old[1], now, cost)
            if one[0]:
                if two[0]:
                    states[key] = (one[1], two[1])
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


def compile_many(
    steps: list[Kernel], table: Table, rates: tuple[Rate, ...], clock: Clock, max_cost: float
) -> Callable[[str, float], Decision]:
    """``acquire_nowait`` for three or more rates: the kernels in a loop, the choice by `pick`."""
    shards, mask, spread, make_room = table.shards, table.mask, table.spread, table.make_room
    tidy_from, first = table.tidy_from, table.shards[0]
    first_get, first_move = first.get, first.move_to_end  # pre-bound: no method lookups
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
            if spread[0]:  # a big table: the key's shard (see Table)
                states = shards[hash(key) & mask]
                get, move_to_end = states.get, states.move_to_end
            else:
                states, get, move_to_end = first, first_get, first_move
            old = get(key)
            if old is None:
                if len(states) >= tidy_from:  # a new key is always admitted (cost <= capacity)
                    states = make_room(states, key, now)
                old = fresh
            else:
                move_to_end(key)
            results = [step(s, now, cost) for step, s in zip(steps, old, strict=True)]
            allowed = all(r[0] for r in results)
            if allowed:
                states[key] = tuple(r[1] for r in results)
        finally:
            release()
        index = pick(results)
        chosen = results[index]
        return new_decision(
            decision, (allowed, chosen[2], chosen[3], chosen[4], rates[index], rates)
        )

    return acquire_nowait
