"""`Rendezvous`: weighted highest-random-weight hashing, with a cache of recent keys."""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import final

from cachetools import LRUCache

from .._validate import count
from ._balancer import BalancerBase, EndpointState
from ._hashing import hash64

__all__ = ["Rendezvous"]

_UNIT = 2.0**-52
_MASK = (1 << 64) - 1


@final
class Rendezvous(BalancerBase):
    """Highest random weight (rendezvous) hashing: every endpoint bids for a key, the highest wins.

    The bid of an endpoint of weight w for a key is ``w / -ln(u)``, with u a uniform hash of the
    key and the endpoint's URL in (0, 1) (the logarithmic method of Schindelhauer and Schomaker),
    so each endpoint wins its weight's share of keys. Removing an endpoint moves only its own keys,
    and changing one endpoint's weight moves keys only to or from it: bids of the others do not
    change. The mapping needs no table and does not depend on the order of endpoints.

    Finding the highest bid is O(n) per uncached key by nature: this is a FULL_SCAN strategy.
    Each key not in the cache scores every candidate, about 0.13-0.25 us per endpoint with equal
    weights and twice that with unequal weights (CPython 3.11): some 130-250 us a pick at 1,000
    endpoints, held under the pool's lock. An LRU cache of ``cache_size`` recent keys (cleared on
    every rebuild, so after each membership, health or slow-start change) makes a repeated key
    O(1), which suits sticky sessions and IP hash with a bounded set of clients. For many distinct
    keys over more than a few dozen endpoints prefer `Maglev` (O(1)) or `RingHash` (O(log n)).

    With ``key=None`` the pick is weighted random, O(log n).
    IP hash: pass the client address as the key, ``pool.acquire(key=client_ip)``.

    Args:
        cache_size: How many recent keys to remember (0 disables the cache).
        seed: Seed for keyless picks (None: from the OS).

    Raises:
        TypeError: ``cache_size`` is not an int.
        ValueError: ``cache_size`` < 0.
    """

    def __init__(self, *, cache_size: int = 4096, seed: int | None = None) -> None:
        count("cache_size", cache_size, minimum=0)
        self.cache_size = cache_size
        self._seed = seed
        self._rng = random.Random(seed)
        self._candidates: tuple[EndpointState, ...] = ()
        self._seeds: list[int] = []
        self._multipliers: list[int] = []
        self._weights: list[float] = []
        self._uniform = True
        self._cumulative: list[float] = []
        self._cache: LRUCache[bytes, EndpointState] | None = (
            LRUCache(maxsize=cache_size) if cache_size else None
        )

    def __repr__(self) -> str:
        return f"Rendezvous(cache_size={self.cache_size})"

    def clone(self) -> Rendezvous:
        return Rendezvous(cache_size=self.cache_size, seed=self._seed)

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        self._candidates = tuple(candidates)
        self._seeds = [hash64(c.key) for c in candidates]
        self._multipliers = [hash64(b"m:" + c.key) | 1 for c in candidates]
        self._weights = [c.weight for c in candidates]
        self._uniform = len(set(self._weights)) <= 1
        self._cumulative = list(accumulate(self._weights))
        if self._cache is not None:
            self._cache.clear()

    def pick(self, key: bytes | None) -> EndpointState | None:
        candidates = self._candidates
        if not candidates:
            return None
        if key is None:
            cumulative = self._cumulative
            i = bisect_right(cumulative, self._rng.random() * cumulative[-1])
            return candidates[min(i, len(candidates) - 1)]
        cache = self._cache
        if cache is not None:
            state = cache.get(key)
            if state is not None:
                return state
        state = candidates[self._best(hash64(key))]
        if cache is not None:
            cache[key] = state
        return state

    def walk(self, key_hash: int) -> Iterator[EndpointState]:
        """Yield every candidate by decreasing bid for the key (O(n log n), for `BoundedLoad`)."""
        scores = self._scores(key_hash)
        order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
        candidates = self._candidates
        for i in order:
            yield candidates[i]

    def random_hash(self) -> int:
        """A random 64-bit key hash (keyless picks under `BoundedLoad`)."""
        return self._rng.getrandbits(64)

    def _best(self, key_hash: int) -> int:
        scores = self._scores(key_hash)
        return scores.index(max(scores))

    def _scores(self, key_hash: int) -> Sequence[float]:
        # The bid hash: the 128-bit product of (key ^ seed) and an odd per-endpoint multiplier,
        # high half folded into the low half (wyhash's "mum" mix; a third of splitmix64's cost).
        mask = _MASK
        products = [(key_hash ^ s) * m for s, m in zip(self._seeds, self._multipliers, strict=True)]
        hashes = [(p ^ (p >> 64)) & mask for p in products]
        if self._uniform:  # equal weights: the largest hash wins, no logarithms needed
            return hashes
        log = math.log
        # u in (0, 1) from the top 52 bits plus one half (exact in a double), so -ln(u) > 0.
        return [
            w / -log(((h >> 12) + 0.5) * _UNIT) for h, w in zip(hashes, self._weights, strict=True)
        ]
