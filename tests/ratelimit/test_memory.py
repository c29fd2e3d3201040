"""RateLimiter on a MemoryStore: algorithms, atomic multi-rate, refunds, bad input, bounds."""

from __future__ import annotations

import sys
import threading
import tracemalloc
from typing import ClassVar

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantlb import MemoryStore, Rate, RateLimiter
from tenantlb.ratelimit import GCRA, Algorithm, FixedWindow, SlidingWindow, Step, TokenBucket
from tenantlb.ratelimit._algorithms import State
from tenantlb.ratelimit._memory_table import SHARD_KEYS
from tenantlb.testing import ManualClock

BUILT_IN: dict[str, type[Algorithm]] = {
    "gcra": GCRA,
    "token_bucket": TokenBucket,
    "sliding_window": SlidingWindow,
    "fixed_window": FixedWindow,
}
# Each algorithm by name (MemoryStore's compiled fast path) and wrapped in a user-defined type
# ("generic-..."), which MemoryStore decides with the generic Algorithm.step path.
ALGORITHMS = [*BUILT_IN, *(f"generic-{name}" for name in BUILT_IN)]
BUCKETS = ["gcra", "token_bucket", "generic-gcra", "generic-token_bucket"]


class Generic(Algorithm):
    """A built-in algorithm behind a user-defined type, so MemoryStore has no fast path for it."""

    name: ClassVar[str] = "generic"
    lua: ClassVar[str] = ""

    def __init__(self, inner: Algorithm) -> None:
        self.inner = inner

    def capacity(self, rate: Rate) -> float:
        return self.inner.capacity(rate)

    def step(self, state: State | None, rate: Rate, now: float, cost: float) -> Step:
        return self.inner.step(state, rate, now, cost)

    def refund(self, state: State | None, rate: Rate, now: float, cost: float) -> State | None:
        return self.inner.refund(state, rate, now, cost)

    def expires(self, state: State, rate: Rate) -> float:
        return self.inner.expires(state, rate)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Generic) and other.inner == self.inner

    def __hash__(self) -> int:
        return hash((Generic, self.inner))


def algo(name: str) -> str | Algorithm:
    """*name* itself, or for ``generic-<name>`` the algorithm wrapped in `Generic`."""
    if name.startswith("generic-"):
        return Generic(BUILT_IN[name.removeprefix("generic-")]())
    return name


def limiter(clock: ManualClock, *rates: Rate, algorithm: str = "gcra") -> RateLimiter:
    return RateLimiter(list(rates), store=MemoryStore(clock), algorithm=algo(algorithm))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_admits_the_allowance_then_denies(clock: ManualClock, algorithm: str) -> None:
    """A fresh key gets exactly its allowance at once, then a denial with a positive retry_after."""
    lim = limiter(clock, Rate(10, per=60), algorithm=algorithm)
    decisions = [lim.acquire_nowait("acme") for _ in range(11)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert decisions[9].remaining == pytest.approx(0, abs=1e-6)
    assert decisions[0].remaining == pytest.approx(9)
    assert 0 < decisions[10].retry_after <= 60
    assert decisions[10].headers()[-1][0] == "Retry-After"


@pytest.mark.parametrize("algorithm", BUCKETS)
def test_bucket_refills_continuously(clock: ManualClock, algorithm: str) -> None:
    """A bucket earns one unit back every per/limit seconds, and retry_after says exactly when."""
    lim = limiter(clock, Rate(10, per=10, burst=2), algorithm=algorithm)
    assert lim.acquire_nowait("k").allowed
    assert lim.acquire_nowait("k").allowed
    denied = lim.acquire_nowait("k")
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(1.0)
    clock.advance(0.999)
    assert not lim.acquire_nowait("k").allowed
    clock.advance(0.001)
    assert lim.acquire_nowait("k").allowed


def test_gcra_reset_after_is_time_to_full_allowance(clock: ManualClock) -> None:
    """reset_after tells when the whole burst is available again."""
    lim = limiter(clock, Rate(10, per=10))
    lim.acquire_nowait("k", cost=4)
    decision = lim.acquire_nowait("k")
    assert decision.reset_after == pytest.approx(5.0)
    assert decision.remaining == pytest.approx(5.0)


def test_fixed_window_resets_at_the_window_edge(clock: ManualClock) -> None:
    """A fixed window starts counting from zero when the next window begins."""
    lim = limiter(clock, Rate(3, per=10), algorithm="fixed_window")
    clock.set(1000.0)  # a window edge
    assert all(lim.acquire_nowait("k").allowed for _ in range(3))
    denied = lim.acquire_nowait("k")
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(10.0)
    clock.advance(10.0)
    assert lim.acquire_nowait("k").allowed


def test_sliding_window_weights_the_previous_window(clock: ManualClock) -> None:
    """Half-way into a window, half of the previous window's count still counts."""
    lim = limiter(clock, Rate(10, per=10), algorithm="sliding_window")
    clock.set(1000.0)
    for _ in range(10):
        assert lim.acquire_nowait("k").allowed
    clock.advance(15.0)  # half-way into the next window: estimate 10 * 0.5 = 5
    admitted = sum(lim.acquire_nowait("k").allowed for _ in range(10))
    assert admitted == 5


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_fractional_costs(clock: ManualClock, algorithm: str) -> None:
    """Costs may be any positive number (tokens, bytes)."""
    lim = limiter(clock, Rate(1000, per=60), algorithm=algorithm)
    assert lim.acquire_nowait("k", cost=999.5).allowed
    assert lim.acquire_nowait("k", cost=0.5).allowed
    assert not lim.acquire_nowait("k", cost=0.25).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_denial_by_one_rate_consumes_nothing(clock: ManualClock, algorithm: str) -> None:
    """A request denied by the hourly rate does not consume the per-second rate."""
    lim = limiter(
        clock, Rate(4, per=1, name="second"), Rate(2, per=3600, name="hourly"), algorithm=algorithm
    )
    clock.set(3600.0)
    assert lim.acquire_nowait("k", 2).allowed  # hourly spent, per-second has 2 left
    for _ in range(10):
        decision = lim.acquire_nowait("k")
        assert not decision.allowed
        assert decision.policy.name == "hourly"
    lim.refund_nowait(
        "k", 2
    )  # hourly back to 2; per-second back to 4 only if the denials took nothing
    decision = lim.acquire_nowait("k", 2)
    assert decision.allowed
    assert decision.policy.name == "hourly"


def test_allowed_decision_names_the_tightest_policy(clock: ManualClock) -> None:
    """When every rate admits, the decision reports the rate with the least remaining."""
    lim = limiter(clock, Rate(100, per=1, name="second"), Rate(50, per=3600, name="hour"))
    decision = lim.acquire_nowait("k")
    assert decision.policy.name == "hour"
    assert decision.remaining == pytest.approx(49)
    assert decision.headers()[0] == ("RateLimit-Policy", '"second";q=100;w=1, "hour";q=50;w=3600')


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_refund_gives_cost_back_but_not_beyond_the_allowance(
    clock: ManualClock, algorithm: str
) -> None:
    """Refunding restores cost for reconciliation, capped at the full allowance."""
    lim = limiter(clock, Rate(10, per=60), algorithm=algorithm)
    assert lim.acquire_nowait("k", cost=10).allowed
    lim.refund_nowait("k", 4)
    assert lim.peek_nowait("k", cost=4).allowed
    assert not lim.peek_nowait("k", cost=5).allowed
    lim.refund_nowait("k", 100)
    assert lim.acquire_nowait("k", cost=10).allowed
    lim.refund_nowait("unknown", 1)  # refunding a key never seen is harmless


def test_peek_consumes_nothing(clock: ManualClock) -> None:
    """peek answers like acquire_nowait without spending."""
    lim = limiter(clock, Rate(1, per=60))
    assert lim.peek_nowait("k").allowed
    assert lim.peek_nowait("k").allowed
    assert lim.acquire_nowait("k").allowed
    assert not lim.peek_nowait("k").allowed


def test_keys_are_independent_and_limiters_with_equal_specs_share(clock: ManualClock) -> None:
    """Each key has its own quota; two limiters with equal rates on one store share it."""
    store = MemoryStore(clock)
    a = RateLimiter(Rate(1, per=60), store=store)
    b = RateLimiter(Rate(1, per=60), store=store)
    other = RateLimiter(Rate(1, per=60), store=store, name="other")
    assert a.acquire_nowait("x").allowed
    assert a.acquire_nowait("y").allowed
    assert not b.acquire_nowait("x").allowed
    assert other.acquire_nowait("x").allowed


@pytest.mark.parametrize("key", ["", 7, None, b"acme"])
def test_bad_keys(clock: ManualClock, key: object) -> None:
    """An empty key is a ValueError, a non-str key a TypeError, on every entry point."""
    lim = limiter(clock, Rate(10))
    error = ValueError if key == "" else TypeError
    with pytest.raises(error, match="key must be"):
        lim.acquire_nowait(key)  # type: ignore[arg-type]
    with pytest.raises(error, match="key must be"):
        lim.peek_nowait(key)  # type: ignore[arg-type]
    with pytest.raises(error, match="key must be"):
        lim.refund_nowait(key, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    ("cost", "error", "message"),
    [
        (0, ValueError, "cost must be > 0 and finite, got 0"),
        (-1, ValueError, "cost must be > 0 and finite, got -1"),
        (float("nan"), ValueError, "cost must be > 0 and finite, got nan"),
        (float("inf"), ValueError, "cost must be > 0 and finite, got inf"),
        (21, ValueError, r"cost must be <= 20 \(the smallest burst of the limiter\), got 21"),
        ("1", TypeError, "cost must be a number, got str"),
    ],
)
def test_bad_costs(
    clock: ManualClock, algorithm: str, cost: object, error: type[Exception], message: str
) -> None:
    """Costs <= 0, not finite, above the smallest capacity or not numbers are refused."""
    lim = limiter(clock, Rate(20, per=1), Rate(100, per=60), algorithm=algorithm)
    with pytest.raises(error, match=message):
        lim.acquire_nowait("k", cost)  # type: ignore[arg-type]
    assert lim.acquire_nowait("k", 20).allowed  # nothing was consumed or corrupted


def test_bad_limiter_arguments() -> None:
    """Empty rates, non-Rate items, unknown algorithms and non-stores are refused."""
    with pytest.raises(ValueError, match="rates must hold at least one Rate"):
        RateLimiter([])
    with pytest.raises(TypeError, match=r"rates\[1\] must be a Rate, got int"):
        RateLimiter([Rate(1), 5])  # type: ignore[list-item]
    with pytest.raises(
        ValueError,
        match="unknown algorithm 'leaky'; known: fixed_window, gcra, sliding_window, token_bucket",
    ):
        RateLimiter(Rate(1), algorithm="leaky")
    with pytest.raises(TypeError, match="store must be a Store"):
        RateLimiter(Rate(1), store={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_keys must be an int"):
        MemoryStore(max_keys=1.5)  # type: ignore[arg-type]


def test_algorithm_objects_are_accepted() -> None:
    """algorithm= takes an Algorithm instance as well as its name."""
    for algorithm in (GCRA(), TokenBucket(), SlidingWindow(), FixedWindow()):
        assert RateLimiter(Rate(1), algorithm=algorithm).algorithm == algorithm


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("max_keys", [SHARD_KEYS, 1_000_000], ids=["one-shard", "sharded"])
def test_idle_keys_are_swept(clock: ManualClock, algorithm: str, max_keys: int) -> None:
    """Keys whose state has fully recovered are dropped lazily, so memory stays bounded.

    In one shard, expired keys make room for new ones at the bound (no live key is evicted);
    spread over a million-key table's shards, an expired key goes when a new key lands in its
    shard: of 1,000 expired keys in n shards, about 1,000 * (1 - 1/n) ** 3000 stay after 3,000
    new keys (~480 at n = 4,096).
    """
    store = MemoryStore(clock, max_keys=max_keys)
    lim = RateLimiter(Rate(10, per=1), store=store, algorithm=algo(algorithm))
    old, fresh = (200, 250) if max_keys == SHARD_KEYS else (1000, 3000)
    for i in range(old):
        lim.acquire_nowait(f"k{i}")
    clock.advance(10.0)
    for i in range(fresh):
        lim.acquire_nowait(f"fresh{i}")
    assert store.stats().evictions == 0
    (table,) = store._tables.values()
    shards = len(table.shards)
    if max_keys == SHARD_KEYS:
        assert shards == 1
        assert store.keys() <= max_keys
    else:
        stay = old * (1 - 1 / shards) ** fresh
        assert store.keys() <= fresh + 1.3 * stay + 20  # the spread of the draw is ~16 keys


def test_a_small_table_holds_one_dict() -> None:
    """A table that never holds more than a shard's share of keys (one key per tenant, say)
    costs one dict, not one per shard of its bound (it was ~140 KiB at max_keys=1,000,000)."""
    store = MemoryStore()
    limiters = [RateLimiter(Rate(i + 1, per=60.0), store=store) for i in range(100)]
    tracemalloc.start()
    try:
        for limiter in limiters:
            assert limiter.acquire_nowait("acme").allowed
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert used / len(limiters) < 16 * 1024
    assert all(len(table.shards) == 1 for table in store._tables.values())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("max_keys", [1, 100])
def test_max_keys_caps_memory(clock: ManualClock, algorithm: str, max_keys: int) -> None:
    """With more live keys than max_keys, the least recently used go and max_keys is never exceeded."""
    store = MemoryStore(clock, max_keys=max_keys)
    lim = RateLimiter(Rate(1, per=3600), store=store, algorithm=algo(algorithm))
    for i in range(1000):
        assert lim.acquire_nowait(f"k{i}").allowed
        assert store.keys() <= max_keys


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.anyio
async def test_1000_concurrent_tasks_get_exactly_the_allowance(
    clock: ManualClock, algorithm: str
) -> None:
    """1000 concurrent tasks on one MemoryStore admit exactly the allowance, no more, no less."""
    lim = limiter(clock, Rate(300, per=60), algorithm=algorithm)
    admitted = 0

    async def one() -> None:
        nonlocal admitted
        await anyio.lowlevel.checkpoint()
        if (await lim.acquire("acme")).allowed:
            admitted += 1

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(one)
    assert admitted == 300


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_threads_get_exactly_the_allowance(clock: ManualClock, algorithm: str) -> None:
    """Eight threads hammering acquire_nowait admit exactly the allowance."""
    lim = limiter(clock, Rate(1000, per=60), algorithm=algorithm)
    counts = [0] * 8

    def worker(i: int) -> None:
        for _ in range(400):
            if lim.acquire_nowait("acme").allowed:
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 1000


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.anyio
async def test_default_cost_above_a_fractional_burst_is_refused(
    clock: ManualClock, algorithm: str
) -> None:
    """The default cost of 1 is refused like any other cost above a burst below 1."""
    lim = limiter(clock, Rate(0.5), algorithm=algorithm)
    message = r"cost must be <= 0.5 \(the smallest burst of the limiter\), got 1"
    with pytest.raises(ValueError, match=message):
        lim.acquire_nowait("k")
    with pytest.raises(ValueError, match=message):
        await lim.acquire("k")
    assert lim.acquire_nowait("k", 0.5).allowed


def test_keys_can_be_counted_while_limiters_bind_in_another_thread() -> None:
    """keys() never fails while other threads bind new limiters to the same store."""
    store = MemoryStore()
    errors: list[BaseException] = []
    done = threading.Event()

    def count() -> None:
        while not done.is_set():
            try:
                store.keys()
            except RuntimeError as exc:  # "dictionary changed size during iteration"
                errors.append(exc)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so the race shows up at once
    counter = threading.Thread(target=count)
    counter.start()
    try:
        for i in range(2000):
            RateLimiter(Rate(1), store=store, name=f"limiter-{i}")
    finally:
        done.set()
        counter.join()
        sys.setswitchinterval(interval)
    assert errors == []


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("count", [1, 2, 3])
def test_built_in_algorithms_take_the_compiled_fast_path(
    clock: ManualClock, algorithm: str, count: int
) -> None:
    """A built-in algorithm installs a compiled acquire_nowait on the limiter; a user-defined one cannot."""
    rates = [Rate(10, per=10.0**i) for i in range(count)]
    lim = limiter(clock, *rates, algorithm=algorithm)
    assert ("acquire_nowait" in vars(lim)) is (algorithm in BUILT_IN)


@pytest.mark.parametrize("algorithm", list(BUILT_IN))
@pytest.mark.parametrize("count", [2, 3])
def test_idle_multi_rate_keys_are_swept(clock: ManualClock, algorithm: str, count: int) -> None:
    """Idle keys of a multi-rate limiter are dropped once every rate has recovered."""
    store = MemoryStore(clock, max_keys=5000)
    rates = [Rate(10, per=float(i + 1)) for i in range(count)]
    lim = RateLimiter(rates, store=store, algorithm=algorithm)
    for i in range(1000):
        lim.acquire_nowait(f"k{i}")
    clock.advance(10.0)
    for i in range(3000):
        lim.acquire_nowait(f"fresh{i}")
    assert store.keys() <= 3000


def _rate(limit: int, per: float, burst_factor: float, name: str) -> Rate:
    return Rate(limit, per=per, burst=max(1, round(limit * burst_factor)), name=name)


_rates = st.lists(
    st.builds(
        _rate,
        limit=st.integers(1, 40),
        per=st.sampled_from([0.5, 1.0, 2.0, 10.0, 60.0, 3600.0]),
        burst_factor=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
        name=st.sampled_from(["a", "b", "c"]),
    ),
    min_size=1,
    max_size=3,
)
# (operation, key, gap before it as a fraction of the shortest per, cost as a fraction of max_cost)
_ops = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "acquire", "acquire", "peek", "refund"]),
        st.sampled_from(["x", "y"]),
        st.one_of(st.just(0.0), st.just(0.5), st.floats(0.0, 1.5, allow_nan=False)),
        st.one_of(st.just(1.0), st.floats(0.01, 1.0, allow_nan=False)),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    algorithm=st.sampled_from(list(BUILT_IN)),
    rates=_rates,
    ops=_ops,
    integral=st.booleans(),
)
def test_fast_path_decides_exactly_as_the_generic_path(
    algorithm: str,
    rates: list[Rate],
    ops: list[tuple[str, str, float, float]],
    integral: bool,
) -> None:
    """Over random rates, arrivals, costs, peeks and refunds, the fast path's decisions are the generic path's."""
    clock = ManualClock(1000.0)
    fast = RateLimiter(rates, store=MemoryStore(clock), algorithm=algorithm)
    generic = RateLimiter(rates, store=MemoryStore(clock), algorithm=algo(f"generic-{algorithm}"))
    assert "acquire_nowait" in vars(fast)
    assert "acquire_nowait" not in vars(generic)
    shortest = min(rate.per for rate in rates)
    for op, key, gap, fraction in ops:
        clock.advance(gap * shortest)
        cost = fraction * fast.max_cost
        if integral:
            cost = max(1.0, float(int(cost)))
        if op == "acquire":
            assert fast.acquire_nowait(key, cost) == generic.acquire_nowait(key, cost)
        elif op == "peek":
            assert fast.peek_nowait(key, cost) == generic.peek_nowait(key, cost)
        else:
            fast.refund_nowait(key, cost)
            generic.refund_nowait(key, cost)
        assert fast.peek_nowait(key, fast.max_cost) == generic.peek_nowait(key, fast.max_cost)


@pytest.mark.parametrize("max_keys", [100, 5000], ids=["one-shard", "sharded"])
@pytest.mark.parametrize("rates", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_an_attackers_new_keys_never_reset_a_victim_still_in_use(
    clock: ManualClock, algorithm: str, rates: int, max_keys: int
) -> None:
    """At max_keys, a flood of new keys evicts the least recently used, never a key still being denied."""
    store = MemoryStore(clock, max_keys=max_keys)
    lim = RateLimiter(
        [Rate(5, per=3600 * (i + 1)) for i in range(rates)], store=store, algorithm=algo(algorithm)
    )
    for _ in range(5):
        assert lim.acquire_nowait("victim").allowed
    flood = 10 * max_keys if max_keys > 100 else 50 * max_keys  # fresh, live keys
    for i in range(flood):
        assert lim.acquire_nowait(f"attacker{i}").allowed
        if i % 50 == 0:
            assert not lim.acquire_nowait("victim").allowed  # still exhausted
    assert store.keys() <= max_keys
    assert store.stats().evictions >= flood - max_keys


@pytest.mark.parametrize("algorithm", ["gcra", "token_bucket", "generic-sliding_window"])
def test_a_big_table_is_kept_in_small_shards_within_the_bound(
    clock: ManualClock, algorithm: str
) -> None:
    """A table that may hold many keys keeps them in dicts of at most SHARD_KEYS (whose resizes are short).

    A shard holds its share of max_keys, so evictions may begin a little before the whole
    table is full: filling exactly max_keys live keys evicts well under 5% of them.
    """
    max_keys = 50_000
    store = MemoryStore(clock, max_keys=max_keys)
    lim = RateLimiter(Rate(5, per=3600), store=store, algorithm=algo(algorithm))
    for i in range(max_keys):
        assert lim.acquire_nowait(f"k{i}").allowed
    early = store.stats().evictions
    assert early < 0.05 * max_keys
    assert store.keys() == max_keys - early
    for i in range(max_keys):
        assert lim.acquire_nowait(f"more{i}").allowed
    assert store.keys() <= max_keys
    (table,) = store._tables.values()
    assert max(len(shard) for shard in table.shards) <= SHARD_KEYS
    assert store.stats().evictions == 2 * max_keys - store.keys()
    for i in range(max_keys - 100, max_keys):  # the most recent keys survived, exhausted or not
        lim.acquire_nowait(f"more{i}", 4)
        assert not lim.acquire_nowait(f"more{i}").allowed


@pytest.mark.parametrize(
    "algorithm", ["gcra", "token_bucket", "generic-gcra", "generic-token_bucket"]
)
def test_expired_keys_are_evicted_before_live_ones(clock: ManualClock, algorithm: str) -> None:
    """At max_keys, expired keys among the least recently used go before a live one."""
    store = MemoryStore(clock, max_keys=10)
    lim = RateLimiter(Rate(10, per=10), store=store, algorithm=algo(algorithm))
    assert lim.acquire_nowait("long", 10).allowed  # recovers fully only after 10 s
    for i in range(9):
        assert lim.acquire_nowait(f"short{i}", 1).allowed  # recovered after 1 s
    clock.advance(2.0)
    for i in range(9):
        assert lim.acquire_nowait(f"new{i}").allowed
    # "long" is the least recently used key, but live: its state was kept, not reset to 10.
    assert lim.peek_nowait("long").remaining == pytest.approx(1.0)  # 2 regained, 1 peeked
    assert store.stats().evictions == 0


def test_evictions_are_counted_and_logged_once(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Each eviction of a live key is counted in stats; only the first is logged."""
    store = MemoryStore(clock, max_keys=10)
    lim = RateLimiter(Rate(1, per=3600), store=store)
    with caplog.at_level("WARNING", logger="tenantlb.ratelimit"):
        for i in range(30):
            lim.acquire_nowait(f"k{i}")
    assert store.stats().evictions == 20
    assert store.stats().keys == 10
    assert [r.getMessage()[:40] for r in caplog.records] == [
        "MemoryStore reached max_keys=10: evictin"
    ]


def test_tables_of_unused_specs_are_dropped_once_their_state_expired(clock: ManualClock) -> None:
    """Limiters made and dropped (hot reloads) leave no table behind once their state expired."""
    store = MemoryStore(clock)
    for i in range(2000):
        RateLimiter(Rate(100 + i, per=1), store=store).acquire_nowait("acme")
        clock.advance(1.0)
    assert store.stats().limiters < 200
