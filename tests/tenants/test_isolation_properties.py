"""Isolation properties (hypothesis): a key resolves only to its own tenant and its own upstreams."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

import tenantlb as tlb
from tenantlb.tenants import (
    APIKeyResolver,
    HeaderResolver,
    HostResolver,
    PathPrefixResolver,
    RequestInfo,
    Tenant,
    TenantRegistry,
    hash_api_key,
)

SECRET = "isolation-secret-0123456789"
POOLS = ["p0", "p1", "p2", "p3"]
ENDPOINTS = [f"http://10.0.0.{i}:80" for i in range(1, 9)]

ids = st.text(st.characters(min_codepoint=0x61, max_codepoint=0x7A), min_size=1, max_size=8)
keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
paths = st.sampled_from(["/", "/v1", "/v1/chat", "/v1/embeddings", "/v2/x", "/admin"])


@dataclass
class World:
    registry: TenantRegistry
    owner: dict[str, str]  # raw key -> tenant id
    tenants: dict[str, Tenant]
    secret: str | None


@st.composite
def worlds(draw: st.DrawFn) -> World:
    secret = draw(st.sampled_from([None, SECRET]))
    tenant_ids = draw(st.lists(ids, min_size=1, max_size=8, unique=True))
    all_keys = draw(
        st.lists(keys, min_size=len(tenant_ids), max_size=3 * len(tenant_ids), unique=True)
    )
    owner: dict[str, str] = {}
    tenants: dict[str, Tenant] = {}
    for n, tid in enumerate(tenant_ids):
        mine = all_keys[n :: len(tenant_ids)]
        for k in mine:
            owner[k] = tid
        routes = draw(
            st.dictionaries(
                st.sampled_from(["/v1", "/v1/embeddings", "/v2"]),
                st.sampled_from(POOLS),
                max_size=2,
            )
        )
        tenants[tid] = Tenant(
            tid,
            api_keys=[hash_api_key(k, secret=secret) for k in mine],
            upstream=draw(st.none() | st.sampled_from(POOLS)),
            routes=routes,
            shard_size=draw(st.none() | st.integers(1, 8)),
            enabled=draw(st.booleans()),
        )
    return World(TenantRegistry(tenants.values(), secret=secret), owner, tenants, secret)


@settings(max_examples=150, deadline=None)
@given(worlds(), st.data())
def test_a_key_resolves_only_to_its_own_tenant(world: World, data: st.DataObject) -> None:
    """Any presented key resolves to its owner (or Forbidden if disabled), else Unauthenticated."""
    key = data.draw(st.sampled_from(sorted(world.owner)) | keys, label="key")
    form = data.draw(st.sampled_from(["x-api-key", "bearer"]), label="form")
    headers = [("x-api-key", key)] if form == "x-api-key" else [("authorization", f"Bearer {key}")]
    path = data.draw(paths, label="path")
    owner_id = world.owner.get(key)
    try:
        tenant = world.registry.resolve(RequestInfo("GET", path, headers))
    except tlb.Forbidden:
        assert owner_id is not None
        assert not world.tenants[owner_id].enabled
        return
    except tlb.Unauthenticated:
        assert owner_id is None
        return
    assert tenant.id == owner_id
    assert tenant is world.registry.get(owner_id)
    assert tenant.enabled
    # Routing stays inside the tenant's own upstreams and shard.
    upstream = tenant.upstream_for(path)
    assert upstream is None or upstream in tenant.upstreams
    assert tenant.upstreams <= {t for t in [tenant.upstream, *dict(tenant.routes).values()] if t}
    shard = tenant.shard(ENDPOINTS)
    assert set(shard) <= set(ENDPOINTS)
    assert len(shard) == (tenant.shard_size or len(ENDPOINTS))


@settings(max_examples=100, deadline=None)
@given(worlds(), st.data())
def test_other_tenants_keys_never_authenticate_as_me(world: World, data: st.DataObject) -> None:
    """For every pair of tenants, no key of one resolves to the other."""
    for key, owner_id in world.owner.items():
        try:
            tenant = world.registry.by_api_key(key)
        except tlb.Forbidden:
            assert not world.tenants[owner_id].enabled
            continue
        assert tenant.id == owner_id


@settings(max_examples=100, deadline=None)
@given(worlds(), st.data())
def test_id_based_resolvers_only_return_registered_tenants(
    world: World, data: st.DataObject
) -> None:
    """Header, host and path resolvers return the named registered tenant or raise UnknownTenant."""
    name = data.draw(st.sampled_from(sorted(world.tenants)) | ids, label="name")
    registry = TenantRegistry(
        world.tenants.values(),
        resolvers=[
            HeaderResolver(),
            HostResolver("api.test"),
            PathPrefixResolver(),
            APIKeyResolver(),
        ],
        secret=world.secret,
    )
    requests = [
        RequestInfo("GET", "/", [("x-tenant-id", name)]),
        RequestInfo("GET", "/", host=f"{name}.api.test"),
        RequestInfo("GET", f"/t/{name}/v1"),
    ]
    for request in requests:
        try:
            tenant = registry.resolve(request)
        except tlb.UnknownTenant:
            assert name not in world.tenants
        except tlb.Forbidden:
            assert not world.tenants[name].enabled
        else:
            assert tenant is world.tenants[name] or tenant == world.tenants[name]
            assert tenant.id == name
