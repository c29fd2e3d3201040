"""The ``[pools.<name>]`` part of a config document: endpoints, balancer, outlier detection, health
checks, a shared concurrency budget and discovery, each error reported at its path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._validate import count
from .balancing import BALANCERS, Balancer, Endpoint, Pool, SlowStart

if TYPE_CHECKING:
    from .config import _Builder

__all__ = ["PoolsBuilder"]

_POOL = {
    "endpoints",
    "balancer",
    "panic_threshold",
    "slow_start",
    "outlier_detection",
    "health_check",
    "concurrency",
    "discovery",
}
# A pool's shared concurrency budget: { limit = 64 } or { adaptive = true } (or a table of
# AdaptiveConcurrency settings), plus the FairQueue's queueing settings.
_CONCURRENCY = {
    "limit",
    "adaptive",
    "queues",
    "hand_size",
    "queue_length",
    "timeout",
}
_DISCOVERY_COMMON = {"type", "interval", "min_interval", "jitter", "timeout", "allow_empty"}
_DISCOVERY = {
    "dns": _DISCOVERY_COMMON | {"name", "port", "srv", "scheme", "family", "nameservers"},
    "file": _DISCOVERY_COMMON | {"path", "format"},
}
_ENDPOINT = {"url", "weight", "zone", "metadata", "priority"}


class PoolsBuilder:
    """Builds the pools (and the services they need) for a `config._Builder`, which collects errors."""

    def __init__(self, builder: _Builder) -> None:
        self.b = builder

    def pools(self, value: object) -> tuple[dict[str, Pool], list[Any]]:
        pools: dict[str, Pool] = {}
        services: list[Any] = []
        if value is None:
            self.b.error("pools", "at least one pool is required")
            return pools, services
        if not isinstance(value, Mapping) or not value:
            self.b.error("pools", f"must be a non-empty table of pools, got {_type(value)}")
            return pools, services
        for name, spec in value.items():
            path = f"pools.{name}"
            table = self.b.table(path, spec, _POOL)
            if table is None:
                continue
            found = table.get("discovery")  # with discovery, listed endpoints are optional
            if found is not None and "endpoints" not in table:
                endpoints: list[Endpoint] | None = []  # filled by the first lookup
            else:
                endpoints = self.endpoints(f"{path}.endpoints", table.get("endpoints"))
            balancer = self.balancer(f"{path}.balancer", table.get("balancer", "peak_ewma"))
            slow = self.b.kwargs(f"{path}.slow_start", table.get("slow_start"))
            slow_start = None
            if slow is not None:
                slow_start = self.b.attempt(f"{path}.slow_start", set(slow), SlowStart, **slow)
            detector = self.outlier(f"{path}.outlier_detection", table.get("outlier_detection"))
            panic = table.get("panic_threshold", 0.5)
            if endpoints is None or balancer is None:
                continue
            pool = self.b.attempt(
                path,
                {"panic_threshold"},
                Pool,
                endpoints,
                balancer,
                name=str(name),
                panic_threshold=panic,
                slow_start=slow_start,
                outlier_detector=detector,
            )
            if pool is None:
                continue
            pools[str(name)] = pool
            if "concurrency" in table:
                fair = self.concurrency(f"{path}.concurrency", table["concurrency"])
                if fair is not None:
                    self.b.fair_queues[str(name)] = fair
            if found is not None:  # entered before the health checker: checks start on a full pool
                runner = self.discovery(f"{path}.discovery", pool, found)
                if runner is not None:
                    services.append(runner)
            check = table.get("health_check")
            if check is not None:
                checker = self.health_check(f"{path}.health_check", pool, check)
                if checker is not None:
                    services.append(checker)
        return pools, services

    def endpoints(self, path: str, value: object) -> list[Endpoint] | None:
        if not isinstance(value, list):
            self.b.error(path, f"must be a list of URLs or endpoint tables, got {_type(value)}")
            return None
        if not value:
            # A pool with nothing in it refuses every request: almost always a mistake in a file.
            self.b.error(path, "must list at least one endpoint")
            return None
        out: list[Endpoint] = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            if isinstance(item, str):
                endpoint = self.b.attempt(where, set(), Endpoint, item)
            else:
                table = self.b.table(where, item, _ENDPOINT)
                if table is None:
                    continue
                if "url" not in table:
                    self.b.error(f"{where}.url", "is required")
                    continue
                endpoint = self.b.attempt(
                    where,
                    _ENDPOINT,
                    Endpoint,
                    table["url"],
                    weight=table.get("weight", 1.0),
                    zone=table.get("zone"),
                    metadata=table.get("metadata"),
                    priority=table.get("priority", 0),
                )
            if endpoint is None:
                continue
            if endpoint.url in seen:
                self.b.error(where, f"duplicate endpoint {endpoint.url!r}")
                continue
            seen.add(endpoint.url)
            out.append(endpoint)
        return out

    def balancer(self, path: str, value: object) -> Balancer | None:
        if isinstance(value, Mapping) and value.get("aperture") is False:
            value = {**value, "aperture": None}  # TOML has no null: false turns PeakEWMA's off
        return self.b.make(path, BALANCERS, value, Balancer, nested="inner")

    def outlier(self, path: str, value: object) -> Any:
        # Absent or true: Envoy's defaults (pools avoid failing endpoints out of the box);
        # false: off; a table: those settings.
        if value is None or value is True:
            return "default"
        if value is False:
            return None
        from . import health

        kwargs = self.b.kwargs(path, value)
        if kwargs is None:
            return None
        return self.b.attempt(path, set(kwargs), health.OutlierDetector, **kwargs)

    def health_check(self, path: str, pool: Pool, value: object) -> Any:
        from . import health

        kwargs = self.b.kwargs(path, value)
        if kwargs is None:
            return None
        kind = kwargs.pop("type", "http")
        probe_keys = {"path", "method", "expected_statuses", "expect_body", "headers"}
        probe_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in probe_keys}
        if "expected_statuses" in probe_kwargs:
            statuses = probe_kwargs["expected_statuses"]
            if isinstance(statuses, list) and all(isinstance(s, int) for s in statuses):
                probe_kwargs["expected_statuses"] = tuple(statuses)
        probe: Any
        if kind == "http":
            probe = self.b.attempt(path, set(probe_kwargs), health.HTTPProbe, **probe_kwargs)
        elif kind == "tcp":
            if probe_kwargs:
                self.b.error(path, f"a tcp health check takes no {sorted(probe_kwargs)}")
                return None
            probe = health.TCPProbe()
        else:
            self.b.error(f"{path}.type", f"must be 'http' or 'tcp', got {kind!r}")
            return None
        if probe is None:
            return None
        return self.b.attempt(path, set(kwargs), health.HealthChecker, pool, probe=probe, **kwargs)

    def concurrency(self, path: str, value: object) -> Any:
        from .fairness import AdaptiveConcurrency, FairQueue

        table = self.b.table(path, value, _CONCURRENCY)
        if table is None:
            return None
        limit, adaptive = table.get("limit"), table.get("adaptive", False)
        if (limit is None) == (adaptive is False):
            self.b.error(path, "needs either limit = <slots> or adaptive = true (or a table)")
            return None
        capacity: Any = None
        if limit is not None:
            capacity = self.b.attempt(path, {"limit"}, count, "limit", limit)
        else:
            settings = {} if adaptive is True else self.b.kwargs(f"{path}.adaptive", adaptive)
            if settings is not None:
                capacity = self.b.attempt(
                    f"{path}.adaptive", None, AdaptiveConcurrency, **settings, name=path
                )
        if capacity is None:
            return None
        options = {k: v for k, v in table.items() if k not in ("limit", "adaptive")}
        return self.b.attempt(path, set(options), FairQueue, capacity, **options)

    def discovery(self, path: str, pool: Pool, value: object) -> Any:
        from . import discovery

        if not isinstance(value, Mapping):
            self.b.error(path, f"must be a table, got {_type(value)}")
            return None
        kind = value.get("type")
        if not isinstance(kind, str) or kind not in _DISCOVERY:
            self.b.error(f"{path}.type", f"must be 'dns' or 'file', got {kind!r}")
            return None
        table = self.b.table(path, value, _DISCOVERY[kind])
        if table is None:
            return None
        kwargs = {k: v for k, v in table.items() if k != "type" and k in _DISCOVERY[kind]}
        make = discovery.DNSDiscovery if kind == "dns" else discovery.FileDiscovery
        try:
            return self.b.attempt(path, set(kwargs), make, pool, **kwargs)
        except (ImportError, RuntimeError) as exc:  # no dnspython; no system DNS configuration
            self.b.error(path, str(exc))
            return None


def _type(value: object) -> str:
    return type(value).__name__
