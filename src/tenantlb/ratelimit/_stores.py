"""`STORES`: the limiter stores by the names a config file uses (``gateway.store``).

``"memory"`` is `MemoryStore`; ``"redis"`` builds a `RedisStore` from a URL (`redis_store`). Add
your own with ``tenantlb.register_store("name", factory)``: a config table
``store = { type = "name", ... }`` calls ``factory(**rest_of_the_table)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .._registry import Registry
from .._validate import FieldValueError, require_type, seconds
from ._memory import MemoryStore
from ._store import Store

if TYPE_CHECKING:
    from ._redis_store import RedisStore

__all__ = ["STORES", "redis_store", "register_store"]

STORES: Final[Registry[Callable[..., Store]]] = Registry("store")
"""Store factories by name: ``memory``, ``redis``, and those users register."""

register_store = STORES.register
"""``register_store(name, factory, *, replace=False)``: add a store factory to `STORES`.

Also a class decorator: ``@register_store("name")``. See `tenantlb._registry.Registry.register`;
a taken name is a ValueError unless *replace* is true.
"""


def redis_store(
    *,
    url: str | None = None,
    timeout: float = 0.5,
    prefix: str = "tenantlb",
    on_error: str | MemoryStore = "fail_closed",
    cluster: bool = False,
) -> RedisStore:
    """A `RedisStore` on *url* with an asyncio client and a sync twin (for trio and sync callers).

    Both clients fail fast: a *timeout* on every socket operation and no retries, so a hung or
    dead Redis hands over to *on_error* instead of stalling requests.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://``.
        timeout: Seconds for connecting and for each command (> 0).
        prefix: The first part of every key.
        on_error: ``"fail_closed"``, ``"fail_open"``, ``"memory"`` (a local `MemoryStore`) or a
            `MemoryStore`.
        cluster: The URL names a node of a Redis Cluster: use redis-py's cluster clients (they
            follow MOVED/ASK and failovers); *timeout* also bounds each decision.

    Raises:
        ValueError: No URL or one of another scheme, a bad timeout, prefix or on_error.
        ImportError: redis-py is not installed (``pip install 'tenantlb[redis]'``).
    """
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        msg = f"url must be a redis:// URL, got {url!r}"
        raise FieldValueError(msg, field="url")
    timeout = seconds("timeout", timeout)
    require_type("prefix", prefix, str, "a str")
    if on_error not in ("fail_closed", "fail_open", "memory") and not isinstance(
        on_error, MemoryStore
    ):
        msg = f"on_error must be 'fail_closed', 'fail_open', 'memory' or a MemoryStore, got {on_error!r}"
        raise FieldValueError(msg, field="on_error")
    try:
        import redis
        import redis.asyncio
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as exc:
        msg = "a redis store needs the redis extra: pip install 'tenantlb[redis]'"
        raise ImportError(msg) from exc
    from ._redis_store import RedisStore

    require_type("cluster", cluster, bool, "true or false")
    fallback: Any = MemoryStore() if on_error == "memory" else on_error
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if cluster:
        aclient: Any = redis.asyncio.RedisCluster.from_url(url, **options)
        try:  # the sync cluster client discovers the nodes as it is built
            sclient: Any = redis.RedisCluster.from_url(url, **options)
        except redis.RedisError as exc:
            msg = f"cannot reach the Redis Cluster at {url!r}: {exc}"
            raise FieldValueError(msg, field="url") from exc
    else:
        aclient = redis.asyncio.Redis.from_url(url, retry=AsyncRetry(NoBackoff(), 0), **options)
        sclient = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)
    return RedisStore(
        aclient, sync_client=sclient, prefix=prefix, on_error=fallback, timeout=timeout
    )


register_store("memory", MemoryStore)
register_store("redis", redis_store)
