"""TenantRegistry: CRUD, duplicate detection, by_api_key, resolver chains and snapshots."""

from __future__ import annotations

import attrs
import pytest

import tenantlb as tlb
from tenantlb.tenants import (
    APIKeyResolver,
    HeaderResolver,
    RegistrySnapshot,
    RequestInfo,
    Tenant,
    TenantRegistry,
    hash_api_key,
)

KEY_A = "sk-acme-0123456789abcdef"
KEY_B = "sk-beta-fedcba9876543210"
SECRET = "0123456789abcdef-secret"


def make(secret: str | None = None) -> TenantRegistry:
    return TenantRegistry(
        [
            Tenant("acme", api_keys=[hash_api_key(KEY_A, secret=secret)], upstream="shared"),
            Tenant("beta", api_keys=[hash_api_key(KEY_B, secret=secret)], upstream="shared"),
        ],
        secret=secret,
    )


def test_get_contains_len_and_iteration() -> None:
    """A registry answers get, in, len and iterates its tenants in insertion order."""
    reg = make()
    assert len(reg) == 2
    assert "acme" in reg
    assert "nobody" not in reg
    assert reg.get("beta") is not None
    assert reg.get("nobody") is None
    assert [t.id for t in reg] == ["acme", "beta"]


def test_add_put_remove() -> None:
    """add() refuses an existing id, put() replaces it, remove() returns it or raises KeyError."""
    reg = make()
    with pytest.raises(ValueError, match="tenant 'acme' already exists"):
        reg.add(Tenant("acme"))
    reg.add(Tenant("gamma"))
    assert "gamma" in reg
    reg.put(Tenant("acme", upstream="other"))
    acme = reg.get("acme")
    assert acme is not None
    assert acme.upstream == "other"
    with pytest.raises(tlb.Unauthenticated):
        reg.by_api_key(KEY_A)  # put() replaced the tenant and dropped its key
    assert reg.remove("gamma").id == "gamma"
    with pytest.raises(KeyError):
        reg.remove("gamma")
    assert [t.id for t in reg] == ["acme", "beta"]


def test_every_change_bumps_the_version() -> None:
    """Each add/put/remove/replace produces a new snapshot with a higher version."""
    reg = make()
    versions = [reg.snapshot().version]
    reg.add(Tenant("c"))
    versions.append(reg.snapshot().version)
    reg.put(Tenant("c", weight=2))
    versions.append(reg.snapshot().version)
    reg.remove("c")
    versions.append(reg.snapshot().version)
    versions.append(reg.replace([]).version)
    assert versions == [0, 1, 2, 3, 4]


def test_duplicate_ids_are_rejected() -> None:
    """Two tenants with the same id are a ValueError naming the id."""
    with pytest.raises(ValueError, match="duplicate tenant id 'acme'"):
        TenantRegistry([Tenant("acme"), Tenant("acme")])


def test_shared_key_names_both_tenants_but_not_the_key() -> None:
    """One key on two tenants is a ValueError that names both tenants and neither key nor digest."""
    digest = hash_api_key(KEY_A)
    with pytest.raises(ValueError, match="tenants 'a' and 'b' share an API key") as info:
        TenantRegistry([Tenant("a", api_keys=[digest]), Tenant("b", api_keys=[digest])])
    text = str(info.value) + repr(info.value)
    assert KEY_A not in text
    assert digest.split(":")[1] not in text


def test_failed_replace_leaves_the_registry_unchanged() -> None:
    """A replace() that fails validation keeps the previous snapshot."""
    reg = make()
    before = reg.snapshot()
    with pytest.raises(ValueError, match="duplicate tenant id"):
        reg.replace([Tenant("x"), Tenant("x")])
    with pytest.raises(TypeError, match="tenants must be Tenant objects"):
        reg.replace(["acme"])  # type: ignore[list-item]
    assert reg.snapshot() is before


def test_digest_scheme_must_match_the_secret() -> None:
    """SHA-256 digests in a registry with a secret (and vice versa) are a ValueError."""
    with pytest.raises(ValueError, match="is a sha256 digest but the registry expects hmac"):
        TenantRegistry([Tenant("a", api_keys=[hash_api_key(KEY_A)])], secret=SECRET)
    with pytest.raises(ValueError, match="is a hmac-sha256 digest but the registry expects sha256"):
        TenantRegistry([Tenant("a", api_keys=[hash_api_key(KEY_A, secret=SECRET)])])


@pytest.mark.parametrize("secret", [None, SECRET])
def test_by_api_key_finds_the_owner(secret: str | None) -> None:
    """by_api_key() returns the tenant that owns the key, with or without a secret."""
    reg = make(secret)
    assert reg.by_api_key(KEY_A).id == "acme"
    assert reg.by_api_key(KEY_B.encode()).id == "beta"
    with pytest.raises(tlb.Unauthenticated, match="invalid API key"):
        reg.by_api_key("sk-nobody-00000000")


def test_hmac_registry_rejects_keys_hashed_under_another_secret() -> None:
    """Keys hashed under a different secret do not authenticate."""
    reg = TenantRegistry(
        [Tenant("a", api_keys=[hash_api_key(KEY_A, secret="another-secret-0123456")])],
        secret=SECRET,
    )
    with pytest.raises(tlb.Unauthenticated):
        reg.by_api_key(KEY_A)


def test_resolve_default_chain_accepts_header_and_bearer() -> None:
    """The default chain reads x-api-key, then Authorization: Bearer (scheme case-insensitive)."""
    reg = make()
    assert reg.resolve(RequestInfo("GET", "/", [("x-api-key", KEY_A)])).id == "acme"
    assert reg.resolve(RequestInfo("GET", "/", [("authorization", f"Bearer {KEY_B}")])).id == "beta"
    assert reg.resolve(RequestInfo("GET", "/", [("Authorization", f"bearer {KEY_B}")])).id == "beta"


def test_first_resolver_that_finds_a_credential_decides() -> None:
    """A wrong x-api-key is not rescued by a valid Bearer token later in the chain."""
    reg = make()
    info = RequestInfo(
        "GET", "/", [("x-api-key", "sk-wrong-000000000"), ("authorization", f"Bearer {KEY_B}")]
    )
    with pytest.raises(tlb.Unauthenticated, match="invalid x-api-key header"):
        reg.resolve(info)


def test_resolve_against_a_pinned_snapshot() -> None:
    """resolve(snapshot=...) uses that snapshot even after the registry changed."""
    reg = make()
    old = reg.snapshot()
    reg.replace([])
    info = RequestInfo("GET", "/", [("x-api-key", KEY_A)])
    assert reg.resolve(info, snapshot=old).id == "acme"
    with pytest.raises(tlb.Unauthenticated):
        reg.resolve(info)


def test_chain_without_key_resolvers_reports_unknown_tenant() -> None:
    """When no resolver of a key-less chain matches, resolve() raises UnknownTenant."""
    reg = TenantRegistry([Tenant("acme")], resolvers=[HeaderResolver()])
    with pytest.raises(tlb.UnknownTenant, match="no tenant matched the request"):
        reg.resolve(RequestInfo("GET", "/"))


def test_custom_callable_resolver() -> None:
    """Any callable (request, registry) -> Tenant | None can be a resolver."""

    def by_query(request: RequestInfo, registry: RegistrySnapshot) -> Tenant | None:
        return registry.get(request.path.rpartition("=")[2]) if "tenant=" in request.path else None

    reg = TenantRegistry([Tenant("acme")], resolvers=[by_query, APIKeyResolver()])
    assert reg.resolve(RequestInfo("GET", "/x?tenant=acme")).id == "acme"
    with pytest.raises(tlb.Unauthenticated, match="missing credentials: expected x-api-key"):
        reg.resolve(RequestInfo("GET", "/x"))


def test_resolvers_cannot_smuggle_in_tenants() -> None:
    """A resolver returning a tenant absent from (or different in) the registry gets UnknownTenant."""
    stranger = Tenant("stranger", upstream="secret-pool")
    reg = TenantRegistry([Tenant("acme", upstream="shared")], resolvers=[lambda r, s: stranger])
    with pytest.raises(tlb.UnknownTenant, match="not in the registry"):
        reg.resolve(RequestInfo("GET", "/"))
    forged = Tenant("acme", upstream="secret-pool")
    reg = TenantRegistry([Tenant("acme", upstream="shared")], resolvers=[lambda r, s: forged])
    with pytest.raises(tlb.UnknownTenant, match="not in the registry"):
        reg.resolve(RequestInfo("GET", "/"))


def test_resolver_returning_junk_is_a_type_error() -> None:
    """A resolver returning something other than a Tenant or None raises TypeError."""
    reg = TenantRegistry([Tenant("acme")], resolvers=[lambda r, s: "acme"])  # type: ignore[list-item,return-value]
    with pytest.raises(TypeError, match="must be a Tenant or None, got str"):
        reg.resolve(RequestInfo("GET", "/"))


def test_bad_resolver_chains_are_rejected() -> None:
    """An empty chain is a ValueError, a non-callable a TypeError."""
    with pytest.raises(ValueError, match="resolvers must not be empty"):
        TenantRegistry(resolvers=[])
    with pytest.raises(TypeError, match="resolvers must be callables"):
        TenantRegistry(resolvers=["x-api-key"])  # type: ignore[list-item]


def test_disabled_tenant_resolved_by_any_resolver_is_forbidden() -> None:
    """A disabled tenant is Forbidden whether found by key or by a trusted header."""
    off = Tenant("acme", api_keys=[hash_api_key(KEY_A)], enabled=False)
    reg = TenantRegistry([off], resolvers=[APIKeyResolver(), HeaderResolver()])
    with pytest.raises(tlb.Forbidden, match="tenant 'acme' is disabled") as info:
        reg.resolve(RequestInfo("GET", "/", [("x-api-key", KEY_A)]))
    assert info.value.status == 403
    with pytest.raises(tlb.Forbidden, match="tenant 'acme' is disabled"):
        reg.resolve(RequestInfo("GET", "/", [("x-tenant-id", "acme")]))
    reg.put(attrs.evolve(off, enabled=True))
    assert reg.resolve(RequestInfo("GET", "/", [("x-api-key", KEY_A)])).id == "acme"


def test_reprs_show_counts_not_secrets() -> None:
    """Registry and snapshot reprs show version and size, never keys, digests or the secret."""
    reg = make(SECRET)
    for text in (repr(reg), repr(reg.snapshot()), str(reg)):
        assert SECRET not in text
        assert KEY_A not in text
        assert "tenants=2" in text
