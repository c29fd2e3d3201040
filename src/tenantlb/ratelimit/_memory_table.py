"""The per-limiter key table behind `MemoryStore`: least-recently-used order, a bound, shards.

Each limiter's keys live in an `OrderedDict` kept in least-recently-used order (a decision moves
its key to the end, O(1)). Expired state is dropped as it reaches the old end; at *max_keys* a new
key evicts an expired key among the least recently used if there is one, else the least recently
used live key (counted, the first logged). A table that may hold more than `SHARD_KEYS` keys is
split by hash into shards that each resize on their own (see `Table`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from ._algorithms import State
from ._memory_compiled import TIDY_FROM as _TIDY_FROM
from ._store import RateSpec

__all__ = ["SHARD_KEYS", "EvictionLog", "Table", "expiry"]

logger = logging.getLogger("tenantlb.ratelimit")

_LOOK = 4  # how many least-recently-used keys an eviction checks for an expired one
# The most keys per shard of a table. A shard's dict compacts the slots its evictions left in one
# O(shard) step: ~0.1 ms at 256 keys, 0.3-0.6 ms at 1,024 (which every shard of a full table
# reaches at about the same time). Smaller shards cost early evictions (see `Table`).
SHARD_KEYS = 256


class EvictionLog:
    """Counts evictions of one store and logs the first."""

    __slots__ = ("evictions", "max_keys")

    def __init__(self, max_keys: int) -> None:
        self.evictions = 0
        self.max_keys = max_keys

    def evicted(self) -> None:
        self.evictions += 1
        if self.evictions == 1:
            logger.warning(
                "MemoryStore reached max_keys=%d: evicting the least recently used live keys "
                "(they start afresh); raise max_keys above the keys active within one window",
                self.max_keys,
            )


class Table:
    """One limiter's per-key state in least-recently-used order, bounded by *max_keys*.

    A dict resizes (or compacts the slots its deletions left) in one O(n) step: at a million
    keys in one `OrderedDict` that is a pause of tens to hundreds of milliseconds under the lock.
    So a table that may hold more than `SHARD_KEYS` keys is split into shards of at most that
    many, each an `OrderedDict` in least-recently-used order with its share of the bound, chosen
    by the key's hash (randomised per process, so a client cannot aim at one shard); a shard
    resizes in well under a millisecond. A table starts with every key in its first (and only)
    shard and spreads them the first time that shard reaches its share: small tables never hash
    and hold one dict (a table of one key per tenant costs ~5 KiB, not a dict per shard).
    """

    __slots__ = (
        "cap",
        "expires",
        "lock",
        "log",
        "mask",
        "max_keys",
        "shards",
        "spread",
        "tidy_from",
        "users",
    )

    def __init__(self, max_keys: int, expires: Callable[[Any], float], log: EvictionLog) -> None:
        count = 1
        while count * SHARD_KEYS < max_keys:
            count *= 2
        # One shard until the keys spread: most tables (one key per tenant) never need more.
        # A list, grown in place, so compiled closures that hold it see the shards appear.
        self.shards: list[OrderedDict[str, Any]] = [OrderedDict()]
        self.mask = count - 1
        self.cap = max_keys // count  # each shard's share of the bound: never more than max_keys
        self.spread = [False]  # a list so compiled closures see it change: keys spread by hash
        # Below this a shard does not bother dropping expired keys as new ones arrive.
        self.tidy_from = min(-(-_TIDY_FROM // count), self.cap)
        self.lock = threading.Lock()
        self.max_keys = max_keys
        self.expires = expires
        self.log = log
        self.users: weakref.WeakSet[Any] = weakref.WeakSet()  # the backends using this table

    def __len__(self) -> int:
        return sum(len(states) for states in self.shards)

    def shard(self, key: str) -> OrderedDict[str, Any]:
        """The shard holding *key* (under the lock)."""
        if self.spread[0]:
            return self.shards[hash(key) & self.mask]
        return self.shards[0]

    def values(self) -> Iterator[Any]:
        """Every key's state (under the lock)."""
        for states in self.shards:
            yield from states.values()

    def make_room(
        self, states: OrderedDict[str, Any], key: str, now: float
    ) -> OrderedDict[str, Any]:
        """Before new *key* goes into shard *states* (under the lock): drop expired keys, evict at the bound.

        Returns the shard to insert into (another one if the keys were spread just now). O(1)
        but for the one spread of at most `SHARD_KEYS` keys: looks only at the shard's
        least-recently-used end. Below its share of *max_keys* it drops up to two expired keys
        there (tables track the live set as traffic flows); at its share it removes its least
        recently used key, counting it as an eviction if it was still live.
        """
        expires = self.expires
        if len(states) >= self.cap and self.mask and not self.spread[0]:
            states = self._spread(key)
        if len(states) < self.cap:
            for old in list(itertools.islice(states, 2)):
                if expires(states[old]) > now:
                    return states
                del states[old]
            return states
        for old in itertools.islice(states, _LOOK):
            if expires(states[old]) <= now:
                del states[old]  # an expired key goes before any live one
                return states
        states.popitem(last=False)
        self.log.evicted()
        return states

    def _spread(self, key: str) -> OrderedDict[str, Any]:
        """Move every key from the first shard to its own, in least-recently-used order."""
        first, shards, mask = self.shards[0], self.shards, self.mask
        shards.extend(OrderedDict() for _ in range(mask))
        items = list(first.items())
        first.clear()
        for old, state in items:
            shards[hash(old) & mask][old] = state
        self.spread[0] = True
        return shards[hash(key) & mask]


def expiry(spec: RateSpec) -> Callable[[Any], float]:
    algorithm, rates = spec.algorithm, spec.rates
    when = algorithm.expires
    if len(rates) == 1:
        (rate,) = rates
        return lambda state: when(state, rate)

    def expires(states: tuple[State | None, ...]) -> float:
        latest = -float("inf")
        for state, rate in zip(states, rates, strict=True):
            if state is not None:
                at = when(state, rate)
                if at > latest:
                    latest = at
        return latest

    return expires
