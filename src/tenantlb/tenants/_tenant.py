"""`Tenant`: who a caller is and what it may use — an immutable value object."""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, final

import attrs

from .._validate import FieldTypeError, FieldValueError, optional_count, positive
from ..ratelimit import Rate
from ._keys import is_api_key_digest
from ._sharding import shuffle_shard

__all__ = ["Tenant"]

MAX_TENANT_ID_LENGTH = 128


def _check_id(value: object) -> str:
    if not isinstance(value, str):
        msg = f"id must be a str, got {type(value).__name__}"
        raise FieldTypeError(msg, field="id")
    if not (1 <= len(value) <= MAX_TENANT_ID_LENGTH and value.isprintable()):
        shown = (
            value if len(value) <= MAX_TENANT_ID_LENGTH else value[:MAX_TENANT_ID_LENGTH] + "..."
        )
        msg = f"id must be 1..{MAX_TENANT_ID_LENGTH} printable characters, got {shown!r}"
        raise FieldValueError(msg, field="id")
    return value


def _to_api_keys(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        msg = f"api_keys must be an iterable of digests, got {type(value).__name__}"
        raise FieldTypeError(msg, field="api_keys")
    keys = tuple(value)
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        # Never echo the value: a caller may have passed a raw key by mistake.
        if not is_api_key_digest(key):
            msg = (
                f"api_keys[{i}] must be a digest from hash_api_key() "
                "('sha256:<64 hex>' or 'hmac-sha256:<64 hex>'), not a raw key or other value"
            )
            raise FieldValueError(msg, field="api_keys")
        if key in seen:
            msg = f"api_keys[{i}] repeats api_keys[{seen[key]}]"
            raise FieldValueError(msg, field="api_keys")
        seen[key] = i
    return keys


def _check_pool_name(field: str, value: object) -> str:
    if not isinstance(value, str):
        msg = f"{field} must be a pool name (str), got {type(value).__name__}"
        raise FieldTypeError(msg, field=field.split("[", 1)[0])
    if not value or not value.isprintable():
        msg = f"{field} must be a non-empty printable pool name, got {value!r}"
        raise FieldValueError(msg, field=field.split("[", 1)[0])
    return value


def _to_upstream(value: object) -> str | None:
    return None if value is None else _check_pool_name("upstream", value)


def _to_routes(value: object) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        items: Iterable[Any] = value.items()
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
        items = value
    else:
        msg = f"routes must be a mapping of path prefix -> pool name, got {type(value).__name__}"
        raise FieldTypeError(msg, field="routes")
    routes: dict[str, str] = {}
    for item in items:
        if not (isinstance(item, Sequence) and len(item) == 2):
            msg = f"routes items must be (path prefix, pool name) pairs, got {item!r}"
            raise FieldTypeError(msg, field="routes")
        prefix, pool = item
        if not isinstance(prefix, str):
            msg = f"routes prefix must be a str, got {type(prefix).__name__}"
            raise FieldTypeError(msg, field="routes")
        if not prefix.startswith("/") or not prefix.isprintable():
            msg = f"routes prefix must be a printable path starting with '/', got {prefix!r}"
            raise FieldValueError(msg, field="routes")
        if prefix in routes:
            msg = f"routes prefix {prefix!r} appears twice"
            raise FieldValueError(msg, field="routes")
        routes[prefix] = _check_pool_name(f"routes[{prefix!r}]", pool)
    # Longest prefix first, so the first match in upstream_for() is the most specific one.
    return tuple(sorted(routes.items(), key=lambda kv: (-len(kv[0]), kv[0])))


def _to_limits(value: object) -> tuple[Rate, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        msg = f"limits must be an iterable of Rate, got {type(value).__name__}"
        raise FieldTypeError(msg, field="limits")
    limits = tuple(value)
    for i, rate in enumerate(limits):
        if not isinstance(rate, Rate):
            msg = f"limits[{i}] must be a tenantlb.Rate, got {type(rate).__name__}"
            raise FieldTypeError(msg, field="limits")
    return limits


def _to_max_concurrency(value: object) -> int | None:
    return optional_count("max_concurrency", value)


def _to_shard_size(value: object) -> int | None:
    return optional_count("shard_size", value)


def _to_max_body_size(value: object) -> int | None:
    return optional_count("max_body_size", value)


def _to_max_header_size(value: object) -> int | None:
    return optional_count("max_header_size", value)


def _to_weight(value: object) -> float:
    return positive("weight", value)


def _to_enabled(value: object) -> bool:
    if not isinstance(value, bool):
        msg = f"enabled must be a bool, got {type(value).__name__}"
        raise FieldTypeError(msg, field="enabled")
    return value


def _to_display_name(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    msg = f"display_name must be a str or None, got {type(value).__name__}"
    raise FieldTypeError(msg, field="display_name")


def _to_metadata(value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        msg = f"metadata must be a mapping, got {type(value).__name__}"
        raise FieldTypeError(msg, field="metadata")
    for key in value:
        if not isinstance(key, str):
            msg = f"metadata keys must be str, got {type(key).__name__}"
            raise FieldTypeError(msg, field="metadata")
    return types.MappingProxyType(dict(value))


def _keys_repr(keys: tuple[str, ...]) -> str:
    # Digests stay out of reprs and logs too: an unsalted digest of a weak key can be brute-forced.
    return f"<{len(keys)} digest{'' if len(keys) == 1 else 's'}>"


@final
@attrs.define(frozen=True)
class Tenant:
    """A tenant: its identity, credentials, upstreams, limits and priority.

    Tenants are immutable; change one with ``attrs.evolve(tenant, enabled=False)`` and hand the
    result to `TenantRegistry.put` or `TenantRegistry.replace`. Requests already admitted keep the
    object they started with.

    ```python
    import tenantlb as tlb

    acme = tlb.Tenant(
        "acme",
        api_keys=[tlb.hash_api_key("sk-acme-0123456789abcdef")],
        upstream="shared",
        routes={"/v1/embeddings": "gpu"},
        limits=[tlb.Rate(100, per=1.0)],
        max_concurrency=20,
        shard_size=2,
    )
    assert acme.upstream_for("/v1/embeddings/batch") == "gpu"
    assert acme.upstream_for("/v1/chat") == "shared"
    ```

    Attributes:
        id: 1..128 printable characters; used in rate-limit keys, events and metric labels.
        api_keys: Digests from `hash_api_key` (never raw keys).
        upstream: Name of the pool that serves this tenant by default, or None.
        routes: Per-route upstreams: a mapping (or pairs) of path prefix -> pool name. The
            longest matching prefix wins; a prefix matches whole path segments (``/v1`` matches
            ``/v1`` and ``/v1/chat`` but not ``/v10``; ``/v1/`` matches everything under it).
        limits: `tenantlb.Rate` limits applied to every request of the tenant, all at once.
        max_concurrency: Most requests of the tenant in flight at once, or None for no cap.
        weight: Priority (> 0) for schedulers that share capacity between tenants.
        shard_size: Shuffle-shard size: the tenant uses only this many endpoints of a shared
            pool (see `shuffle_shard`), or None for all of them.
        enabled: A disabled tenant is authenticated but refused with `Forbidden`.
        max_body_size: Largest request body in bytes (413 `ContentTooLarge` beyond), or None
            for the gateway's limit. The smaller of the two applies.
        max_header_size: Largest total size of the request's header fields in bytes (431
            `HeadersTooLarge` beyond), or None for the gateway's limit.
        display_name: Human-readable name, for dashboards.
        metadata: Free-form data for your own code (stored read-only).

    Raises:
        TypeError: A field has the wrong type.
        ValueError: A field has a bad value; the message names the field (never a key).
    """

    id: str = attrs.field(converter=_check_id)
    api_keys: tuple[str, ...] = attrs.field(
        default=(), kw_only=True, converter=_to_api_keys, repr=_keys_repr
    )
    upstream: str | None = attrs.field(default=None, kw_only=True, converter=_to_upstream)
    routes: tuple[tuple[str, str], ...] = attrs.field(
        default=(), kw_only=True, converter=_to_routes
    )
    limits: tuple[Rate, ...] = attrs.field(default=(), kw_only=True, converter=_to_limits)
    max_concurrency: int | None = attrs.field(
        default=None, kw_only=True, converter=_to_max_concurrency
    )
    weight: float = attrs.field(default=1.0, kw_only=True, converter=_to_weight)
    shard_size: int | None = attrs.field(default=None, kw_only=True, converter=_to_shard_size)
    enabled: bool = attrs.field(default=True, kw_only=True, converter=_to_enabled)
    max_body_size: int | None = attrs.field(default=None, kw_only=True, converter=_to_max_body_size)
    max_header_size: int | None = attrs.field(
        default=None, kw_only=True, converter=_to_max_header_size
    )
    display_name: str | None = attrs.field(default=None, kw_only=True, converter=_to_display_name)
    metadata: Mapping[str, Any] = attrs.field(
        factory=dict, kw_only=True, converter=_to_metadata, hash=False
    )
    _upstreams: frozenset[str] = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        names = {pool for _, pool in self.routes}
        if self.upstream is not None:
            names.add(self.upstream)
        object.__setattr__(self, "_upstreams", frozenset(names))

    @property
    def upstreams(self) -> frozenset[str]:
        """Every pool name this tenant may be routed to: `upstream` and the pools in `routes`."""
        return self._upstreams

    def upstream_for(self, path: str) -> str | None:
        """Return the pool that serves *path*: the longest matching route, else `upstream`.

        Args:
            path: The request path (without query string), e.g. ``/v1/chat``.

        Returns:
            A pool name from `upstreams`, or None if the tenant has no upstream for *path*.
        """
        for prefix, pool in self.routes:
            if path.startswith(prefix) and (
                len(path) == len(prefix) or prefix[-1] == "/" or path[len(prefix)] == "/"
            ):
                return pool
        return self.upstream

    def shard(self, endpoints: Iterable[str]) -> tuple[str, ...]:
        """Return the endpoints of a shared pool this tenant may use.

        With `shard_size` set this is `shuffle_shard` of the tenant id over *endpoints*;
        otherwise every endpoint, in the order given.

        Args:
            endpoints: The URLs of every endpoint of the pool.
        """
        if self.shard_size is None:
            return tuple(endpoints)
        return shuffle_shard(self.id, endpoints, self.shard_size)
