"""`RateLimiter`: one or more `Rate`s per key, decided by an algorithm against a store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

from .._validate import check_cost, check_key, unchecked_cost
from ._algorithms import Algorithm, resolve_algorithm
from ._decision import Decision
from ._memory import MemoryStore
from ._rate import Rate
from ._store import RateBackend, RateSpec, Store

__all__ = ["RateLimiter"]


@final
class RateLimiter:
    """Admits or denies cost per key (a tenant, an API key, a client IP) under one or more rates.

    ```python
    limiter = RateLimiter([Rate(100, per=1.0, burst=20), Rate(10_000, per=3600)])
    decision = limiter.acquire_nowait("acme")           # sync, MemoryStore
    decision = await limiter.acquire("acme", cost=3)  # async, any store
    if not decision.allowed:
        ...  # answer 429 with decision.headers()
    ```

    All rates are checked atomically: the request is admitted only if every rate admits it, and a
    denial consumes nothing from any of them. The limiter never raises `RateLimited` itself; the
    caller (e.g. the gateway) decides what a denial means.

    Cost may be any positive number (requests, LLM tokens, bytes). To charge the actual cost after
    the fact, acquire an estimate and `refund_nowait` (or ``await refund``) the difference; if the actual
    cost was higher, ``acquire`` the difference.

    Args:
        rates: One `Rate` or several.
        store: Where state lives: a `MemoryStore` (default, one per limiter) or a `RedisStore`.
        algorithm: ``"gcra"`` (default), ``"token_bucket"``, ``"sliding_window"``,
            ``"fixed_window"``, or an `Algorithm` instance.
        name: Separates limiters that have equal rates but must not share state.

    Raises:
        TypeError: *rates* holds something other than `Rate`, or *store* is not a `Store`.
        ValueError: *rates* is empty, or *algorithm* is an unknown name.
    """

    # No __slots__: a backend may install a faster ``acquire_nowait`` on the instance (see __init__).

    def __init__(
        self,
        rates: Rate | Sequence[Rate],
        *,
        store: Store | None = None,
        algorithm: str | Algorithm = "gcra",
        name: str | None = None,
    ) -> None:
        checked = _check_rates(rates)
        _check_name(name)
        store = _check_store(store)
        algo = resolve_algorithm(algorithm)
        self._spec = RateSpec(rates=checked, algorithm=algo, name=name)
        self._store = store
        self._max_cost = min(algo.capacity(rate) for rate in checked)
        self._unchecked = unchecked_cost(self._max_cost)
        self._backend: RateBackend = store.bind_rates(self._spec)
        # Hot path: a backend may compile a closure that checks arguments exactly as
        # `acquire_nowait` does and decides without any attribute lookup (MemoryStore with a
        # built-in algorithm; None for a user-defined one).
        compile_fast = getattr(self._backend, "compile", None)
        fast = None if compile_fast is None else compile_fast(self._max_cost)
        if fast is not None:
            self.acquire_nowait = fast  # type: ignore[method-assign]

    def __repr__(self) -> str:
        rates = ", ".join(repr(r) for r in self._spec.rates)
        return f"RateLimiter([{rates}], algorithm={self._spec.algorithm.name!r}, store={self._store!r})"

    @property
    def rates(self) -> tuple[Rate, ...]:
        """The rates, in the order given."""
        return self._spec.rates

    @property
    def algorithm(self) -> Algorithm:
        """The algorithm deciding."""
        return self._spec.algorithm

    @property
    def store(self) -> Store:
        """The store holding the state."""
        return self._store

    @property
    def max_cost(self) -> float:
        """The largest cost a single request may have (the smallest burst, or limit for windows)."""
        return self._max_cost

    def acquire_nowait(self, key: str, cost: float = 1) -> Decision:
        """Decide now, synchronously: admit *cost* for *key* (and consume it) or deny.

        Args:
            key: Whose quota: a non-empty str (tenant id, client IP, ...).
            cost: How much to spend, > 0 and <= `max_cost`.

        Returns:
            The `Decision`.

        Raises:
            TypeError: *key* is not a str or *cost* not a number.
            ValueError: *key* is empty, or *cost* is <= 0, not finite or above `max_cost`.
            RuntimeError: The store can only answer asynchronously (a `RedisStore` without a
                sync client): use ``await acquire(...)``.
            StoreUnavailable: The store could not answer and its policy is to fail closed.
        """
        if type(key) is not str or not key:
            check_key(key)
        if cost != self._unchecked:
            check_cost(cost, self._max_cost)
        return self._backend.acquire_nowait(key, cost)

    async def acquire(self, key: str, cost: float = 1) -> Decision:
        """Decide: admit *cost* for *key* (and consume it) or deny; works with every store.

        Args and raises as `acquire_nowait` (minus the RuntimeError).
        """
        if type(key) is not str or not key:
            check_key(key)
        if cost != self._unchecked:
            check_cost(cost, self._max_cost)
        return await self._backend.acquire(key, cost)

    def peek_nowait(self, key: str, cost: float = 1) -> Decision:
        """What `acquire_nowait` would answer now, without consuming anything (sync)."""
        check_key(key)
        check_cost(cost, self._max_cost)
        return self._backend.peek_nowait(key, cost)

    async def peek(self, key: str, cost: float = 1) -> Decision:
        """What `acquire` would answer now, without consuming anything."""
        check_key(key)
        check_cost(cost, self._max_cost)
        return await self._backend.peek(key, cost)

    def refund_nowait(self, key: str, cost: float) -> None:
        """Give *cost* back to *key* under every rate (sync), e.g. when a request used less.

        Refunds never take a key above its full allowance. Window algorithms can only give back
        cost counted in the current window.

        Raises:
            TypeError, ValueError: As for `acquire_nowait` (cost may exceed `max_cost` here).
            RuntimeError: The store can only answer asynchronously: use ``await refund(...)``.
        """
        check_key(key)
        check_cost(cost, float("inf"))
        self._backend.refund_nowait(key, cost)

    async def refund(self, key: str, cost: float) -> None:
        """Give *cost* back to *key* under every rate; the async twin of `refund_nowait`."""
        check_key(key)
        check_cost(cost, float("inf"))
        await self._backend.refund(key, cost)


def _check_rates(rates: object) -> tuple[Rate, ...]:
    if isinstance(rates, Rate):
        return (rates,)
    if not isinstance(rates, Sequence) or isinstance(rates, str):
        msg = f"rates must be a Rate or a sequence of Rate, got {type(rates).__name__}"
        raise TypeError(msg)
    if not rates:
        msg = "rates must hold at least one Rate, got an empty sequence"
        raise ValueError(msg)
    for i, rate in enumerate(rates):
        if not isinstance(rate, Rate):
            msg = f"rates[{i}] must be a Rate, got {type(rate).__name__}"
            raise TypeError(msg)
    return tuple(rates)


def _check_name(name: object) -> None:
    if name is None:
        return
    if not isinstance(name, str):
        msg = f"name must be a str, got {type(name).__name__}"
        raise TypeError(msg)
    if not name:
        msg = "name must be a non-empty str, got ''"
        raise ValueError(msg)


def _check_store(store: object) -> Store:
    if store is None:
        return MemoryStore()
    if not isinstance(store, Store):
        msg = f"store must be a Store (MemoryStore, RedisStore), got {type(store).__name__}"
        raise TypeError(msg)
    return store
