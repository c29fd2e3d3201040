"""`RingHash`: ketama-style consistent hashing on a ring of weighted virtual nodes, O(log n)."""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import final

from cachetools import LRUCache

from .._validate import FieldValueError
from .._validate import count as check_count
from ._balancer import BalancerBase, EndpointState
from ._hashing import hash64

__all__ = ["RingHash"]

_MAX_RING = 8_388_608  # Envoy's upper bound on maximum_ring_size


@final
class RingHash(BalancerBase):
    """Consistent hashing: a key goes to the first virtual node clockwise from its hash (ketama).

    Each endpoint places ``ceil(weight * scale)`` virtual nodes on a 64-bit ring, at the hashes of
    ``"<url>_0"``, ``"<url>_1"``, ... A pick hashes the key and bisects the sorted ring: O(log n).

    ``scale`` is the smallest power of two that makes the ring hold at least ``min_ring_size``
    nodes for the total weight, lowered by powers of two if the ring would exceed
    ``max_ring_size``. An endpoint's nodes therefore depend only on its own weight and on the
    scale, which changes only when the total weight crosses a power of two: removing an endpoint
    moves only its own keys, to the survivors, and never a key from one survivor to another
    (unless the scale changes), and a weight change (e.g. slow start) moves keys only to or from
    that endpoint. Shares follow weights to within about ``1 / sqrt(nodes per endpoint)``: raise
    ``min_ring_size`` for finer balance (`Maglev` balances better at O(1)).

    With ``key=None`` a random point of the ring is used, which is weighted random picking.
    IP hash: pass the client address as the key, ``pool.acquire(key=client_ip)``.

    Args:
        min_ring_size: Smallest number of virtual nodes (>= 1). Default 1024, as in Envoy.
        max_ring_size: Largest number of virtual nodes (>= min_ring_size, <= 8,388,608).
        seed: Seed for the random point of keyless picks (None: from the OS).

    Raises:
        TypeError: A size that is not an int.
        ValueError: A size out of range, or min_ring_size > max_ring_size.
    """

    def __init__(
        self,
        min_ring_size: int = 1024,
        max_ring_size: int = _MAX_RING,
        *,
        seed: int | None = None,
    ) -> None:
        for name, value in (("min_ring_size", min_ring_size), ("max_ring_size", max_ring_size)):
            check_count(name, value, maximum=_MAX_RING)
        if min_ring_size > max_ring_size:
            msg = f"min_ring_size must be <= max_ring_size ({max_ring_size}), got {min_ring_size!r}"
            raise FieldValueError(msg, field="min_ring_size")
        self.min_ring_size = min_ring_size
        self.max_ring_size = max_ring_size
        self._seed = seed
        self._rng = random.Random(seed)
        self._candidates: tuple[EndpointState, ...] = ()
        self._hashes: list[int] = []
        self._owners: list[int] = []
        # Virtual-node hashes per URL; a longer list serves any smaller count (a prefix).
        self._points: LRUCache[bytes, list[int]] = LRUCache(maxsize=65536)

    def __repr__(self) -> str:
        return f"RingHash(min_ring_size={self.min_ring_size}, max_ring_size={self.max_ring_size})"

    def clone(self) -> RingHash:
        return RingHash(self.min_ring_size, self.max_ring_size, seed=self._seed)

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        self._candidates = tuple(candidates)
        if not candidates:
            self._hashes, self._owners = [], []
            return
        counts = _node_counts(
            [c.weight for c in candidates], self.min_ring_size, self.max_ring_size
        )
        nodes: list[tuple[int, bytes, int]] = []
        for i, (state, count) in enumerate(zip(candidates, counts, strict=True)):
            nodes.extend((h, state.key, i) for h in self._node_hashes(state.key, count))
        nodes.sort()  # ties (vanishingly rare) break by URL, so every process agrees
        self._hashes = [h for h, _, _ in nodes]
        self._owners = [i for _, _, i in nodes]

    def pick(self, key: bytes | None) -> EndpointState | None:
        hashes = self._hashes
        if not hashes:
            return None
        h = self._rng.getrandbits(64) if key is None else hash64(key)
        i = bisect_right(hashes, h)
        if i == len(hashes):
            i = 0
        return self._candidates[self._owners[i]]

    def walk(self, key_hash: int) -> Iterator[EndpointState]:
        """Yield the owners of the virtual nodes clockwise from the key (for `BoundedLoad`)."""
        hashes = self._hashes
        owners = self._owners
        candidates = self._candidates
        start = bisect_right(hashes, key_hash)
        for i in range(start, len(owners)):
            yield candidates[owners[i]]
        for i in range(start):
            yield candidates[owners[i]]

    def random_hash(self) -> int:
        """A random 64-bit key hash (keyless picks under `BoundedLoad`)."""
        return self._rng.getrandbits(64)

    def _node_hashes(self, key: bytes, count: int) -> list[int]:
        points = self._points.get(key)
        if points is None or len(points) < count:
            have = points or []
            points = have + [hash64(b"%s_%d" % (key, j)) for j in range(len(have), count)]
            self._points[key] = points
        return points[:count]


def _node_counts(weights: list[float], min_ring: int, max_ring: int) -> list[int]:
    # scale = the smallest power of two with sum(ceil(w * scale)) >= min_ring (then <= max_ring).
    total = sum(weights)
    exponent = math.ceil(math.log2(min_ring / total))
    counts = [math.ceil(w * 2.0**exponent) for w in weights]
    while sum(counts) < min_ring:  # rounding in log2
        exponent += 1
        counts = [math.ceil(w * 2.0**exponent) for w in weights]
    while sum(counts) > max_ring and any(c > 1 for c in counts):
        exponent -= 1
        counts = [math.ceil(w * 2.0**exponent) for w in weights]
    return counts
