"""Admission without an upstream, the anonymous-traffic policy, and body/header size limits."""

from __future__ import annotations

import pytest

import tenantlb as tlb

KEY = "sk-acme-0123456789abcdef"
APP_KEY = "sk-app-0123456789abcdef"


def make_gateway(**kwargs: object) -> tlb.Gateway:
    registry = tlb.TenantRegistry(
        [
            tlb.Tenant("acme", api_keys=[tlb.hash_api_key(KEY)], upstream="shared"),
            tlb.Tenant(
                "app",
                api_keys=[tlb.hash_api_key(APP_KEY)],
                limits=[tlb.Rate(2, per=60.0)],
                max_concurrency=1,
            ),
        ]
    )
    pool = tlb.Pool(["http://10.0.0.1:8000"])
    return tlb.Gateway(registry=registry, pools={"shared": pool}, **kwargs)  # type: ignore[arg-type]


def info(headers: list[tuple[str, str]], ip: str = "203.0.113.9") -> tlb.RequestInfo:
    return tlb.RequestInfo("POST", "/v1/chat", headers, client=(ip, 5555))


@pytest.mark.anyio
async def test_a_tenant_without_upstream_is_admitted_without_a_lease() -> None:
    """A tenant with no upstream gets auth, limits and a slot but no lease; its status is still recorded."""
    gateway = make_gateway()
    async with gateway.admit(info([("x-api-key", APP_KEY)])) as ticket:
        assert ticket.tenant.id == "app"
        assert ticket.lease is None
        assert ticket.endpoint is None
        assert ticket.upstream is None
        assert ticket.attempts == 0
        assert ticket.headers  # its rate limit still applies
        ticket.record(status=201)
        assert ticket.status == 201
        with pytest.raises(tlb.OverCapacity):  # its one slot is held
            async with gateway.admit(info([("x-api-key", APP_KEY)])):
                pass
        with pytest.raises(RuntimeError, match="without an upstream"):
            ticket.reroute(OSError())
    async with gateway.admit(info([("x-api-key", APP_KEY)])):
        pass  # the slot came back
    with pytest.raises(tlb.RateLimited):
        async with gateway.admit(info([("x-api-key", APP_KEY)])):
            pass


@pytest.mark.anyio
async def test_lease_false_never_leases_and_lease_true_requires_an_upstream() -> None:
    """Middleware admits with lease=False (no endpoint taken); a proxy with lease=True is refused 403 without one."""
    gateway = make_gateway()
    async with gateway.admit(info([("x-api-key", KEY)]), lease=False) as ticket:
        assert ticket.lease is None
        assert gateway.stats().pools["shared"].in_flight == 0
    async with gateway.admit(info([("x-api-key", KEY)]), lease=True) as ticket:
        assert ticket.endpoint is not None
    with pytest.raises(tlb.Forbidden, match="no upstream"):
        async with gateway.admit(info([("x-api-key", APP_KEY)]), lease=True):
            pass
    # The refusal consumed nothing: both of app's requests are still there.
    for _ in range(2):
        async with gateway.admit(info([("x-api-key", APP_KEY)])):
            pass


@pytest.mark.anyio
async def test_no_credentials_are_refused_with_a_challenge_by_default() -> None:
    """Without an anonymous policy a request without credentials is a 401 MissingCredentials with WWW-Authenticate."""
    gateway = make_gateway()
    with pytest.raises(tlb.MissingCredentials) as caught:
        async with gateway.admit(info([])):
            pass
    assert caught.value.status == 401
    assert ("WWW-Authenticate", 'Bearer realm="tenantlb"') in caught.value.headers
    with pytest.raises(tlb.Unauthenticated) as wrong:
        async with gateway.admit(info([("x-api-key", "sk-wrong-0123456789abc")])):
            pass
    assert any(n == "WWW-Authenticate" for n, _ in wrong.value.headers)


@pytest.mark.anyio
async def test_anonymous_traffic_is_limited_per_client_ip() -> None:
    """With an anonymous tenant, requests without credentials are admitted, each client IP with its own quota."""
    anonymous = tlb.Tenant("anonymous", limits=[tlb.Rate(2, per=60.0)], max_concurrency=1)
    gateway = make_gateway(anonymous=anonymous)
    for _ in range(2):
        async with gateway.admit(info([], ip="198.51.100.1")) as ticket:
            assert ticket.tenant is anonymous
            assert ticket.lease is None
    with pytest.raises(tlb.RateLimited):
        async with gateway.admit(info([], ip="198.51.100.1")):
            pass
    async with gateway.admit(info([], ip="198.51.100.2")) as other:  # another IP, its own quota
        assert other.tenant is anonymous
        with pytest.raises(tlb.OverCapacity):
            async with gateway.admit(info([], ip="198.51.100.2")):
                pass
    # Wrong credentials are still wrong: anonymous admission is only for requests without any.
    with pytest.raises(tlb.Unauthenticated):
        async with gateway.admit(
            info([("x-api-key", "sk-wrong-0123456789abc")], ip="198.51.100.3")
        ):
            pass


@pytest.mark.anyio
async def test_anonymous_client_ip_honours_trusted_proxies_only() -> None:
    """A spoofed X-Forwarded-For from an untrusted peer does not buy a fresh anonymous quota."""
    anonymous = tlb.Tenant("anonymous", limits=[tlb.Rate(1, per=60.0)])
    gateway = make_gateway(anonymous=anonymous, trusted_proxies=["10.0.0.0/8"])
    request = gateway.request(
        "GET", "/", [("x-forwarded-for", "192.0.2.1")], client=("203.0.113.5", 1)
    )
    async with gateway.admit(request):
        pass
    spoofed = gateway.request(
        "GET", "/", [("x-forwarded-for", "192.0.2.2")], client=("203.0.113.5", 1)
    )
    with pytest.raises(tlb.RateLimited):
        async with gateway.admit(spoofed):
            pass
    via_proxy = gateway.request(
        "GET", "/", [("x-forwarded-for", "192.0.2.2")], client=("10.1.1.1", 1)
    )
    async with gateway.admit(via_proxy):  # a trusted proxy vouches for another client
        pass


def test_anonymous_tenant_must_be_keyless_and_its_upstream_configured() -> None:
    """An anonymous tenant with API keys is a ValueError; one naming an unknown pool a ConfigError."""
    with pytest.raises(ValueError, match="must not have api_keys"):
        make_gateway(
            anonymous=tlb.Tenant("anonymous", api_keys=[tlb.hash_api_key("sk-x-0123456789ab")])
        )
    with pytest.raises(tlb.ConfigError, match=r"anonymous\.upstream"):
        make_gateway(anonymous=tlb.Tenant("anonymous", upstream="nope"))
    with pytest.raises(TypeError, match="anonymous must be a Tenant"):
        make_gateway(anonymous="anonymous")


@pytest.mark.anyio
async def test_body_and_header_limits_answer_413_and_431_before_charging() -> None:
    """A declared body over the limit is 413, headers over the limit 431; neither consumes quota."""
    gateway = make_gateway(max_body_size=1000, max_header_size=200)
    with pytest.raises(tlb.ContentTooLarge) as body:
        async with gateway.admit(info([("x-api-key", APP_KEY), ("content-length", "1001")])):
            pass
    assert body.value.status == 413
    assert body.value.limit == 1000
    with pytest.raises(tlb.HeadersTooLarge) as headers:
        async with gateway.admit(info([("x-api-key", APP_KEY), ("x-pad", "p" * 300)])):
            pass
    assert headers.value.status == 431
    with pytest.raises(tlb.RequestRejected) as bad:
        async with gateway.admit(info([("x-api-key", APP_KEY), ("content-length", "-5")])):
            pass
    assert bad.value.status == 400
    for _ in range(2):  # nothing was charged
        async with gateway.admit(info([("x-api-key", APP_KEY), ("content-length", "1000")])) as ok:
            assert ok.max_body_size == 1000


@pytest.mark.anyio
async def test_a_tenant_limit_tightens_the_global_one() -> None:
    """The smaller of the tenant's and the gateway's limits applies, and is handed to adapters on the ticket."""
    registry = tlb.TenantRegistry(
        [
            tlb.Tenant(
                "small", api_keys=[tlb.hash_api_key(KEY)], max_body_size=10, max_header_size=100
            ),
            tlb.Tenant("big", api_keys=[tlb.hash_api_key(APP_KEY)]),
        ]
    )
    gateway = tlb.Gateway(registry=registry, pools={}, max_body_size=1000)
    async with gateway.admit(info([("x-api-key", APP_KEY)])) as ticket:
        assert ticket.max_body_size == 1000
    async with gateway.admit(info([("x-api-key", KEY)])) as ticket:
        assert ticket.max_body_size == 10
    with pytest.raises(tlb.ContentTooLarge):
        async with gateway.admit(info([("x-api-key", KEY), ("content-length", "11")])):
            pass
    with pytest.raises(tlb.HeadersTooLarge):
        async with gateway.admit(info([("x-api-key", KEY), ("x-pad", "p" * 100)])):
            pass


def test_config_keys_for_edge_policies() -> None:
    """gateway.anonymous, gateway.max_body_size/max_header_size and the tenant keys build the same policies."""
    gateway = tlb.Gateway.from_config(
        {
            "gateway": {
                "anonymous": {"limits": [{"limit": 5, "per": 1.0}], "upstream": "shared"},
                "max_body_size": 1 << 20,
                "max_header_size": 8192,
            },
            "pools": {"shared": {"endpoints": ["http://10.0.0.1:8000"]}},
            "tenants": [
                {
                    "id": "acme",
                    "api_keys": [tlb.hash_api_key(KEY)],
                    "upstream": "shared",
                    "max_body_size": 100,
                }
            ],
        }
    )
    assert gateway.anonymous is not None
    assert gateway.anonymous.id == "anonymous"
    assert gateway.anonymous.limits == (tlb.Rate(5, per=1.0),)
    assert gateway.max_body_size == 1 << 20
    assert gateway.max_header_size == 8192
    assert gateway.registry.get("acme").max_body_size == 100  # type: ignore[union-attr]
    with pytest.raises(tlb.ConfigError) as caught:
        tlb.Gateway.from_config(
            {
                "gateway": {"anonymous": {"api_keys": []}, "max_body_size": 0},
                "pools": {"shared": {"endpoints": ["http://10.0.0.1:8000"]}},
            }
        )
    paths = [p for p, _ in caught.value.errors]
    assert "gateway.anonymous.api_keys" in paths


@pytest.mark.anyio
async def test_anonymous_ipv6_clients_are_limited_per_64() -> None:
    """Rotating addresses inside one IPv6 /64 does not buy a fresh per-client quota."""
    gw = tlb.Gateway.from_config(
        {
            "gateway": {"anonymous": {"limits": [{"limit": 1, "per": 60}]}},
            "pools": {"p": {"endpoints": ["http://127.0.0.1:9"]}},
        }
    )
    admitted = 0
    for i in range(1, 21):
        info = gw.request("GET", "/", [], client=(f"2001:db8:1:2::{i:x}", 40000))
        try:
            async with gw.admit(info, lease=False):
                admitted += 1
        except tlb.RateLimited:
            pass
    assert admitted == 1
    other = gw.request("GET", "/", [], client=("2001:db8:1:3::1", 40000))  # another /64
    async with gw.admit(other, lease=False):
        pass
