"""Stable hashing for the hashing balancers, and the protocol `BoundedLoad` walks them by.

Never Python's ``hash()``: it is salted per process, so two gateway replicas (or one after a
restart) would map the same key to different endpoints. BLAKE2b with an 8-byte digest is in the
standard library, well distributed and about as fast as a Python call gets.
"""

from __future__ import annotations

from collections.abc import Iterator
from hashlib import blake2b
from typing import Protocol

from ._balancer import EndpointState

__all__ = ["KeyWalker", "hash64", "mix64"]

_MASK = (1 << 64) - 1


def hash64(data: bytes) -> int:
    """A stable, well-mixed unsigned 64-bit hash of *data* (BLAKE2b, 8-byte digest)."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def mix64(x: int) -> int:
    """The splitmix64 finaliser: a bijective scramble of a 64-bit int (cheap in pure Python)."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class KeyWalker(Protocol):
    """A hashing balancer that can list candidates in its preference order for a key.

    `BoundedLoad` walks this order until it finds an endpoint with spare capacity; the order starts
    with the endpoint ``pick(key)`` would return and may repeat endpoints.
    """

    def walk(self, key_hash: int) -> Iterator[EndpointState]:
        """Yield candidates for a key whose `hash64` is *key_hash*, most preferred first."""
        ...
