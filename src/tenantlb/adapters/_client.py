"""What the client adapters (httpx transports, the aiohttp client middleware) share: framework-free.

- `ClientPolicy`: the checked arguments (pools by host, retries, retry statuses, budget) and the
  retry rules, so both adapters decide the same way:

  * a connect error (the request never left) is retried for any method;
  * for idempotent methods (RFC 9110 §9.2.2) also a reset or read error before the response
    started, and a status in ``retry_statuses``;
  * never when the body cannot be sent again, never beyond ``retries``, never when the
    `RetryBudget` says no; always on another endpoint (``exclude=`` the ones tried).

Only tenantlb's public names are used here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, Generic, TypeVar, final

from .._errors import NoHealthyEndpoint
from .._events import Event
from ..balancing import Lease, Pool, PoolSubset, RetryBudget
from ..health import HealthChecker

__all__ = ["IDEMPOTENT", "ClientPolicy", "Pools", "check_health"]

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""RFC 9110 §9.2.2: a request with one of these methods may be sent again after a failure."""

Balanced = Pool | PoolSubset
Pools = Balanced | Mapping[str, Balanced]
R = TypeVar("R")


@final
class ClientPolicy(Generic[R]):
    """Checked arguments of a client adapter and the retry rules shared by all of them.

    Raises:
        TypeError: *pools* is neither a Pool nor a mapping of host to Pool, *key* is neither a
            header name nor a callable, *retry_budget* is not a `RetryBudget`, or a number is
            not an int.
        ValueError: An empty mapping or host, retries < 0, a status outside 100-599.
    """

    __slots__ = ("budget", "by_host", "header_key", "key_fn", "retries", "retry_statuses", "single")

    def __init__(
        self,
        pools: object,
        *,
        retries: object,
        retry_statuses: object,
        key: object,
        retry_budget: object,
    ) -> None:
        self.single: Balanced | None = None
        self.by_host: dict[str, Balanced] = {}
        if isinstance(pools, Pool | PoolSubset):
            self.single = pools
        elif isinstance(pools, Mapping):
            if not pools:
                msg = "pools must not be an empty mapping"
                raise ValueError(msg)
            for host, pool in pools.items():
                if not isinstance(host, str) or not host:
                    msg = f"pools keys must be non-empty host names, got {host!r}"
                    raise (TypeError if not isinstance(host, str) else ValueError)(msg)
                if not isinstance(pool, Pool | PoolSubset):
                    msg = f"pools[{host!r}] must be a tenantlb.Pool, got {type(pool).__name__}"
                    raise TypeError(msg)
                self.by_host[host.lower()] = pool
        else:
            msg = f"pools must be a tenantlb.Pool or a mapping of host to Pool, got {type(pools).__name__}"
            raise TypeError(msg)
        if isinstance(retries, bool) or not isinstance(retries, int):
            msg = f"retries must be an int, got {type(retries).__name__}"
            raise TypeError(msg)
        if retries < 0:
            msg = f"retries must be >= 0, got {retries!r}"
            raise ValueError(msg)
        self.retries = retries
        self.retry_statuses = _statuses(retry_statuses)
        self.header_key: str | None = None
        self.key_fn: Callable[[R], str | bytes | None] | None = None
        if isinstance(key, str):
            if not key:
                msg = "key must be a header name or a callable, got ''"
                raise ValueError(msg)
            self.header_key = key
        elif callable(key):
            self.key_fn = key
        elif key is not None:
            msg = f"key must be a header name, a callable or None, got {type(key).__name__}"
            raise TypeError(msg)
        if retry_budget is None:
            retry_budget = RetryBudget()
        elif not isinstance(retry_budget, RetryBudget):
            msg = f"retry_budget must be a tenantlb.RetryBudget or None, got {type(retry_budget).__name__}"
            raise TypeError(msg)
        self.budget: RetryBudget = retry_budget

    def pool_for(self, host: str, port: int | None) -> Balanced | None:
        """The pool for a request to *host* (``host:port`` keys win), or None to pass it through."""
        single = self.single
        if single is not None:
            return single
        by_host = self.by_host
        if port is not None:
            pool = by_host.get(f"{host}:{port}")
            if pool is not None:
                return pool
        return by_host.get(host)

    def next_lease(
        self,
        pool: Balanced,
        key: str | bytes | None,
        tried: list[str],
        attempt: int,
        *,
        reason: str = "",
    ) -> Lease | None:
        """A lease on an endpoint not in *tried* for one more attempt, or None.

        None when *attempt* used up ``retries``, no other endpoint is available, or the budget
        refuses (a refusal is counted in its stats). Only a granted retry is withdrawn. A granted
        retry emits a ``retry`` event on the pool and a refusal ``retry_budget_exhausted``, both
        naming the endpoint that failed and *reason* (the error's type name or the status); only
        per-request subscribers receive them.
        """
        if attempt >= self.retries or len(tried) >= len(pool):
            return None
        try:
            lease = pool.acquire(key=key, exclude=tried)
        except NoHealthyEndpoint:
            return None
        failed = tried[-1] if tried else None
        if not self.budget.try_withdraw():
            lease.release()
            pool.emit(
                Event(kind="retry_budget_exhausted", pool=pool.name, url=failed, reason=reason)
            )
            return None
        pool.emit(Event(kind="retry", pool=pool.name, url=failed, reason=reason))
        return lease


def _statuses(value: object) -> frozenset[int]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        msg = f"retry_statuses must be a collection of ints, got {type(value).__name__}"
        raise TypeError(msg)
    statuses = set()
    for status in value:
        if isinstance(status, bool) or not isinstance(status, int):
            msg = f"retry_statuses must hold ints, got {status!r}"
            raise TypeError(msg)
        if not 100 <= status <= 599:
            msg = f"retry_statuses must be between 100 and 599, got {status!r}"
            raise ValueError(msg)
        statuses.add(status)
    return frozenset(statuses)


def check_health(health: object) -> tuple[HealthChecker, ...]:
    """*health* (None, a HealthChecker or an iterable of them) as a tuple to run with the adapter."""
    if health is None:
        return ()
    items = tuple(health) if isinstance(health, Iterable) else (health,)
    for item in items:
        if not isinstance(item, HealthChecker):
            msg = f"health must be a HealthChecker or a sequence of them, got {type(item).__name__}"
            raise TypeError(msg)
    return items
