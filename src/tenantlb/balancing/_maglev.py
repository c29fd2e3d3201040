"""`Maglev`: consistent hashing through a lookup table, O(1) a pick (Eisenbud et al., NSDI 2016)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from typing import final

from cachetools import LRUCache

from .._validate import FieldValueError, count
from ._balancer import BalancerBase, EndpointState
from ._hashing import hash64, mix64

logger = logging.getLogger("tenantlb")

__all__ = ["Maglev"]

_MAX_TABLE = 5_000_011  # a prime; bigger tables cost seconds to fill in Python


@final
class Maglev(BalancerBase):
    """Map each key to an endpoint through a table of ``table_size`` slots (Google's Maglev).

    Every endpoint has its own pseudo-random permutation of the slots (an offset and a skip
    derived from its URL); `rebuild` lets endpoints take turns claiming their next free preferred
    slot until the table is full, an endpoint of weight w taking w / max weight turns per round
    (Envoy's weighted Maglev). A pick is one hash and one table lookup: O(1).

    Properties, measured in ``tests/balancing/test_maglev.py``: each endpoint holds its weight's
    share of the slots to within one slot per round (well inside 1% at ``table_size >= 100 * n``),
    and removing one of n endpoints moves the keys of the removed endpoint plus a small fraction
    more (Maglev trades minimal disruption for balance; about 2/n in total). The table is built on
    the endpoints sorted by URL, so every process with the same endpoints gets the same table.
    Recent tables are cached, so a health flap does not rebuild.

    With ``key=None`` the slot is chosen at random, which is weighted random picking.
    IP hash: pass the client address as the key, ``pool.acquire(key=client_ip)``.

    Args:
        table_size: Number of slots, a prime > the number of endpoints (100x is best).
            Default 65537, as in Envoy. Rebuilding costs O(table_size log table_size).
        seed: Seed for the random slot of keyless picks (None: from the OS).

    Raises:
        TypeError: ``table_size`` is not an int.
        ValueError: ``table_size`` is not a prime, or outside 7 .. 5,000,011.
    """

    def __init__(self, table_size: int = 65537, *, seed: int | None = None) -> None:
        count("table_size", table_size, minimum=7, maximum=_MAX_TABLE)
        if not _is_prime(table_size):
            msg = f"table_size must be a prime, got {table_size!r}"
            raise FieldValueError(msg, field="table_size")
        self.table_size = table_size
        self._seed = seed
        self._rng = random.Random(seed)
        self._candidates: tuple[EndpointState, ...] = ()
        self._warned = 0  # the largest endpoint count already warned about
        self._slots: list[int] = []
        self._tables: LRUCache[tuple[tuple[bytes, ...], tuple[float, ...]], list[int]] = LRUCache(
            maxsize=4
        )

    def __repr__(self) -> str:
        return f"Maglev(table_size={self.table_size})"

    def clone(self) -> Maglev:
        return Maglev(self.table_size, seed=self._seed)

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        if len(candidates) > self.table_size // 100 and len(candidates) > self._warned:
            # The table cannot be fair (or even hold everyone) below ~100 slots an endpoint; the
            # pool is already updated, so say it loudly rather than fail half-way.
            self._warned = len(candidates)
            logger.warning(
                "Maglev(table_size=%d) with %d endpoints: shares drift from fair below 100 slots "
                "an endpoint and endpoints beyond the table size get no traffic; use a larger "
                "prime table_size",
                self.table_size,
                len(candidates),
            )
        ordered = tuple(sorted(candidates, key=_by_key))
        signature = (tuple(c.key for c in ordered), tuple(c.weight for c in ordered))
        slots = self._tables.get(signature)
        if slots is None:
            slots = _fill(signature[0], signature[1], self.table_size) if ordered else []
            self._tables[signature] = slots
        self._candidates = ordered
        self._slots = slots

    def pick(self, key: bytes | None) -> EndpointState | None:
        slots = self._slots
        if not slots:
            return None
        if key is None:
            return self._candidates[slots[int(self._rng.random() * self.table_size)]]
        return self._candidates[slots[hash64(key) % self.table_size]]

    def walk(self, key_hash: int) -> Iterator[EndpointState]:
        """Yield the endpoints of the table slots from the key's slot onwards (for `BoundedLoad`)."""
        slots = self._slots
        candidates = self._candidates
        size = len(slots)
        start = key_hash % size if size else 0
        for i in range(start, size):
            yield candidates[slots[i]]
        for i in range(start):
            yield candidates[slots[i]]

    def random_hash(self) -> int:
        """A random 64-bit key hash (keyless picks under `BoundedLoad`)."""
        return self._rng.getrandbits(64)


def _fill(keys: Sequence[bytes], weights: Sequence[float], size: int) -> list[int]:
    # Weighted Maglev population (Envoy's MaglevTable): each round, an endpoint whose accumulated
    # weight reaches its target claims the next free slot of its permutation.
    n = len(keys)
    offsets = []
    skips = []
    for key in keys:
        h = hash64(key)
        offsets.append(h % size)
        skips.append(mix64(h) % (size - 1) + 1)
    top = max(weights)
    norm = [w / top for w in weights]
    targets = [0.0] * n
    positions = offsets[:]  # each endpoint's next candidate slot in its permutation
    table = [-1] * size
    filled = 0
    iteration = 1
    while filled < size:
        for i in range(n):
            if iteration * norm[i] < targets[i]:
                continue
            targets[i] += 1.0
            c = positions[i]
            skip = skips[i]
            while table[c] >= 0:
                c += skip
                if c >= size:
                    c -= size
            table[c] = i
            c += skip
            positions[i] = c - size if c >= size else c
            filled += 1
            if filled == size:
                break
        iteration += 1
    return table


def _by_key(state: EndpointState) -> bytes:
    return state.key


def _is_prime(n: int) -> bool:
    if n < 2 or n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True
