"""Tenant: validation, per-route upstreams, shards and reprs."""

from __future__ import annotations

import attrs
import pytest

import tenantlb as tlb
from tenantlb.tenants import Tenant, hash_api_key

KEY = "sk-test-0123456789abcdef"


def test_minimal_tenant_has_safe_defaults() -> None:
    """A tenant built from an id alone has no keys, no upstream, no limits and is enabled."""
    t = Tenant("acme")
    assert t.api_keys == ()
    assert t.upstream is None
    assert t.upstreams == frozenset()
    assert t.limits == ()
    assert t.max_concurrency is None
    assert t.weight == 1.0
    assert t.shard_size is None
    assert t.enabled is True
    assert dict(t.metadata) == {}


@pytest.mark.parametrize("bad", ["", "a" * 129, "tab\there", "new\nline", "\x00"])
def test_bad_ids_are_rejected_with_the_field_named(bad: str) -> None:
    """An id that is empty, too long or non-printable raises ValueError naming the id rule."""
    with pytest.raises(ValueError, match=r"id must be 1\.\.128 printable characters, got"):
        Tenant(bad)


def test_id_must_be_a_string() -> None:
    """A non-str id raises TypeError."""
    with pytest.raises(TypeError, match="id must be a str"):
        Tenant(42)  # type: ignore[arg-type]


def test_longest_ids_and_unicode_are_allowed() -> None:
    """128 printable characters, including non-ASCII letters, make a valid id."""
    assert Tenant("é" * 128).id == "é" * 128


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_concurrency": 0}, ValueError, "max_concurrency must be >= 1, got 0"),
        ({"max_concurrency": 1.5}, TypeError, "max_concurrency must be an int or None"),
        ({"max_concurrency": True}, TypeError, "max_concurrency must be an int or None"),
        ({"shard_size": -1}, ValueError, "shard_size must be >= 1, got -1"),
        ({"weight": 0}, ValueError, "weight must be > 0 and finite, got 0"),
        ({"weight": float("nan")}, ValueError, "weight must be > 0 and finite, got nan"),
        ({"weight": "1"}, TypeError, "weight must be a number"),
        ({"enabled": 1}, TypeError, "enabled must be a bool"),
        ({"upstream": ""}, ValueError, "upstream must be a non-empty printable pool name"),
        ({"upstream": 3}, TypeError, r"upstream must be a pool name \(str\)"),
        ({"routes": {"v1": "a"}}, ValueError, "routes prefix must be a printable path starting"),
        ({"routes": "nope"}, TypeError, "routes must be a mapping"),
        ({"routes": [("/a", "x"), ("/a", "y")]}, ValueError, "routes prefix '/a' appears twice"),
        ({"limits": "100/s"}, TypeError, "limits must be an iterable of Rate"),
        ({"limits": [object()]}, TypeError, r"limits\[0\] must be a tenantlb.Rate"),
        ({"display_name": 5}, TypeError, "display_name must be a str or None"),
        ({"metadata": [1]}, TypeError, "metadata must be a mapping"),
        ({"metadata": {1: 2}}, TypeError, "metadata keys must be str"),
        ({"api_keys": "sha256:00"}, TypeError, "api_keys must be an iterable of digests"),
    ],
)
def test_bad_fields_raise_typed_errors_naming_the_field(
    kwargs: dict[str, object], exc: type[Exception], match: str
) -> None:
    """Each bad field raises TypeError or ValueError with a message that names it."""
    with pytest.raises(exc, match=match):
        Tenant("acme", **kwargs)  # type: ignore[arg-type]


def test_raw_key_passed_as_digest_is_rejected_without_echo() -> None:
    """A raw key in api_keys is refused and the message does not contain it."""
    with pytest.raises(ValueError, match=r"api_keys\[0\] must be a digest") as info:
        Tenant("acme", api_keys=[KEY])
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)


def test_repeated_digest_is_rejected() -> None:
    """The same digest twice on one tenant is a ValueError naming both positions."""
    digest = hash_api_key(KEY)
    with pytest.raises(ValueError, match=r"api_keys\[1\] repeats api_keys\[0\]"):
        Tenant("acme", api_keys=[digest, digest])


def test_repr_shows_neither_keys_nor_digests() -> None:
    """repr() and str() of a tenant show how many keys it has, not the keys or digests."""
    digest = hash_api_key(KEY)
    t = Tenant("acme", api_keys=[digest])
    for text in (repr(t), str(t)):
        assert KEY not in text
        assert digest not in text
        assert digest.split(":")[1][:16] not in text
        assert "<1 digest>" in text


def test_tenants_are_frozen_hashable_and_evolvable() -> None:
    """Tenants are immutable, hashable and comparable; attrs.evolve makes a changed copy."""
    t = Tenant("acme", upstream="shared", metadata={"tier": "gold"})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        t.enabled = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        t.metadata["tier"] = "free"  # type: ignore[index]
    off = attrs.evolve(t, enabled=False)
    assert off.enabled is False
    assert off.upstreams == t.upstreams
    assert t == Tenant("acme", upstream="shared", metadata={"tier": "gold"})
    assert len({t, off}) == 2


def test_upstream_for_picks_the_longest_whole_segment_prefix() -> None:
    """upstream_for() picks the longest route prefix that matches whole segments, else upstream."""
    t = Tenant(
        "acme",
        upstream="shared",
        routes={"/v1": "v1", "/v1/embeddings": "gpu", "/static/": "cdn"},
    )
    assert t.upstream_for("/v1/embeddings") == "gpu"
    assert t.upstream_for("/v1/embeddings/batch") == "gpu"
    assert t.upstream_for("/v1/embeddingsX") == "v1"
    assert t.upstream_for("/v1") == "v1"
    assert t.upstream_for("/v1/chat") == "v1"
    assert t.upstream_for("/v10/chat") == "shared"
    assert t.upstream_for("/static/app.js") == "cdn"
    assert t.upstream_for("/static") == "shared"
    assert t.upstream_for("/") == "shared"
    assert t.upstreams == frozenset({"shared", "v1", "gpu", "cdn"})


def test_routes_accept_pairs_and_without_upstream_unmatched_paths_have_none() -> None:
    """Routes may be pairs; a path no route matches has no upstream when upstream is None."""
    t = Tenant("acme", routes=[("/a", "pa"), ("/", "root")])
    assert t.upstream_for("/a/b") == "pa"
    assert t.upstream_for("/b") == "root"
    assert Tenant("x", routes={"/a": "pa"}).upstream_for("/b") is None


def test_shard_is_every_endpoint_without_shard_size() -> None:
    """Tenant.shard() returns all endpoints without shard_size and shuffle_shard() with it."""
    urls = [f"http://10.0.0.{i}:80" for i in range(8)]
    assert Tenant("a").shard(urls) == tuple(urls)
    sharded = Tenant("a", shard_size=3).shard(urls)
    assert sharded == tlb.shuffle_shard("a", urls, 3)
    assert len(sharded) == 3
