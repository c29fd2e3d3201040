"""What both exporters share: subscribing to gateways and pools, and the labels they derive."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType

from .._events import Event, EventHandler
from ..balancing import Pool, PoolStats
from ..gateway import Gateway, GatewayStats

__all__ = ["Sources", "outcome_label", "require"]

Source = Gateway | Pool


def require(module: str, extra: str) -> ModuleType:
    """Import *module* or raise an ImportError that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{module} is not installed: pip install 'tenantlb[{extra}]'"
        raise ImportError(msg, name=module) from exc


def outcome_label(event: Event) -> str:
    """``"2xx"`` ... ``"5xx"`` for a response, ``"error"`` for an exception (no response)."""
    status = event.status
    if status is None:
        return "error"
    return f"{status // 100}xx"


class Sources:
    """The gateways and pools an exporter watches, and its subscriptions to them."""

    def __init__(self, handler: EventHandler) -> None:
        self._handler = handler
        self._lock = threading.Lock()
        self._gateways: list[Gateway] = []
        self._pools: dict[int, Pool] = {}
        self._unsubscribe: list[Callable[[], None]] = []

    def add(self, sources: Iterable[object]) -> None:
        """Subscribe to each gateway (and its pools) and each pool, once each.

        Raises:
            TypeError: Something that is neither a `Gateway` nor a `Pool`.
        """
        items = list(sources)
        for item in items:
            if not isinstance(item, Gateway | Pool):
                msg = f"sources must be Gateway or Pool objects, got {type(item).__name__}"
                raise TypeError(msg)
        with self._lock:
            for item in items:
                pools: Iterable[Pool]
                if isinstance(item, Gateway):
                    if any(g is item for g in self._gateways):
                        continue
                    self._gateways.append(item)
                    self._unsubscribe.append(item.subscribe(self._handler, per_request=True))
                    pools = item.pools.values()
                elif isinstance(item, Pool):
                    pools = (item,)
                else:  # checked above
                    continue
                for pool in pools:
                    if id(pool) not in self._pools:
                        self._pools[id(pool)] = pool
                        self._unsubscribe.append(pool.subscribe(self._handler, per_request=True))

    def close(self) -> None:
        """Unsubscribe from everything."""
        with self._lock:
            unsubscribe, self._unsubscribe = self._unsubscribe, []
            self._gateways.clear()
            self._pools.clear()
        for fn in unsubscribe:
            fn()

    def pool_stats(self) -> Iterator[PoolStats]:
        """A fresh snapshot of every watched pool."""
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            yield pool.stats()

    def gateway_stats(self) -> Iterator[GatewayStats]:
        """A fresh snapshot of every watched gateway."""
        with self._lock:
            gateways = list(self._gateways)
        for gateway in gateways:
            yield gateway.stats()

    def store_available(self) -> float | None:
        """1.0 while every watched gateway's store answers, 0.0 if one does not; None if no
        store reports availability (a `MemoryStore` is always there)."""
        found: float | None = None
        for stats in self.gateway_stats():
            available = getattr(stats.store, "available", None)
            if isinstance(available, bool):
                found = min(found if found is not None else 1.0, float(available))
        return found

    def gateway_in_flight(self, by_tenant: bool) -> dict[tuple[str, ...], int]:
        """Admitted requests in flight, summed over the watched gateways (per tenant id, or all)."""
        totals: dict[tuple[str, ...], int] = {}
        for stats in self.gateway_stats():
            if by_tenant:
                for tenant_id, tenant in stats.by_tenant.items():
                    totals[(tenant_id,)] = totals.get((tenant_id,), 0) + tenant.in_flight
            else:
                totals[()] = totals.get((), 0) + stats.in_flight
        return totals
