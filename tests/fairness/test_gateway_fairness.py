"""Fair queuing in the gateway: a pool's FairQueue shared by tenants, and its config."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

import tenantlb as tlb

pytestmark = pytest.mark.anyio

KEYS = {name: f"sk-{name}-0123456789abcdef" for name in ("noisy", "quiet", "gold")}


def request(tenant: str) -> tlb.RequestInfo:
    return tlb.RequestInfo("GET", "/v1/chat", [("x-api-key", KEYS[tenant])])


def make_gateway(fair: tlb.FairQueue, **tenant_kwargs: object) -> tlb.Gateway:
    tenants = [
        tlb.Tenant(
            name,
            api_keys=[tlb.hash_api_key(KEYS[name])],
            upstream="shared",
            weight=3.0 if name == "gold" else 1.0,
            **tenant_kwargs,  # type: ignore[arg-type]
        )
        for name in KEYS
    ]
    pool = tlb.Pool(["http://s1:8000", "http://s2:8000"], balancer=tlb.RoundRobin())
    return tlb.Gateway(
        registry=tlb.TenantRegistry(tenants), pools={"shared": pool}, concurrency={"shared": fair}
    )


async def wait_queued(fair: tlb.FairQueue, n: int) -> None:
    for _ in range(10_000):
        if fair.stats().queued >= n:
            return
        await anyio.lowlevel.checkpoint()
    pytest.fail(f"never saw {n} queued: {fair.stats()}")


async def test_tenants_share_a_pool_fairly() -> None:
    """Behind one slot, a quiet tenant's request overtakes a noisy tenant's backlog."""
    fair = tlb.FairQueue(1)
    gateway = make_gateway(fair)
    order: list[str] = []

    async def call(tenant: str) -> None:
        async with gateway.admit(request(tenant)) as ticket:
            order.append(ticket.tenant.id)
            await anyio.lowlevel.checkpoint()
            ticket.record(status=200)

    async with anyio.create_task_group() as tg, gateway.admit(request("noisy")) as held:
        for _ in range(6):
            tg.start_soon(call, "noisy")
        await wait_queued(fair, 6)
        tg.start_soon(call, "quiet")
        await wait_queued(fair, 7)
        stats = gateway.stats().queues["shared"]
        assert (stats.in_flight, stats.queued) == (1, 7)
        held.record(status=200)
    assert order.index("quiet") <= 1
    stats = gateway.stats().queues["shared"]
    assert (stats.in_flight, stats.queued, stats.dispatched) == (0, 0, 8)
    assert gateway.stats().pools["shared"].endpoints[0].in_flight == 0


async def test_a_full_queue_refuses_with_503_and_gives_everything_back() -> None:
    """QueueFull through admit is a 503 with Retry-After; the rate-limit charge and the tenant's
    concurrency slot are given back."""
    fair = tlb.FairQueue(1, queues=1, hand_size=1, queue_length=1)
    gateway = make_gateway(fair, limits=[tlb.Rate(10, per=60.0)], max_concurrency=5)
    async with anyio.create_task_group() as tg, gateway.admit(request("noisy")) as held:
        tg.start_soon(hold, gateway, "noisy")
        await wait_queued(fair, 1)
        with pytest.raises(tlb.QueueFull) as info:
            async with gateway.admit(request("quiet")):
                pytest.fail("must not run")
        assert info.value.status == 503
        assert "Retry-After" in dict(info.value.headers)
        held.record(status=200)
    async with gateway.admit(request("quiet")) as ticket:
        # nine left of ten: the refused request was refunded, this one is charged
        assert ticket.decision is not None
        assert ticket.decision.remaining == 9
        ticket.record(status=200)


async def hold(gateway: tlb.Gateway, tenant: str) -> None:
    async with gateway.admit(request(tenant)) as ticket:
        ticket.record(status=200)


async def test_cancelled_waiters_leave_the_gateway_queue() -> None:
    """Requests cancelled while queued in admit() leave no trace in the queue or the pool."""
    fair = tlb.FairQueue(1)
    gateway = make_gateway(fair, max_concurrency=50)
    async with gateway.admit(request("noisy")) as held:
        with anyio.move_on_after(0.01):
            async with anyio.create_task_group() as tg:
                for tenant in ("noisy", "quiet", "gold") * 5:
                    tg.start_soon(hold, gateway, tenant)
        assert fair.stats().queued == 0
        held.record(status=200)
    stats = fair.stats()
    assert (stats.in_flight, stats.queued, stats.cancelled) == (0, 0, 15)
    async with gateway.admit(request("quiet")) as ticket:
        ticket.record(status=200)


def test_concurrency_must_name_configured_pools() -> None:
    """A fair queue for an unknown pool is a ConfigError at its path; a wrong type a TypeError."""
    registry = tlb.TenantRegistry([])
    pools = {"shared": tlb.Pool(["http://s1:8000"])}
    with pytest.raises(tlb.ConfigError) as info:
        tlb.Gateway(registry=registry, pools=pools, concurrency={"other": tlb.FairQueue(1)})
    assert info.value.path == "concurrency.other"
    with pytest.raises(TypeError, match="must be a FairQueue"):
        tlb.Gateway(registry=registry, pools=pools, concurrency={"shared": 4})  # type: ignore[dict-item]


def config(concurrency: object) -> dict[str, object]:
    return {
        "pools": {"shared": {"endpoints": ["http://s1:8000"], "concurrency": concurrency}},
        "tenants": [
            {
                "id": "acme",
                "upstream": "shared",
                "weight": 2,
                "api_keys": [tlb.hash_api_key("sk-acme-0123456789")],
            }
        ],
    }


def test_config_builds_a_fixed_or_adaptive_fair_queue() -> None:
    """`concurrency = { limit = 64 }` and `{ adaptive = true }` give the pool a FairQueue."""
    gateway = tlb.Gateway.from_config(config({"limit": 64, "timeout": 2.0, "hand_size": 4}))
    assert gateway.stats().queues["shared"].limit == 64
    assert gateway.registry.get("acme").weight == 2  # type: ignore[union-attr]
    adaptive = tlb.Gateway.from_config(config({"adaptive": True}))
    assert adaptive.stats().queues["shared"].limit == 3  # pinned: minRTT is measured first
    tuned = tlb.Gateway.from_config(config({"adaptive": {"min_limit": 5, "max_limit": 50}}))
    assert tuned.stats().queues["shared"].limit == 5


@pytest.mark.parametrize(
    ("concurrency", "path"),
    [
        ({}, "pools.shared.concurrency"),
        ({"limit": 4, "adaptive": True}, "pools.shared.concurrency"),
        ({"limit": 0}, "pools.shared.concurrency.limit"),
        ({"limit": "64"}, "pools.shared.concurrency.limit"),
        ({"limit": 4, "hand_size": 100}, "pools.shared.concurrency.hand_size"),
        ({"limit": 4, "timeout": -1}, "pools.shared.concurrency.timeout"),
        ({"limit": 4, "bogus": 1}, "pools.shared.concurrency.bogus"),
        ({"adaptive": {"min_limit": 0}}, "pools.shared.concurrency.adaptive.min_limit"),
        ({"adaptive": 3}, "pools.shared.concurrency.adaptive"),
        (64, "pools.shared.concurrency"),
    ],
)
def test_config_errors_name_the_field(concurrency: object, path: str) -> None:
    """Every bad concurrency setting is reported at its own path."""
    with pytest.raises(tlb.ConfigError) as info:
        tlb.Gateway.from_config(config(concurrency))
    assert path in [p for p, _ in info.value.errors], info.value.errors
