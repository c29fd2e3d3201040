"""`ConcurrencyLimiter`: at most *max* requests in flight per key, in memory or on Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import final

import anyio

from .._errors import OverCapacity
from .._validate import check_key, count, seconds
from ._limiter import _check_name, _check_store
from ._store import ConcurrencyBackend, ConcurrencySpec, Slot, Store

__all__ = ["ConcurrencyLimiter"]


@final
class ConcurrencyLimiter:
    """Caps the requests in flight per key; a full key is refused at once, never queued.

    ```python
    limiter = ConcurrencyLimiter(20)
    async with limiter.slot("acme"):      # raises OverCapacity when acme has 20 in flight
        ...

    slot = limiter.acquire_nowait("acme")    # sync: a Slot, or OverCapacity when full
    try:
        ...
    finally:
        limiter.release_nowait(slot)
    ```

    On a `RedisStore` a slot is a lease that expires *lease_ttl* seconds after it was taken or
    last renewed, so a process that dies holding slots cannot leak them for longer than that.
    Slots taken with ``await acquire`` (or ``slot()``) are renewed in the background every third
    of *lease_ttl* while their `Slot` object is alive, so a request (an LLM stream) may outlive
    the lease; a slot taken with the sync ``acquire_nowait`` is renewed by calling
    `renew_nowait` within each *lease_ttl*.

    Args:
        max: Slots per key (>= 1).
        store: `MemoryStore` (default, a new one) or `RedisStore`.
        lease_ttl: Seconds a Redis lease lives without renewal (> 0). Unused in memory.
        name: Separates limiters with equal *max* that must not share slots.

    Raises:
        TypeError: *max* is not an int, *store* not a `Store`.
        ValueError: *max* < 1, *lease_ttl* <= 0.
    """

    __slots__ = ("_backend", "_spec", "_store")

    def __init__(
        self,
        max: int,
        *,
        store: Store | None = None,
        lease_ttl: float = 60.0,
        name: str | None = None,
    ) -> None:
        _check_int_max(max)
        _check_ttl(lease_ttl)
        _check_name(name)
        store = _check_store(store)
        self._spec = ConcurrencySpec(max=max, lease_ttl=float(lease_ttl), name=name)
        self._store = store
        self._backend: ConcurrencyBackend = store.bind_concurrency(self._spec)

    def __repr__(self) -> str:
        return f"ConcurrencyLimiter({self._spec.max}, store={self._store!r})"

    @property
    def max(self) -> int:
        """Slots per key."""
        return self._spec.max

    async def acquire(self, key: str) -> Slot:
        """Take a slot of *key*; works with every store.

        Raises:
            OverCapacity: All *max* slots of *key* are in use.
            TypeError, ValueError: *key* is not a non-empty str.
            StoreUnavailable: The store could not answer and fails closed.
        """
        check_key(key)
        return self._full(key, await self._backend.acquire(key))

    def acquire_nowait(self, key: str) -> Slot:
        """Take a slot of *key* now, synchronously; the sync twin of `acquire`.

        Raises:
            OverCapacity: All *max* slots of *key* are in use.
            TypeError, ValueError: *key* is not a non-empty str.
            RuntimeError: The store only answers asynchronously (RedisStore without sync client).
            StoreUnavailable: The store could not answer and fails closed.
        """
        check_key(key)
        return self._full(key, self._backend.acquire_nowait(key))

    def release_nowait(self, slot: Slot) -> bool:
        """Give *slot* back (sync); returns False if it was not held any more (twice, expired)."""
        return slot._backend.release_nowait(slot)

    def _full(self, key: str, slot: Slot | None) -> Slot:
        if slot is None:
            msg = f"all {self._spec.max} concurrency slots of {key!r} are in use"
            raise OverCapacity(msg)
        return slot

    async def release(self, slot: Slot) -> bool:
        """Give *slot* back; returns False if it was not held any more (twice, expired)."""
        return await slot._backend.release(slot)

    async def renew(self, slot: Slot) -> bool:
        """Extend *slot*'s lease to *lease_ttl* from now; False if it was not held any more.

        Background renewal does this for slots taken asynchronously; call it yourself only for
        slots you keep outside ``async with slot()`` for longer than the lease.
        """
        return await slot._backend.renew(slot)

    def renew_nowait(self, slot: Slot) -> bool:
        """Extend *slot*'s lease now, synchronously; the sync twin of `renew`."""
        return slot._backend.renew_nowait(slot)

    @property
    def lease_ttl(self) -> float:
        """Seconds a Redis lease lives without renewal."""
        return self._spec.lease_ttl

    async def in_use(self, key: str) -> int:
        """How many slots of *key* are held now."""
        check_key(key)
        return await self._backend.in_use(key)

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[Slot]:
        """Hold a slot of *key* for the ``async with`` block; released even on cancellation.

        Raises:
            OverCapacity: All slots of *key* are in use (nothing is held then).
        """
        held = await self.acquire(key)
        try:
            yield held
        finally:
            # A Redis release is handed to the store's own task before the first checkpoint,
            # so even a plain asyncio task.cancel() cannot stop it; the shield covers waiting.
            with anyio.CancelScope(shield=True):
                await self.release(held)


def _check_int_max(value: object) -> None:
    count("max", value)


def _check_ttl(value: object) -> None:
    seconds("lease_ttl", value)
