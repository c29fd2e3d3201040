"""The discovery extension point: `DiscoverySource` (anything that can list endpoints) and the
`DiscoveryResult` it may return with a TTL hint.

A source of your own (Consul, Kubernetes endpoints, a config service) implements one async method:

```python
class StaticSource:
    async def resolve(self) -> list[str]:
        return ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
```

and runs with ``async with tlb.Discovery(pool, StaticSource(), interval=10.0): ...``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Protocol, final, runtime_checkable

import attrs

from ..balancing import Endpoint

__all__ = ["DiscoveryResult", "DiscoverySource", "EndpointCache", "as_endpoints"]


@runtime_checkable
class DiscoverySource(Protocol):
    """Anything with an async ``resolve()`` that returns the endpoints a pool should hold now.

    ``resolve()`` returns an iterable of URL strings / `Endpoint` objects, or a `DiscoveryResult`
    to pass a TTL hint as well. It raises (anything; `tenantlb.DiscoveryError` reads best in
    logs) when it cannot tell: the runner then keeps the pool's last good endpoints. An empty
    answer means "no endpoints" and is applied only with ``allow_empty=True``.

    The runner calls ``resolve()`` from one task at a time and cuts it off after its ``timeout``.
    """

    async def resolve(self) -> DiscoveryResult | Iterable[str | Endpoint]:
        """The endpoints the pool should hold, as of now."""
        ...


def _endpoints(value: object) -> tuple[Endpoint, ...]:
    return as_endpoints(value, "endpoints")


def _ttl(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"ttl must be a number of seconds or None, got {type(value).__name__}"
        raise TypeError(msg)
    if not (value >= 0 and math.isfinite(value)):
        msg = f"ttl must be >= 0 and finite, got {value!r}"
        raise ValueError(msg)
    return float(value)


@final
@attrs.define(frozen=True)
class DiscoveryResult:
    """One answer of a source: the endpoints, and how long they may be trusted.

    Attributes:
        endpoints: The endpoints (URL strings are converted to `Endpoint`).
        ttl: Seconds the answer stays valid (a DNS record's TTL), or None. The runner refreshes
            after ``ttl`` when it is shorter than its interval, but never sooner than its
            ``min_interval``.
    """

    endpoints: tuple[Endpoint, ...] = attrs.field(converter=_endpoints)
    ttl: float | None = attrs.field(default=None, kw_only=True, converter=_ttl)


def as_endpoints(
    value: object, where: str, cache: EndpointCache | None = None
) -> tuple[Endpoint, ...]:
    """Convert an iterable of URL strings / `Endpoint` objects, naming *where* in errors.

    Raises:
        TypeError: *value* is a single string or not iterable, or an item is neither kind.
        ValueError: An invalid URL.
    """
    if isinstance(value, str | bytes | Endpoint) or not isinstance(value, Iterable):
        msg = f"{where} must be an iterable of URLs or Endpoints, got {type(value).__name__}"
        raise TypeError(msg)
    out: list[Endpoint] = []
    for i, item in enumerate(value):
        if isinstance(item, Endpoint):
            out.append(item)
        elif isinstance(item, str):
            out.append(Endpoint(item) if cache is None else cache.get(item))
        else:
            msg = f"{where}[{i}] must be a URL str or an Endpoint, got {type(item).__name__}"
            raise TypeError(msg)
    return tuple(out)


@final
class EndpointCache:
    """The endpoints built in the previous round, reused when an answer repeats.

    Building an `Endpoint` parses and normalises its URL; an unchanged answer of 1,000 addresses
    would otherwise redo that every round. Call `rotate` once per round: what the last round did
    not ask for is dropped, so the cache never outgrows one answer.
    """

    __slots__ = ("_current", "_previous")

    def __init__(self) -> None:
        self._previous: dict[tuple[str, float, str | None, int], Endpoint] = {}
        self._current: dict[tuple[str, float, str | None, int], Endpoint] = {}

    def get(
        self, url: str, weight: float = 1.0, hostname: str | None = None, priority: int = 0
    ) -> Endpoint:
        """The endpoint for these settings (``metadata["hostname"]`` if given), built once."""
        key = (url, weight, hostname, priority)
        endpoint = self._current.get(key)
        if endpoint is None:
            endpoint = self._previous.get(key)
            if endpoint is None:
                metadata: Mapping[str, str] | None = (
                    None if hostname is None else {"hostname": hostname}
                )
                endpoint = Endpoint(url, weight=weight, metadata=metadata, priority=priority)
            self._current[key] = endpoint
        return endpoint

    def rotate(self) -> None:
        """Start a new round."""
        self._previous, self._current = self._current, {}
