"""Extension points: registries by name, config naming user classes, field-carrying errors."""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import tenantlb as tlb
from tenantlb._registry import Registry
from tenantlb._validate import FieldError, FieldTypeError, FieldValueError
from tenantlb.balancing import BALANCERS, EndpointState
from tenantlb.config import build_gateway
from tenantlb.ratelimit import ALGORITHMS, GCRA, STORES
from tenantlb.tenants import RESOLVERS

KEY = "sk-acme-0123456789abcdef"


def config(balancer: object = "round_robin", **gateway: object) -> dict[str, Any]:
    return {
        "gateway": gateway,
        "pools": {"shared": {"endpoints": ["http://a:1", "http://b:2"], "balancer": balancer}},
        "tenants": [
            {
                "id": "acme",
                "upstream": "shared",
                "api_keys": [tlb.hash_api_key(KEY)],
                "limits": [{"limit": 2, "per": 60}],
            }
        ],
    }


class Last(tlb.BalancerBase):
    """Always the last candidate (a test strategy)."""

    def __init__(self, *, offset: int = 0) -> None:
        if offset < 0:
            msg = f"offset must be >= 0, got {offset}"
            raise FieldValueError(msg, field="offset")
        self.offset = offset
        self._candidates: Sequence[EndpointState] = ()

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        self._candidates = candidates

    def pick(self, key: bytes | None) -> EndpointState | None:
        return self._candidates[-1 - self.offset] if self._candidates else None

    def clone(self) -> Last:
        return Last(offset=self.offset)


@pytest.fixture
def last() -> Iterator[None]:
    tlb.register_balancer("last", Last)
    yield
    BALANCERS.unregister("last")


# -- the registry itself ---------------------------------------------------------------------------


def test_register_as_call_and_as_decorator() -> None:
    """A factory registers by a call or a decorator and is returned unchanged."""
    registry: Registry[Any] = Registry("widget")
    assert registry.register("a", dict) is dict

    @registry.register("b")
    def make_b() -> str:
        return "b"

    assert registry.get("a") is dict
    assert registry.get("b") is make_b
    assert registry.names() == ["a", "b"]
    assert "a" in registry
    assert list(registry) == ["a", "b"]
    assert len(registry) == 2


def test_a_taken_name_is_refused_unless_replaced() -> None:
    """Registering another factory under a taken name is a ValueError naming the holder."""
    registry: Registry[Any] = Registry("widget")
    registry.register("a", dict)
    registry.register("a", dict)  # the same factory again is harmless
    with pytest.raises(ValueError, match=r"widget 'a' is already registered \(builtins.dict\)"):
        registry.register("a", list)
    registry.register("a", list, replace=True)
    assert registry.get("a") is list


def test_builtin_names_clash_too() -> None:
    """A user balancer cannot silently take a built-in name."""
    with pytest.raises(ValueError, match="balancer 'round_robin' is already registered"):
        tlb.register_balancer("round_robin", Last)
    assert BALANCERS.get("round_robin") is tlb.RoundRobin


def test_unknown_names_list_the_known_ones() -> None:
    """An unknown name is a ValueError listing every registered name, sorted."""
    with pytest.raises(ValueError, match="unknown algorithm 'leaky'; known: fixed_window, gcra, "):
        ALGORITHMS.get("leaky")
    with pytest.raises(TypeError, match="balancer must be a name"):
        BALANCERS.get(3)


@pytest.mark.parametrize(
    ("name", "factory", "error", "message"),
    [
        (3, dict, TypeError, "widget name must be a str, got int"),
        ("", dict, ValueError, "widget name must be a non-empty str"),
        ("x", 42, TypeError, "widget factory must be callable, got int"),
    ],
)
def test_bad_registrations(
    name: object, factory: object, error: type[Exception], message: str
) -> None:
    """Names must be non-empty strings and factories callable."""
    registry: Registry[Any] = Registry("widget")
    with pytest.raises(error, match=message):
        registry.register(name, factory)  # type: ignore[arg-type]


def test_builtin_registries_hold_the_builtin_names() -> None:
    """Each extension point's registry holds the names config files have always used."""
    assert BALANCERS.names() == [
        "bounded_load",
        "least_request",
        "maglev",
        "peak_ewma",
        "rendezvous",
        "ring_hash",
        "round_robin",
        "weighted_random",
    ]
    assert ALGORITHMS.names() == ["fixed_window", "gcra", "sliding_window", "token_bucket"]
    assert RESOLVERS.names() == ["api_key", "bearer", "header", "host", "path"]
    assert STORES.names() == ["memory", "redis"]


# -- config names registered classes ---------------------------------------------------------------


@pytest.mark.usefixtures("last")
def test_config_builds_a_registered_balancer_with_its_settings() -> None:
    """A config file names a user's balancer by its registered name, settings as keywords."""
    gateway = build_gateway(config({"type": "last", "offset": 1}))
    pool = gateway.pools["shared"]
    assert isinstance(pool.balancer, Last)
    assert pool.balancer.offset == 1
    with pool.acquire() as lease:
        assert lease.url == "http://a:1"
        lease.record(status=200)


@pytest.mark.usefixtures("last")
def test_a_registered_factory_error_lands_on_its_field() -> None:
    """A FieldError from a user's factory is reported at that key of the config table."""
    with pytest.raises(tlb.ConfigError) as info:
        build_gateway(config({"type": "last", "offset": -1}))
    assert list(info.value.errors) == [
        ("pools.shared.balancer.offset", "offset must be >= 0, got -1")
    ]


def test_an_unknown_balancer_is_a_config_error_listing_the_names() -> None:
    """An unknown balancer name is reported at its path with the registered names."""
    with pytest.raises(tlb.ConfigError) as info:
        build_gateway(config({"type": "fastest"}))
    [(path, message)] = info.value.errors
    assert path == "pools.shared.balancer.type"
    assert message == (
        "unknown balancer 'fastest'; known: bounded_load, least_request, maglev, peak_ewma,"
        " rendezvous, ring_hash, round_robin, weighted_random"
    )


def test_a_factory_that_makes_no_balancer_is_a_config_error() -> None:
    """A registered factory returning something else is reported, not adopted."""
    tlb.register_balancer("broken", dict)
    try:
        with pytest.raises(tlb.ConfigError, match="the factory made a dict, not a Balancer"):
            build_gateway(config("broken"))
    finally:
        BALANCERS.unregister("broken")


def test_bounded_load_inner_is_a_balancer_spec() -> None:
    """``inner`` of a wrapping balancer is itself a (registered) balancer spec."""
    gateway = build_gateway(config({"type": "bounded_load", "inner": {"type": "ring_hash"}}))
    balancer = gateway.pools["shared"].balancer
    assert isinstance(balancer, tlb.BoundedLoad)
    assert isinstance(balancer.inner, tlb.RingHash)
    with pytest.raises(tlb.ConfigError) as info:
        build_gateway(config({"type": "bounded_load", "inner": "nope"}))
    assert [p for p, _ in info.value.errors] == ["pools.shared.balancer.inner"]


class Doubled(tlb.Algorithm):
    """GCRA's math with twice the burst (a test algorithm)."""

    name = "doubled"
    lua = GCRA.lua

    def step(self, state: Any, rate: tlb.Rate, now: float, cost: float) -> Any:
        return GCRA().step(state, rate, now, cost / 2)

    def capacity(self, rate: tlb.Rate) -> float:
        return 2 * rate.burst

    def refund(self, state: Any, rate: tlb.Rate, now: float, cost: float) -> Any:
        return GCRA().refund(state, rate, now, cost / 2)

    def expires(self, state: Any, rate: tlb.Rate) -> float:
        return GCRA().expires(state, rate)


@pytest.mark.anyio
async def test_gateway_algorithm_by_registered_name_or_instance() -> None:
    """Gateway(algorithm=) and config take a registered name; Gateway also an instance."""
    tlb.register_algorithm("doubled", Doubled)
    try:
        for gateway in (
            build_gateway(config(algorithm="doubled")),
            tlb.Gateway(
                registry=build_gateway(config()).registry,
                pools={"shared": tlb.Pool(["http://a:1"])},
                algorithm=Doubled(),
            ),
        ):
            allowed = 0
            for _ in range(6):
                request = tlb.RequestInfo("GET", "/", [("x-api-key", KEY)])
                try:
                    async with gateway.admit(request) as ticket:
                        ticket.record(status=200)
                        allowed += 1
                except tlb.RateLimited:
                    pass
            assert allowed == 4  # limit 2, doubled
    finally:
        ALGORITHMS.unregister("doubled")


def test_gateway_refuses_an_unknown_algorithm_name() -> None:
    """An unknown algorithm name fails when the gateway is built, listing the known ones."""
    registry = build_gateway(config()).registry
    with pytest.raises(ValueError, match="unknown algorithm 'leaky'; known: "):
        tlb.Gateway(
            registry=registry, pools={"shared": tlb.Pool(["http://a:1"])}, algorithm="leaky"
        )
    with pytest.raises(tlb.ConfigError) as info:
        build_gateway(config(algorithm="leaky"))
    assert [p for p, _ in info.value.errors] == ["gateway.algorithm"]


def test_a_registered_resolver_and_store_are_named_in_config() -> None:
    """Resolvers and stores are looked up in their registries too."""
    made: list[dict[str, Any]] = []

    def memory_store(**kwargs: Any) -> tlb.MemoryStore:
        made.append(kwargs)
        return tlb.MemoryStore(**kwargs)

    tlb.register_store("counted_memory", memory_store)
    tlb.register_resolver("tenant_header", lambda: tlb.HeaderResolver("x-tenant"))
    try:
        gateway = build_gateway(
            config(
                store={"type": "counted_memory", "max_keys": 10},
                resolvers=["tenant_header", {"type": "api_key"}],
            )
        )
        assert made == [{"max_keys": 10}]
        assert isinstance(gateway.store, tlb.MemoryStore)
        request = tlb.RequestInfo("GET", "/", [("x-tenant", "acme")])
        assert gateway.registry.resolve(request).id == "acme"
    finally:
        STORES.unregister("counted_memory")
        RESOLVERS.unregister("tenant_header")


# -- errors that carry their field -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "field"),
    [
        (lambda: tlb.Rate(0), FieldValueError, "limit"),
        (lambda: tlb.Rate(1, per="x"), FieldTypeError, "per"),
        (lambda: tlb.Endpoint("http://a:1", weight=-1), FieldValueError, "weight"),
        (lambda: tlb.SlowStart(window=0), FieldValueError, "window"),
        (lambda: tlb.Pool(panic_threshold=2), FieldValueError, "panic_threshold"),
        (lambda: tlb.LeastRequest(choices=1), FieldValueError, "choices"),
        (lambda: tlb.Maglev(table_size=5), FieldValueError, "table_size"),
        (lambda: tlb.BoundedLoad(balance_factor=1), FieldValueError, "balance_factor"),
        (lambda: tlb.PeakEWMA(decay=0), FieldValueError, "decay"),
        (lambda: tlb.Tenant("a", max_concurrency=0), FieldValueError, "max_concurrency"),
        (lambda: tlb.Tenant("a", enabled="yes"), FieldTypeError, "enabled"),
        (lambda: tlb.OutlierDetector(interval=0), FieldValueError, "interval"),
        (lambda: tlb.HTTPProbe("healthz"), FieldValueError, "path"),
        (lambda: tlb.ConcurrencyLimiter(0), FieldValueError, "max"),
    ],
)
def test_validation_errors_name_their_field(make: Any, error: type[FieldError], field: str) -> None:
    """Bad arguments raise a TypeError/ValueError subclass whose .field names the argument."""
    with pytest.raises(error) as info:
        make()
    assert isinstance(info.value, TypeError if error is FieldTypeError else ValueError)
    assert info.value.field == field
    assert str(info.value).startswith(field)


# -- balancer hooks, stores' capabilities, public module names -------------------------------------


class Counting:
    """A Balancer implementing the whole protocol without BalancerBase."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._candidates: Sequence[EndpointState] = ()

    def bind(self, clock: tlb.Clock) -> None:
        pass

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        self._candidates = candidates

    def pick(self, key: bytes | None) -> EndpointState | None:
        return self._candidates[0] if self._candidates else None

    def observe(self, state: EndpointState, latency: float, failed: bool) -> None:
        self.events.append("observe")

    def acquired(self, state: EndpointState) -> None:
        self.events.append("acquired")

    def released(self, state: EndpointState) -> None:
        self.events.append("released")

    def clone(self) -> Counting:
        return Counting()


def test_balancer_hooks_are_part_of_the_protocol() -> None:
    """acquired/released/observe are called on a protocol balancer, around every lease."""
    balancer = Counting()
    assert isinstance(balancer, tlb.Balancer)
    pool = tlb.Pool(["http://a:1"], balancer)
    with pool.acquire() as lease:
        lease.record(status=200)
    pool.acquire().release()
    assert balancer.events == ["acquired", "released", "observe", "acquired", "released"]


def test_a_balancer_without_the_hooks_is_not_a_balancer() -> None:
    """The hooks are declared by the protocol, so a class lacking them is refused by Pool."""

    class NoHooks:
        def bind(self, clock: tlb.Clock) -> None: ...
        def rebuild(self, candidates: Sequence[EndpointState]) -> None: ...
        def pick(self, key: bytes | None) -> EndpointState | None: ...
        def observe(self, state: EndpointState, latency: float, failed: bool) -> None: ...
        def clone(self) -> NoHooks: ...

    with pytest.raises(TypeError, match="balancer must implement the Balancer protocol"):
        tlb.Pool(["http://a:1"], NoHooks())  # type: ignore[arg-type]


def test_stores_say_how_they_answer() -> None:
    """MemoryStore decides in process; RedisStore needs I/O and answers sync only with a client."""
    import redis
    import redis.asyncio

    memory = tlb.MemoryStore()
    assert memory.in_process
    assert memory.supports_nowait
    async_only = tlb.RedisStore(redis.asyncio.Redis())
    assert not async_only.in_process
    assert not async_only.supports_nowait
    with_sync = tlb.RedisStore(redis.asyncio.Redis(), sync_client=redis.Redis())
    assert with_sync.supports_nowait
    assert not with_sync.in_process


class Remote:
    """A store that answers like a remote one (in_process False) over a MemoryStore."""

    in_process = False
    supports_nowait = False

    def __init__(self) -> None:
        self.inner = tlb.MemoryStore()
        self.sync_calls = 0

    def bind_rates(self, spec: Any) -> Any:
        backend = self.inner.bind_rates(spec)
        outer = self

        class Rates:
            def acquire_nowait(self, key: str, cost: float) -> Any:
                outer.sync_calls += 1
                return backend.acquire_nowait(key, cost)

            async def acquire(self, key: str, cost: float) -> Any:
                return backend.acquire_nowait(key, cost)

            def refund_nowait(self, key: str, cost: float) -> None:
                outer.sync_calls += 1
                backend.refund_nowait(key, cost)

            async def refund(self, key: str, cost: float) -> None:
                backend.refund_nowait(key, cost)

            def peek_nowait(self, key: str, cost: float) -> Any:
                outer.sync_calls += 1
                return backend.peek_nowait(key, cost)

            async def peek(self, key: str, cost: float) -> Any:
                return backend.peek_nowait(key, cost)

        return Rates()

    def bind_concurrency(self, spec: Any) -> Any:
        return self.inner.bind_concurrency(spec)


@pytest.mark.anyio
async def test_gateway_asks_the_store_not_its_class() -> None:
    """A store that is not in process is awaited, whatever its class; none of its sync twins run."""
    store = Remote()
    assert isinstance(store, tlb.Store)
    registry = build_gateway(config()).registry
    gateway = tlb.Gateway(
        registry=registry, pools={"shared": tlb.Pool(["http://a:1"])}, store=store
    )
    request = tlb.RequestInfo("GET", "/", [("x-api-key", KEY)])
    async with gateway.admit(request) as ticket:
        ticket.record(status=200)
    assert ticket.decision is not None
    assert ticket.decision.allowed
    assert store.sync_calls == 0


def test_public_classes_show_the_package_as_their_module() -> None:
    """Public classes say tenantlb.X; value objects still pickle and repr."""
    assert tlb.Pool.__module__ == "tenantlb"
    assert tlb.Admission.__module__ == "tenantlb"
    assert tlb.balancing.PoolSubset.__module__ == "tenantlb.balancing"
    assert repr(tlb.Rate(5, per=2.0)) == "Rate(limit=5, per=2.0, burst=5, name=None)"
    rate = tlb.Rate(5, per=2.0, name="burst")
    assert pickle.loads(pickle.dumps(rate)) == rate
    stats = tlb.Pool(["http://a:1"]).stats()
    assert pickle.loads(pickle.dumps(stats)) == stats


def test_a_store_that_does_not_say_how_it_answers_is_refused() -> None:
    """A store without in_process / supports_nowait is a TypeError naming them, not an AttributeError."""

    class Old:
        def bind_rates(self, spec: Any) -> Any: ...
        def bind_concurrency(self, spec: Any) -> Any: ...

    registry = build_gateway(config()).registry
    with pytest.raises(TypeError, match="in_process, supports_nowait"):
        tlb.Gateway(registry=registry, pools={"shared": tlb.Pool(["http://a:1"])}, store=Old())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("store", "path"),
    [
        (
            {"type": "redis", "url": "redis://127.0.0.1:1", "on_error": "shrug"},
            "gateway.store.on_error",
        ),
        ({"type": "redis", "url": "redis://127.0.0.1:1", "timeout": 0}, "gateway.store.timeout"),
        ({"type": "redis"}, "gateway.store.url"),
        ({"type": "memory", "max_keys": 0}, "gateway.store"),
        ({"type": "postgres"}, "gateway.store.type"),
    ],
)
def test_store_settings_errors_name_their_key(store: dict[str, Any], path: str) -> None:
    """A bad store setting is reported at its key (nothing connects to Redis while validating)."""
    with pytest.raises(tlb.ConfigError) as info:
        build_gateway(config(store=store))
    assert [p for p, _ in info.value.errors] == [path]
