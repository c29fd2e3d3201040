"""Gateway.admit: resolve, authenticate, rate-limit, concurrency, lease, record — end to end."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tenantlb as tlb
from tenantlb.testing import ManualClock

KEYS = {"acme": "sk-acme-0123456789abcdef", "globex": "sk-globex-0123456789abcdef"}


def request(key: str | None = None, path: str = "/v1/chat", **kwargs: object) -> tlb.RequestInfo:
    headers = [] if key is None else [("x-api-key", key)]
    return tlb.RequestInfo("GET", path, headers, **kwargs)  # type: ignore[arg-type]


def make_gateway(
    *,
    clock: ManualClock | None = None,
    limits: list[tlb.Rate] | None = None,
    max_concurrency: int | None = None,
    shard_size: int | None = None,
    store: object = None,
    **kwargs: object,
) -> tlb.Gateway:
    clock = clock or ManualClock()
    tenants = [
        tlb.Tenant(
            "acme",
            api_keys=[tlb.hash_api_key(KEYS["acme"])],
            upstream="shared",
            routes={"/v1/embeddings": "gpu"},
            limits=limits or [],
            max_concurrency=max_concurrency,
            shard_size=shard_size,
        ),
        tlb.Tenant(
            "globex",
            api_keys=[tlb.hash_api_key(KEYS["globex"])],
            upstream="shared",
            limits=limits or [],
            max_concurrency=max_concurrency,
        ),
        tlb.Tenant(
            "initech",
            api_keys=[tlb.hash_api_key("sk-initech-0123456789ab")],
            upstream="shared",
            enabled=False,
        ),
    ]
    pools = {
        "shared": tlb.Pool(
            [f"http://s{i}:8000" for i in range(8)],
            balancer=tlb.RoundRobin(),
            name="shared",
            clock=clock,
        ),
        "gpu": tlb.Pool(["http://gpu:9000"], balancer=tlb.RoundRobin(), name="gpu", clock=clock),
    }
    if store is None:
        store = tlb.MemoryStore(clock=clock)
    return tlb.Gateway(
        registry=tlb.TenantRegistry(tenants),
        pools=pools,
        store=store,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.anyio
async def test_admits_and_routes_to_the_tenants_upstream() -> None:
    """A valid key is admitted, leased an endpoint of its upstream, and the outcome recorded."""
    gateway = make_gateway()
    async with gateway.admit(request(KEYS["acme"])) as ticket:
        assert ticket.tenant.id == "acme"
        assert ticket.upstream == "shared"
        assert ticket.endpoint.url.startswith("http://s")
        ticket.record(status=200)
    async with gateway.admit(request(KEYS["acme"], "/v1/embeddings/x")) as ticket:
        assert ticket.endpoint.url == "http://gpu:9000"
    stats = gateway.stats()
    assert stats.tenants == 3
    assert sum(e.requests for e in stats.pools["shared"].endpoints) == 1
    assert stats.pools["shared"].in_flight == 0
    assert stats.pools["gpu"].in_flight == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "error", "status"),
    [
        ([], tlb.Unauthenticated, 401),
        ([("x-api-key", "sk-wrong-0123456789abcdef")], tlb.Unauthenticated, 401),
        ([("authorization", "Bearer sk-wrong-0123456789")], tlb.Unauthenticated, 401),
        ([("x-api-key", "sk-initech-0123456789ab")], tlb.Forbidden, 403),
        ([("x-api-key", "k" * 10_000)], tlb.Unauthenticated, 401),
        ([("x-api-key", "sk-acme\r\nx-admin: 1")], tlb.Unauthenticated, 401),
        ([("x-api-key", "sk-ácme-0123456789abcdef")], tlb.Unauthenticated, 401),
    ],
)
async def test_refusals_are_typed_and_consume_nothing(
    headers: list[tuple[str, str]], error: type[tlb.RequestRejected], status: int
) -> None:
    """Bad credentials give the right typed error and status, and no endpoint is leased."""
    gateway = make_gateway()
    with pytest.raises(error) as info:
        async with gateway.admit(tlb.RequestInfo("GET", "/v1/chat", headers)):
            pytest.fail("admitted")
    assert info.value.status == status
    for _name, value in headers:
        if len(value) > 8:
            assert value not in str(info.value)
    assert gateway.stats().pools["shared"].in_flight == 0


@pytest.mark.anyio
async def test_bearer_token_is_accepted() -> None:
    """`Authorization: Bearer <key>` authenticates like x-api-key."""
    gateway = make_gateway()
    info = tlb.RequestInfo("GET", "/", [("Authorization", f"Bearer {KEYS['globex']}")])
    async with gateway.admit(info) as ticket:
        assert ticket.tenant.id == "globex"


@pytest.mark.anyio
async def test_rate_limit_denial_carries_headers_and_refund_on_later_refusal() -> None:
    """Over the limit, RateLimited carries the decision and Retry-After; time restores the quota."""
    clock = ManualClock()
    gateway = make_gateway(clock=clock, limits=[tlb.Rate(2, per=1.0)])
    for _ in range(2):
        async with gateway.admit(request(KEYS["acme"])) as ticket:
            names = {name.lower() for name, _ in ticket.headers}
            assert {"ratelimit", "ratelimit-policy"} <= names
    with pytest.raises(tlb.RateLimited) as info:
        async with gateway.admit(request(KEYS["acme"])):
            pytest.fail("admitted")
    assert info.value.status == 429
    assert not info.value.decision.allowed
    assert ("Retry-After", "1") in info.value.headers
    # another tenant has its own quota
    async with gateway.admit(request(KEYS["globex"])):
        pass
    clock.advance(1.0)
    async with gateway.admit(request(KEYS["acme"])):
        pass


@pytest.mark.anyio
async def test_concurrency_cap_refuses_and_refunds_the_rate() -> None:
    """Past max_concurrency the request gets OverCapacity and its rate-limit charge back."""
    gateway = make_gateway(limits=[tlb.Rate(3, per=60.0)], max_concurrency=2)
    async with gateway.admit(request(KEYS["acme"])), gateway.admit(request(KEYS["acme"])):
        with pytest.raises(tlb.OverCapacity) as info:
            async with gateway.admit(request(KEYS["acme"])):
                pytest.fail("admitted")
        assert info.value.status == 503
    # the refused request consumed no quota: a third request still fits in the 3/min allowance
    async with gateway.admit(request(KEYS["acme"])):
        pass
    with pytest.raises(tlb.RateLimited):
        async with gateway.admit(request(KEYS["acme"])):
            pass


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("cost", "error"), [(0, ValueError), (-1, ValueError), (11, ValueError), ("1", TypeError)]
)
async def test_bad_cost_is_refused_and_charges_nothing(
    cost: object, error: type[Exception]
) -> None:
    """A cost <= 0, above the burst or not a number raises a typed error and consumes no quota."""
    gateway = make_gateway(limits=[tlb.Rate(10, per=3600)], max_concurrency=1)
    with pytest.raises(error, match="cost"):
        async with gateway.admit(request(KEYS["acme"]), cost=cost):  # type: ignore[arg-type]
            pytest.fail("admitted")
    async with gateway.admit(request(KEYS["acme"]), cost=10) as ticket:  # the whole allowance
        assert ticket.decision is not None
        assert ticket.decision.allowed
    assert gateway.stats().pools["shared"].in_flight == 0


@pytest.mark.anyio
async def test_cancellation_releases_lease_and_slot() -> None:
    """A request cancelled mid-flight frees its lease and concurrency slot and counts no outcome."""
    gateway = make_gateway(max_concurrency=1)
    with anyio.move_on_after(0.01):
        async with gateway.admit(request(KEYS["acme"])):
            await anyio.sleep_forever()
    stats = gateway.stats().pools["shared"]
    assert stats.in_flight == 0
    assert sum(e.requests for e in stats.endpoints) == 0
    async with gateway.admit(request(KEYS["acme"])):  # the slot is free again
        pass


def test_inline_admission_is_entered_and_left_without_coroutines() -> None:
    """With an in-process store an admission is `inline`: enter_nowait/exit_nowait admit, lease,
    record a failure and give the slot back like ``async with``; misuse is a RuntimeError."""
    gateway = make_gateway(max_concurrency=1)
    admission = gateway.admit(request(KEYS["acme"]))
    assert admission.inline
    ticket = admission.enter_nowait()
    assert ticket.tenant.id == "acme"
    assert ticket.endpoint is not None
    with pytest.raises(RuntimeError, match="not entered yet"):
        admission.enter_nowait()
    with pytest.raises(tlb.OverCapacity):
        gateway.admit(request(KEYS["acme"])).enter_nowait()
    admission.exit_nowait(ConnectionError("refused"))
    stats = gateway.stats().pools["shared"]
    assert (stats.in_flight, sum(e.failures for e in stats.endpoints)) == (0, 1)
    gateway.admit(request(KEYS["acme"])).enter_nowait()  # the slot is free again
    gateway.admit(request(KEYS["globex"])).exit_nowait()  # never entered: nothing to leave


@pytest.mark.anyio
async def test_an_admission_that_can_wait_is_not_inline(redis_url: str) -> None:
    """A Redis store must be awaited: the admission says so, and refuses the sync path."""
    async with redis_stores(redis_url, 1) as (store,):
        gateway = make_gateway(store=store, max_concurrency=1)
        admission = gateway.admit(request(KEYS["acme"]))
        assert not admission.inline
        with pytest.raises(RuntimeError, match="inline"):
            admission.enter_nowait()
        async with admission as ticket:
            with pytest.raises(RuntimeError, match="inline"):
                admission.exit_nowait()
            assert ticket.tenant.id == "acme"


@pytest.mark.anyio
async def test_exception_in_body_is_recorded_as_a_failure() -> None:
    """An exception raised while sending is recorded as the endpoint's failure."""
    gateway = make_gateway()
    with pytest.raises(ConnectionError):
        async with gateway.admit(request(KEYS["acme"])):
            raise ConnectionError("refused")
    stats = gateway.stats().pools["shared"]
    assert sum(e.failures for e in stats.endpoints) == 1
    assert stats.in_flight == 0


@pytest.mark.anyio
async def test_reroute_tries_other_endpoints_then_gives_up() -> None:
    """reroute() leases a new endpoint each time and raises when all were tried."""
    gateway = make_gateway()
    seen = []
    async with gateway.admit(request(KEYS["acme"])) as ticket:
        seen.append(ticket.endpoint.url)
        seen.extend(ticket.reroute(ConnectionError("refused")).url for _ in range(7))
        with pytest.raises(tlb.NoHealthyEndpoint, match="8 attempt"):
            ticket.reroute(ConnectionError("refused"))
        assert ticket.attempts == 8
    assert len(set(seen)) == 8
    stats = gateway.stats().pools["shared"]
    assert stats.in_flight == 0
    assert sum(e.failures for e in stats.endpoints) == 8


@pytest.mark.anyio
async def test_shuffle_shard_confines_a_tenant_to_its_shard() -> None:
    """With shard_size=2 a tenant only ever reaches the same two endpoints."""
    gateway = make_gateway(shard_size=2)
    urls: Counter[str] = Counter()
    for _ in range(40):
        async with gateway.admit(request(KEYS["acme"])) as ticket:
            urls[ticket.endpoint.url] += 1
    assert len(urls) == 2
    assert set(urls.values()) == {20}
    expected = tlb.shuffle_shard("acme", [f"http://s{i}:8000" for i in range(8)], 2)
    assert set(urls) == set(expected)


@pytest.mark.anyio
async def test_hash_on_client_ip_is_sticky() -> None:
    """hash_on='client_ip' sends one client to one endpoint with a hashing balancer."""
    clock = ManualClock()
    tenants = [tlb.Tenant("acme", api_keys=[tlb.hash_api_key(KEYS["acme"])], upstream="p")]
    pool = tlb.Pool([f"http://h{i}" for i in range(10)], balancer=tlb.Maglev(), clock=clock)
    gateway = tlb.Gateway(
        registry=tlb.TenantRegistry(tenants),
        pools={"p": pool},
        hash_on="client_ip",
        trusted_proxies=["10.0.0.0/8"],
    )
    for ip in ("203.0.113.9", "198.51.100.7"):
        urls = set()
        for port in range(10):
            info = gateway.request(
                "GET", "/", [("x-api-key", KEYS["acme"])], client=(ip, 1000 + port)
            )
            async with gateway.admit(info) as ticket:
                urls.add(ticket.endpoint.url)
        assert len(urls) == 1
    # through a trusted proxy the forwarded client decides, not the proxy
    direct = gateway.request("GET", "/", [("x-api-key", KEYS["acme"])], client=("203.0.113.9", 1))
    proxied = gateway.request(
        "GET",
        "/",
        [("x-api-key", KEYS["acme"]), ("x-forwarded-for", "203.0.113.9")],
        client=("10.1.2.3", 1),
    )
    async with gateway.admit(direct) as a, gateway.admit(proxied) as b:
        assert a.endpoint == b.endpoint


def test_unknown_upstream_is_a_config_error() -> None:
    """A tenant naming a pool the gateway does not have is reported with its path."""
    tenants = [
        tlb.Tenant("acme", upstream="nope"),
        tlb.Tenant("b", upstream="shared", routes={"/x": "gone"}),
    ]
    with pytest.raises(tlb.ConfigError) as info:
        tlb.Gateway(registry=tlb.TenantRegistry(tenants), pools={"shared": tlb.Pool(["http://a"])})
    assert [p for p, _ in info.value.errors] == ["tenants[0].upstream", "tenants[1].upstream"]
    assert "'gone'" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pools": {"p": "http://a"}}, TypeError, "pools"),
        ({"hash_on": "cookie"}, ValueError, "hash_on"),
        ({"algorithm": "leaky"}, ValueError, "leaky"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, ValueError, r"trusted_proxies\[0\]"),
    ],
)
def test_bad_gateway_arguments(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """Bad constructor arguments raise a typed error naming the argument."""
    args: dict[str, object] = {
        "registry": tlb.TenantRegistry([]),
        "pools": {"p": tlb.Pool(["http://a"])},
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        tlb.Gateway(**args)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_hot_reload_under_load_leaks_nothing() -> None:
    """200 concurrent admissions while the registry is replaced 50 times: only legitimate outcomes."""
    gateway = make_gateway(limits=[tlb.Rate(1_000_000, per=1.0)], max_concurrency=50)
    registry = gateway.registry
    tenants = list(registry)
    outcomes: Counter[str] = Counter()

    async def client(i: int) -> None:
        key = KEYS["acme" if i % 2 else "globex"]
        for _ in range(5):
            try:
                async with gateway.admit(request(key)) as ticket:
                    await anyio.lowlevel.checkpoint()
                    ticket.record(status=200)
                    outcomes["ok"] += 1
            except tlb.OverCapacity:
                outcomes["over"] += 1

    async def reloader() -> None:
        for n in range(50):
            registry.replace([attrs.evolve(t, display_name=f"v{n}") for t in tenants])
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reloader)
        for i in range(200):
            tg.start_soon(client, i)
    assert outcomes["ok"] + outcomes["over"] == 1000
    assert outcomes["ok"] > 0
    assert gateway.stats().pools["shared"].in_flight == 0
    slots = gateway._quotas.slots(50)
    assert await slots.in_use("acme") == 0
    assert await slots.in_use("globex") == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n_tenants=st.integers(1, 6),
    n_pools=st.integers(1, 3),
)
def test_isolation_property(data: st.DataObject, n_tenants: int, n_pools: int) -> None:
    """A ticket's endpoint always belongs to the tenant's own upstream and shard, and quotas are per tenant."""
    pool_urls = {
        f"p{j}": [f"http://p{j}-e{i}" for i in range(data.draw(st.integers(1, 6)))]
        for j in range(n_pools)
    }
    tenants = []
    for t in range(n_tenants):
        upstream = data.draw(st.sampled_from(sorted(pool_urls)))
        k = data.draw(st.none() | st.integers(1, 4))
        limit = data.draw(st.integers(1, 5))
        tenants.append(
            tlb.Tenant(
                f"t{t}",
                api_keys=[tlb.hash_api_key(f"sk-key-{t}-0123456789")],
                upstream=upstream,
                shard_size=k,
                limits=[tlb.Rate(limit, per=3600)],
            )
        )
    pools = {
        name: tlb.Pool(urls, balancer=tlb.RoundRobin(), name=name)
        for name, urls in pool_urls.items()
    }
    gateway = tlb.Gateway(registry=tlb.TenantRegistry(tenants), pools=pools)
    admitted: Counter[str] = Counter()
    order = data.draw(st.lists(st.integers(0, n_tenants - 1), max_size=40))

    async def run() -> None:
        for t in order:
            tenant = tenants[t]
            try:
                async with gateway.admit(request(f"sk-key-{t}-0123456789")) as ticket:
                    assert ticket.tenant.id == tenant.id
                    assert ticket.upstream == tenant.upstream
                    urls = pool_urls[tenant.upstream]
                    allowed = (
                        urls
                        if tenant.shard_size is None or tenant.shard_size >= len(urls)
                        else tlb.shuffle_shard(tenant.id, urls, tenant.shard_size)
                    )
                    assert ticket.endpoint.url in allowed
                    admitted[tenant.id] += 1
            except tlb.RateLimited:
                assert admitted[tenant.id] == tenant.limits[0].limit

    anyio.run(run)
    for t, tenant in enumerate(tenants):
        assert admitted[tenant.id] == min(order.count(t), int(tenant.limits[0].limit))


@contextlib.asynccontextmanager
async def redis_stores(url: str, n: int, **kwargs: object) -> AsyncIterator[list[tlb.RedisStore]]:
    """*n* stores on their own clients, as *n* processes would have; closed afterwards."""
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    stores = [
        tlb.RedisStore(
            redis.asyncio.Redis.from_url(url, retry=AsyncRetry(NoBackoff(), 0), **options),
            sync_client=redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options),
            **kwargs,  # type: ignore[arg-type]
        )
        for _ in range(n)
    ]
    try:
        yield stores
    finally:
        for store in stores:
            await store.aclose()


@pytest.mark.anyio
async def test_two_gateways_share_one_quota_through_redis(redis_url: str) -> None:
    """Two gateways (as two processes would) on one Redis admit the tenant's allowance once, not twice."""
    async with redis_stores(redis_url, 2) as stores:
        gateways = [
            make_gateway(limits=[tlb.Rate(10, per=3600)], max_concurrency=3, store=store)
            for store in stores
        ]
        outcomes: Counter[str] = Counter()
        for i in range(30):
            try:
                async with gateways[i % 2].admit(request(KEYS["acme"])) as ticket:
                    ticket.record(status=200)
                    outcomes["ok"] += 1
            except tlb.RateLimited as exc:
                outcomes[
                    "limited" if exc.decision.retry_after > 0 else "limited without retry-after"
                ] += 1
    assert outcomes == {"ok": 10, "limited": 20}


@pytest.mark.anyio
async def test_redis_concurrency_slots_are_shared_and_released(redis_url: str) -> None:
    """max_concurrency holds across gateways on one Redis, and cancelled requests free their slot."""
    async with redis_stores(redis_url, 2) as stores:
        a, b = (make_gateway(max_concurrency=2, store=store) for store in stores)
        async with a.admit(request(KEYS["acme"])), b.admit(request(KEYS["acme"])):
            with pytest.raises(tlb.OverCapacity):
                async with a.admit(request(KEYS["acme"])):
                    pytest.fail("admitted")
        with anyio.move_on_after(0.05):
            async with b.admit(request(KEYS["acme"])), a.admit(request(KEYS["acme"])):
                await anyio.sleep_forever()
        async with a.admit(request(KEYS["acme"])), b.admit(request(KEYS["acme"])):
            pass


@pytest.mark.anyio
async def test_redis_outage_follows_the_store_policy(own_redis: Any) -> None:
    """With Redis gone, fail_closed raises StoreUnavailable and fail_open admits; both recover."""
    server = own_redis
    async with (
        redis_stores(server.url, 1) as (closed_store,),
        redis_stores(server.url, 1, on_error="fail_open") as (open_store,),
    ):
        closed = make_gateway(limits=[tlb.Rate(100, per=1.0)], store=closed_store)
        opened = make_gateway(limits=[tlb.Rate(100, per=1.0)], store=open_store)
        async with closed.admit(request(KEYS["acme"])):
            pass
        server.stop()
        with pytest.raises(tlb.StoreUnavailable):
            async with closed.admit(request(KEYS["acme"])):
                pytest.fail("admitted")
        async with opened.admit(request(KEYS["acme"])) as ticket:
            ticket.record(status=200)
        assert closed.stats().pools["shared"].in_flight == 0
        server.start()
        async with closed.admit(request(KEYS["acme"])):
            pass


@pytest.mark.anyio
async def test_config_gateway_closes_the_store_it_built(redis_url: str) -> None:
    """A gateway from config closes its Redis clients when its `async with` block ends."""
    config = {
        "gateway": {"store": {"type": "redis", "url": redis_url}},
        "pools": {"shared": {"endpoints": ["http://a"]}},
        "tenants": [
            {
                "id": "acme",
                "api_keys": [tlb.hash_api_key(KEYS["acme"])],
                "upstream": "shared",
                "limits": [{"limit": 5}],
            }
        ],
    }
    async with (
        tlb.Gateway.from_config(config) as gateway,
        gateway.admit(request(KEYS["acme"])) as ticket,
    ):
        assert ticket.decision is not None
        assert ticket.decision.remaining == pytest.approx(4, abs=0.01)
