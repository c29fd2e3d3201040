"""`TenantRegistry`: the tenants, indexed by id and API-key digest, swapped atomically on reload."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import final

from .._errors import Forbidden, MissingCredentials, Unauthenticated, UnknownTenant
from .._validate import FieldTypeError, FieldValueError, require_type
from ._keys import digest_presented_key, digest_scheme, normalize_secret
from ._request import RequestInfo
from ._resolvers import APIKeyResolver, TenantResolver, default_resolvers
from ._tenant import Tenant

__all__ = ["RegistrySnapshot", "TenantRegistry"]


@final
class RegistrySnapshot:
    """One immutable version of a registry's tenants and their key index.

    `TenantRegistry` never changes a snapshot; every change builds a new one and swaps the
    reference. Hold on to a snapshot to see one consistent registry for the whole of a request
    (or a batch), whatever reloads happen meanwhile. Resolvers receive one as ``registry``.

    Attributes:
        version: Increases by one with every change of the registry.
    """

    __slots__ = ("_digests", "_secret", "_tenants", "version")

    def __init__(
        self, tenants: Iterable[Tenant], *, secret: bytes | None, version: int = 0
    ) -> None:
        by_id: dict[str, Tenant] = {}
        # digest -> (stored digest, tenant): the stored string is what compare_digest checks against.
        by_digest: dict[str, tuple[str, Tenant]] = {}
        expected = "sha256" if secret is None else "hmac-sha256"
        for tenant in tenants:
            require_type("tenants", tenant, Tenant, "Tenant objects")
            if tenant.id in by_id:
                msg = f"duplicate tenant id {tenant.id!r}"
                raise ValueError(msg)
            by_id[tenant.id] = tenant
            for i, digest in enumerate(tenant.api_keys):
                if digest_scheme(digest) != expected:
                    hint = "with" if secret is not None else "without"
                    msg = (
                        f"tenant {tenant.id!r}: api_keys[{i}] is a {digest_scheme(digest)} digest "
                        f"but the registry expects {expected}; hash keys {hint} the registry's secret"
                    )
                    raise ValueError(msg)
                other = by_digest.get(digest)
                if other is not None:
                    # Name both tenants, never the key (nor its digest).
                    msg = f"tenants {other[1].id!r} and {tenant.id!r} share an API key (api_keys[{i}] of {tenant.id!r})"
                    raise ValueError(msg)
                by_digest[digest] = (digest, tenant)
        self._tenants = by_id
        self._digests = by_digest
        self._secret = secret
        self.version = version

    def __repr__(self) -> str:
        return f"<RegistrySnapshot version={self.version} tenants={len(self._tenants)}>"

    def __len__(self) -> int:
        return len(self._tenants)

    def __iter__(self) -> Iterator[Tenant]:
        return iter(self._tenants.values())

    def __contains__(self, tenant_id: object) -> bool:
        return tenant_id in self._tenants

    def get(self, tenant_id: str) -> Tenant | None:
        """Return the tenant with id *tenant_id*, or None."""
        return self._tenants.get(tenant_id)

    def by_api_key(self, raw: str | bytes, *, source: str = "API key") -> Tenant:
        """Authenticate a raw API key and return its (enabled) tenant.

        The key is validated, hashed (SHA-256 or HMAC-SHA-256), found by digest in O(1) and
        confirmed with `hmac.compare_digest`.

        Args:
            raw: The key as presented by the client.
            source: How messages name the key, e.g. ``"x-api-key header"``.

        Raises:
            Unauthenticated: The key is malformed or belongs to no tenant.
            Forbidden: The key's tenant is disabled.
        """
        digest = digest_presented_key(raw, self._secret, source)
        found = self._digests.get(digest)
        # The dict lookup only ever compares the *digest* of an attacker-chosen key, which leaks
        # nothing useful about a valid key; compare_digest keeps the final check constant-time.
        if found is None or not hmac.compare_digest(found[0], digest):
            msg = f"invalid {source}"
            raise Unauthenticated(msg)
        tenant = found[1]
        if not tenant.enabled:
            msg = f"tenant {tenant.id!r} is disabled"
            raise Forbidden(msg)
        return tenant


@final
class TenantRegistry:
    """The tenants a gateway serves, and how requests find theirs.

    Lookups by id and by API-key digest are O(1) dict hits on an immutable `RegistrySnapshot`;
    changes (`add`, `put`, `remove`, `replace`) build a new snapshot under a lock and swap it in
    with one reference assignment, so readers — threads or async tasks — never lock and never see
    half a registry. Work that started on the old snapshot finishes on it.

    ```python
    import tenantlb as tlb

    registry = tlb.TenantRegistry([
        tlb.Tenant("acme", api_keys=[tlb.hash_api_key("sk-acme-0123456789")], upstream="shared"),
    ])
    info = tlb.RequestInfo("GET", "/v1/chat", [("authorization", "Bearer sk-acme-0123456789")])
    assert registry.resolve(info).id == "acme"
    ```

    Args:
        tenants: The initial tenants.
        resolvers: The resolver chain tried in order by `resolve`; default: the API key from
            ``x-api-key``, else ``Authorization: Bearer`` (see `default_resolvers`).
        secret: Server secret if the tenants' keys were hashed with
            ``hash_api_key(key, secret=...)`` (HMAC-SHA-256); None for plain SHA-256 digests.

    Raises:
        TypeError: A tenant or resolver has the wrong type.
        ValueError: Duplicate tenant ids, one key on two tenants, a digest of the wrong scheme
            for *secret*, or an empty resolver chain. Messages name tenants, never keys.
    """

    __slots__ = ("_lock", "_missing", "_resolvers", "_snapshot")

    def __init__(
        self,
        tenants: Iterable[Tenant] = (),
        *,
        resolvers: Sequence[TenantResolver] | None = None,
        secret: str | bytes | None = None,
    ) -> None:
        chain = default_resolvers() if resolvers is None else tuple(resolvers)
        if not chain:
            msg = "resolvers must not be empty (pass None for the default chain)"
            raise FieldValueError(msg, field="resolvers")
        for resolver in chain:
            _check_resolver(resolver)
        self._resolvers = chain
        sources = [r.source for r in chain if isinstance(r, APIKeyResolver)]
        self._missing = f"missing credentials: expected {' or '.join(sources)}" if sources else None
        self._lock = threading.Lock()
        self._snapshot = RegistrySnapshot(tenants, secret=normalize_secret(secret))

    def __repr__(self) -> str:
        snap = self._snapshot
        return f"<TenantRegistry version={snap.version} tenants={len(snap)}>"

    # -- reading (lock-free: one reference read) --------------------------------------------------

    def snapshot(self) -> RegistrySnapshot:
        """Return the current immutable snapshot; it never changes, even across reloads."""
        return self._snapshot

    @property
    def resolvers(self) -> tuple[TenantResolver, ...]:
        """The resolver chain `resolve` tries, in order."""
        return self._resolvers

    def __len__(self) -> int:
        return len(self._snapshot)

    def __iter__(self) -> Iterator[Tenant]:
        return iter(self._snapshot)

    def __contains__(self, tenant_id: object) -> bool:
        return tenant_id in self._snapshot

    def get(self, tenant_id: str) -> Tenant | None:
        """Return the tenant with id *tenant_id*, or None."""
        return self._snapshot.get(tenant_id)

    def by_api_key(self, raw: str | bytes) -> Tenant:
        """Authenticate a raw API key; see `RegistrySnapshot.by_api_key`.

        Raises:
            Unauthenticated: The key is malformed or belongs to no tenant.
            Forbidden: The key's tenant is disabled.
        """
        return self._snapshot.by_api_key(raw)

    def resolve(self, request: RequestInfo, *, snapshot: RegistrySnapshot | None = None) -> Tenant:
        """Find, authenticate and authorise the tenant of *request* through the resolver chain.

        The first resolver that returns a tenant decides; one that raises stops the chain (a
        wrong ``x-api-key`` is not rescued by a later resolver).

        Args:
            request: The request.
            snapshot: Resolve against this snapshot (default: the current one).

        Returns:
            The tenant, enabled and present in the snapshot.

        Raises:
            Unauthenticated: Malformed or wrong credentials; `MissingCredentials` (a subclass)
                when the request carries none of the API keys the chain looks for.
            UnknownTenant: No resolver matched (chains without API-key resolvers), or a resolver
                named a tenant the registry does not hold.
            Forbidden: The tenant is disabled.
            TypeError: A custom resolver returned something other than a Tenant or None.
        """
        snap = self._snapshot if snapshot is None else snapshot
        for resolver in self._resolvers:
            tenant = resolver(request, snap)
            if tenant is not None:
                break
        else:
            if self._missing is not None:
                raise MissingCredentials(self._missing)
            msg = "no tenant matched the request"
            raise UnknownTenant(msg)
        if type(resolver) is APIKeyResolver:
            return tenant  # found by digest in *snap* and checked enabled (`by_api_key`)
        if type(tenant) is not Tenant:  # Tenant is final: an exact type check is enough
            _bad_result(resolver, tenant)
        held = snap._tenants.get(tenant.id)
        if held is None or (held is not tenant and held != tenant):
            # A custom resolver made up a tenant (or kept a stale one): never trust it.
            msg = "the resolved tenant is not in the registry"
            raise UnknownTenant(msg)
        if not held.enabled:
            msg = f"tenant {held.id!r} is disabled"
            raise Forbidden(msg)
        return held

    # -- writing (serialised; each builds and swaps a whole new snapshot) -------------------------

    def add(self, tenant: Tenant) -> None:
        """Add a new tenant.

        Raises:
            ValueError: A tenant with that id exists, or one of its keys belongs to another tenant.
        """
        with self._lock:
            old = self._snapshot
            if tenant.id in old:
                msg = f"tenant {tenant.id!r} already exists; use put() to replace it"
                raise ValueError(msg)
            self._swap([*old, tenant])

    def put(self, tenant: Tenant) -> None:
        """Add *tenant*, or replace the tenant with the same id, in one atomic step."""
        with self._lock:
            old = self._snapshot
            items = dict(old._tenants)
            items[tenant.id] = tenant
            self._swap(items.values())

    def remove(self, tenant_id: str) -> Tenant:
        """Remove and return the tenant *tenant_id*.

        Raises:
            KeyError: No such tenant.
        """
        with self._lock:
            old = self._snapshot
            tenant = old.get(tenant_id)
            if tenant is None:
                raise KeyError(tenant_id)
            self._swap(t for t in old if t.id != tenant_id)
            return tenant

    def replace(self, tenants: Iterable[Tenant]) -> RegistrySnapshot:
        """Swap in a whole new set of tenants atomically (hot reload) and return the new snapshot.

        The new set is validated completely before the swap; on error the registry is unchanged.
        Requests that already resolved keep their `Tenant` objects and snapshot.

        Raises:
            TypeError: A tenant is not a `Tenant`.
            ValueError: Duplicate ids or a key shared by two tenants.
        """
        with self._lock:
            return self._swap(tenants)

    def _swap(self, tenants: Iterable[Tenant]) -> RegistrySnapshot:
        old = self._snapshot
        new = RegistrySnapshot(tenants, secret=old._secret, version=old.version + 1)
        self._snapshot = new
        return new


def _check_resolver(resolver: object) -> None:
    if not callable(resolver):
        msg = f"resolvers must be callables (request, registry) -> Tenant | None, got {resolver!r}"
        raise FieldTypeError(msg, field="resolvers")


def _bad_result(resolver: object, result: object) -> None:
    require_type(f"the result of resolver {resolver!r}", result, Tenant, "a Tenant or None")
