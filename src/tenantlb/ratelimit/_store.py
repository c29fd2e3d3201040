"""The `Store` protocol: where rate-limit and concurrency state lives (the extension point).

A limiter describes what it needs once (`RateSpec` / `ConcurrencySpec`) and asks its store to
*bind* it; the returned backend makes the decisions. `MemoryStore` and `RedisStore` implement it;
another store (Memcached, a database) implements these three protocols.
"""

from __future__ import annotations

from typing import Protocol, final, runtime_checkable

import attrs

from ._algorithms import Algorithm
from ._decision import Decision
from ._rate import Rate

__all__ = [
    "ConcurrencyBackend",
    "ConcurrencySpec",
    "RateBackend",
    "RateSpec",
    "Slot",
    "Store",
]


@attrs.define(frozen=True, kw_only=True)
class RateSpec:
    """What a `RateLimiter` asks a store for: its rates, algorithm and (optional) name.

    Two limiters with equal specs share state for the same key (in one store).
    """

    rates: tuple[Rate, ...]
    algorithm: Algorithm
    name: str | None = None

    @property
    def namespace(self) -> str:
        """A stable text id of the spec, used in storage keys: ``"<name>:<algorithm>"``."""
        return f"{self.name or 'rl'}:{self.algorithm.name}"


@attrs.define(frozen=True, kw_only=True)
class ConcurrencySpec:
    """What a `ConcurrencyLimiter` asks a store for."""

    max: int
    lease_ttl: float
    name: str | None = None

    @property
    def namespace(self) -> str:
        """A stable text id used in storage keys: everything that defines the limiter.

        ``"<name>:<max>:<lease_ttl>"``: limiters that differ only in *lease_ttl* must not share
        a lease set, or the short one's expiry would cut the long one's leases.
        """
        return f"{self.name or 'cc'}:{self.max}:{self.lease_ttl!r}"


@final
class Slot:
    """One held concurrency slot; give it back with `ConcurrencyLimiter.release_nowait` / ``release``.

    A plain slotted class rather than a frozen attrs one: one is built per admitted request, and
    a frozen attrs ``__init__`` costs more than the whole in-memory slot decision.

    Attributes:
        key: The key (tenant) it counts against.
        token: A unique id of this slot (the Redis lease member).
    """

    __slots__ = ("__weakref__", "_backend", "_released", "key", "token")

    def __init__(self, *, key: str, token: str, backend: ConcurrencyBackend) -> None:
        self.key = key
        self.token = token
        self._backend = backend
        self._released = False

    def __repr__(self) -> str:
        return f"Slot(key={self.key!r}, token={self.token!r})"


class RateBackend(Protocol):
    """Decisions for one `RateSpec` in one store. Arguments are already validated."""

    def acquire_nowait(self, key: str, cost: float) -> Decision:
        """Decide synchronously (raise RuntimeError if this store cannot)."""
        ...

    async def acquire(self, key: str, cost: float) -> Decision:
        """Decide (consuming *cost* if allowed)."""
        ...

    def refund_nowait(self, key: str, cost: float) -> None:
        """Give *cost* back synchronously."""
        ...

    async def refund(self, key: str, cost: float) -> None:
        """Give *cost* back."""
        ...

    def peek_nowait(self, key: str, cost: float) -> Decision:
        """What `acquire_nowait` would answer, consuming nothing (sync)."""
        ...

    async def peek(self, key: str, cost: float) -> Decision:
        """What `acquire` would answer, consuming nothing."""
        ...


class ConcurrencyBackend(Protocol):
    """Slots for one `ConcurrencySpec` in one store."""

    def acquire_nowait(self, key: str) -> Slot | None:
        """Take a slot synchronously, or None when all are taken."""
        ...

    async def acquire(self, key: str) -> Slot | None:
        """Take a slot, or None when all are taken."""
        ...

    def release_nowait(self, slot: Slot) -> bool:
        """Give *slot* back synchronously; False if it was no longer held."""
        ...

    async def release(self, slot: Slot) -> bool:
        """Give *slot* back; False if it was no longer held (released or expired)."""
        ...

    def renew_nowait(self, slot: Slot) -> bool:
        """Extend *slot*'s lease synchronously; False if it was no longer held."""
        ...

    async def renew(self, slot: Slot) -> bool:
        """Extend *slot*'s lease (by the spec's lease_ttl from now); False if no longer held."""
        ...

    async def in_use(self, key: str) -> int:
        """How many slots of *key* are held."""
        ...


@runtime_checkable
class Store(Protocol):
    """Where limiter state lives: `MemoryStore` (one process) or `RedisStore` (shared).

    A store also says how it can answer, so callers need not know its class: ``in_process``
    when it decides in this process without I/O (async code may then call the ``*_nowait``
    methods directly, as the gateway does), ``supports_nowait`` when the ``*_nowait`` methods work
    at all (a `RedisStore` with a sync client: they block on the round trip).
    """

    @property
    def in_process(self) -> bool:
        """True if decisions need no I/O: the ``*_nowait`` methods never block."""
        ...

    @property
    def supports_nowait(self) -> bool:
        """True if the ``*_nowait`` methods work (False: they raise RuntimeError)."""
        ...

    def bind_rates(self, spec: RateSpec) -> RateBackend:
        """Return the backend that decides for *spec*."""
        ...

    def bind_concurrency(self, spec: ConcurrencySpec) -> ConcurrencyBackend:
        """Return the backend that hands out slots for *spec*."""
        ...
