"""Resolvers: API key and Bearer, trusted header, host and path prefix."""

from __future__ import annotations

import pytest

import tenantlb as tlb
from tenantlb.tenants import (
    APIKeyResolver,
    HeaderResolver,
    HostResolver,
    PathPrefixResolver,
    RequestInfo,
    Tenant,
    TenantRegistry,
    default_resolvers,
)

REG = TenantRegistry([Tenant("acme"), Tenant("beta"), Tenant("off", enabled=False)])


def resolve(resolver: object, request: RequestInfo) -> Tenant | None:
    return resolver(request, REG.snapshot())  # type: ignore[operator,no-any-return]


def test_default_chain_is_x_api_key_then_bearer() -> None:
    """The default chain is APIKeyResolver('x-api-key') then the Bearer resolver."""
    chain = default_resolvers()
    assert [repr(r) for r in chain] == [
        "APIKeyResolver('x-api-key')",
        "APIKeyResolver('authorization', scheme='Bearer')",
    ]


def test_api_key_resolver_ignores_requests_without_its_header() -> None:
    """A missing header, or Authorization with another scheme, is 'not mine'."""
    assert resolve(APIKeyResolver(), RequestInfo("GET", "/")) is None
    basic = RequestInfo("GET", "/", [("authorization", "Basic dXNlcjpwYXNz")])
    assert resolve(APIKeyResolver.bearer(), basic) is None


def test_api_key_resolver_validates_its_arguments() -> None:
    """Bad header names and schemes are rejected at construction."""
    with pytest.raises(ValueError, match="header must be a valid HTTP header name"):
        APIKeyResolver("x api key")
    with pytest.raises(TypeError, match="header must be a str"):
        APIKeyResolver(b"x-api-key")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scheme must be an auth scheme name"):
        APIKeyResolver("authorization", scheme="Bearer ")
    assert APIKeyResolver("X-Key").header == "x-key"


def test_header_resolver_reads_the_tenant_id() -> None:
    """HeaderResolver maps the header value to a tenant and rejects unknown or repeated ids."""
    resolver = HeaderResolver("X-Tenant-Id")
    assert resolve(resolver, RequestInfo("GET", "/", [("x-tenant-id", "acme")])) is REG.get("acme")
    assert resolve(resolver, RequestInfo("GET", "/")) is None
    with pytest.raises(tlb.UnknownTenant, match="x-tenant-id header names no known tenant") as info:
        resolve(resolver, RequestInfo("GET", "/", [("x-tenant-id", "sk-oops-a-key")]))
    assert "sk-oops-a-key" not in str(info.value)
    with pytest.raises(tlb.UnknownTenant, match="more than one x-tenant-id"):
        resolve(
            resolver, RequestInfo("GET", "/", [("x-tenant-id", "acme"), ("x-tenant-id", "beta")])
        )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("acme.api.example.com", "acme"),
        ("BETA.api.example.com:8443", "beta"),
        ("acme.api.example.com.", "acme"),
        ("custom.acme.test", "acme"),
        ("api.example.com", None),
        ("x.acme.api.example.com", None),
        ("acme.example.com", None),
        ("evilapi.example.com", None),
        ("", None),
    ],
)
def test_host_resolver(host: str, expected: str | None) -> None:
    """HostResolver maps exact hosts and one-label subdomains of the base domain to tenants."""
    resolver = HostResolver("api.example.com", hosts={"Custom.Acme.Test": "acme"})
    tenant = resolve(resolver, RequestInfo("GET", "/", [("host", host)] if host else []))
    assert (tenant.id if tenant else None) == expected


def test_host_resolver_unknown_subdomain_is_unknown_tenant() -> None:
    """A subdomain that names no tenant raises UnknownTenant."""
    with pytest.raises(tlb.UnknownTenant, match="the host names no known tenant"):
        resolve(
            HostResolver("api.example.com"), RequestInfo("GET", "/", host="zzz.api.example.com")
        )


def test_host_resolver_arguments() -> None:
    """HostResolver needs a base domain or hosts, and a plain domain name."""
    with pytest.raises(ValueError, match="needs a base_domain or hosts"):
        HostResolver()
    with pytest.raises(ValueError, match="base_domain must be a domain name"):
        HostResolver("https://api.example.com")
    with pytest.raises(TypeError, match="base_domain must be a str or None"):
        HostResolver(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/t/{tenant}/", "/t/acme/v1/chat", "acme"),
        ("/t/{tenant}/", "/t/acme", "acme"),
        ("/t/{tenant}/", "/t//v1", None),
        ("/t/{tenant}/", "/x/acme/v1", None),
        ("/{tenant}/", "/beta/v1", "beta"),
        ("/api/{tenant}/v1/", "/api/acme/v1/chat", "acme"),
        ("/api/{tenant}/v1/", "/api/acme/v1", "acme"),
        ("/api/{tenant}/v1/", "/api/acme/v2/chat", None),
        ("/api/{tenant}/v1/", "/api/acme/v10", None),
    ],
)
def test_path_prefix_resolver(template: str, path: str, expected: str | None) -> None:
    """PathPrefixResolver takes the tenant from the {tenant} segment of matching paths."""
    tenant = resolve(PathPrefixResolver(template), RequestInfo("GET", path))
    assert (tenant.id if tenant else None) == expected


@pytest.mark.parametrize(
    "template", ["/t/", "t/{tenant}/", "/t/x{tenant}/", "/{tenant}/{tenant}/", "/t/{tenant}x"]
)
def test_path_prefix_templates_are_validated(template: str) -> None:
    """Templates need one whole-segment {tenant} and a leading slash."""
    with pytest.raises(ValueError, match="template must look like"):
        PathPrefixResolver(template)


def test_path_prefix_unknown_tenant() -> None:
    """A path segment naming no tenant raises UnknownTenant without echoing it."""
    with pytest.raises(tlb.UnknownTenant, match="the path names no known tenant"):
        resolve(PathPrefixResolver(), RequestInfo("GET", "/t/ghost/v1"))


@pytest.mark.parametrize(
    ("scheme", "error"), [(5, TypeError), (b"Bearer", TypeError), ("Bé", ValueError)]
)
def test_api_key_resolver_scheme_errors_are_typed(scheme: object, error: type[Exception]) -> None:
    """A non-str scheme is a TypeError and a non-ASCII or non-alphanumeric one a ValueError."""
    with pytest.raises(error, match="scheme must be"):
        APIKeyResolver("authorization", scheme=scheme)  # type: ignore[arg-type]
