"""The Discovery runner with sources of one's own: the protocol, schedule, safety and lifecycle."""

from __future__ import annotations

import random
from collections.abc import Iterable

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tenantlb as tlb

pytestmark = pytest.mark.anyio


class ListSource:
    """Answers whatever the test put in ``answer``; raises ``error`` if set; hangs if told to."""

    def __init__(self, answer: object = ()) -> None:
        self.answer = answer
        self.error: Exception | None = None
        self.hang = False
        self.calls = 0
        self._called: anyio.Event | None = None

    async def resolve(self) -> tlb.DiscoveryResult | Iterable[str | tlb.Endpoint]:
        self.calls += 1
        if self._called is not None:
            self._called.set()
        if self.hang:
            await anyio.sleep_forever()
        if self.error is not None:
            raise self.error
        return self.answer  # type: ignore[return-value]

    async def wait_calls(self, n: int) -> None:
        """Wait until resolve() was called *n* times in all (a liveness bound of 20 s)."""
        with anyio.fail_after(20):
            while self.calls < n:
                self._called = anyio.Event()
                await self._called.wait()


def urls(pool: tlb.Pool) -> set[str]:
    return {e.url for e in pool.endpoints}


def test_source_protocol() -> None:
    """Anything with an async resolve() is a DiscoverySource."""
    assert isinstance(ListSource(), tlb.DiscoverySource)


async def test_own_source_and_ttl_hint() -> None:
    """A source's list is applied; a DiscoveryResult's TTL bounds the next delay."""
    source = ListSource(["http://a:1", tlb.Endpoint("http://b:2", weight=3)])
    pool = tlb.Pool([])
    found = tlb.Discovery(pool, source, interval=60.0, min_interval=2.0, jitter=0.0)
    stats = await found.refresh()
    assert urls(pool) == {"http://a:1", "http://b:2"}
    assert stats.next_delay == 60.0
    assert stats.ttl is None
    source.answer = tlb.DiscoveryResult(["http://a:1"], ttl=10.0)
    assert (await found.refresh()).next_delay == 10.0
    source.answer = tlb.DiscoveryResult(["http://a:1"], ttl=0)
    assert (await found.refresh()).next_delay == 2.0
    assert urls(pool) == {"http://a:1"}


async def test_jitter_is_added_within_bounds() -> None:
    """Each delay gets a random [0, jitter] on top; by default up to 10% of the delay."""
    pool = tlb.Pool([])
    found = tlb.Discovery(pool, ListSource(["http://a:1"]), interval=10.0, rng=random.Random(7))
    delays = [(await found.refresh()).next_delay for _ in range(50)]
    assert all(d is not None and 10.0 <= d <= 11.0 for d in delays)
    assert len(set(delays)) > 1
    found = tlb.Discovery(pool, ListSource(["http://a:1"]), interval=10.0, jitter=3.0)
    delays = [(await found.refresh()).next_delay for _ in range(50)]
    assert all(d is not None and 10.0 <= d <= 13.0 for d in delays)


async def test_failing_source_keeps_pool() -> None:
    """A source that raises never changes the pool; the error is in the stats."""
    source = ListSource(["http://a:1"])
    pool = tlb.Pool([])
    found = tlb.Discovery(pool, source)
    await found.refresh()
    source.error = tlb.DiscoveryError("consul: 500 Internal Server Error")
    stats = await found.refresh()
    assert stats.last_error == "consul: 500 Internal Server Error"
    source.error = ConnectionResetError("peer reset")
    stats = await found.refresh()
    assert stats.last_error == "ConnectionResetError: peer reset"
    assert urls(pool) == {"http://a:1"}
    assert (stats.failures, stats.outages) == (2, 1)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (["http://a:1", "http://A:1/"], "listed 'http://a:1' twice"),
        (["not-a-url"], "endpoint url must look like"),
        ([42], "endpoints[0] must be a URL str or an Endpoint"),
        ("http://a:1", "must be an iterable of URLs"),
        (None, "must be an iterable of URLs"),
    ],
)
async def test_invalid_answer_is_a_failure(answer: object, message: str) -> None:
    """An answer that is not a valid endpoint list fails the round; the pool is kept."""
    pool = tlb.Pool(["http://z:1"])
    stats = await tlb.Discovery(pool, ListSource(answer)).refresh()
    assert stats.last_outcome == "failed"
    assert stats.last_error is not None
    assert message in stats.last_error
    assert urls(pool) == {"http://z:1"}


async def test_hanging_source_times_out() -> None:
    """A source slower than the timeout fails the round instead of stalling discovery."""
    source = ListSource(["http://a:1"])
    source.hang = True
    pool = tlb.Pool(["http://z:1"])
    stats = await tlb.Discovery(pool, source, timeout=0.05).refresh()
    assert stats.last_outcome == "failed"
    assert stats.last_error == "timed out after 0.05s"
    assert urls(pool) == {"http://z:1"}


async def test_lifecycle() -> None:
    """``async with`` fills the pool first, runs in the background, and stops on exit."""
    source = ListSource(["http://a:1"])
    pool = tlb.Pool([])
    found = tlb.Discovery(pool, source, interval=0.01, min_interval=0.01)
    async with found:
        assert urls(pool) == {"http://a:1"}
        assert found.stats().running
        with pytest.raises(RuntimeError, match="already running"):
            await found.__aenter__()
        await source.wait_calls(3)
    calls = source.calls
    assert not found.stats().running
    await anyio.sleep(0.05)
    assert source.calls == calls  # nothing runs after exit
    async with found:  # and it can run again
        assert found.running


async def test_exit_while_a_lookup_hangs() -> None:
    """Leaving ``async with`` cancels a lookup in progress and leaves the pool as it was."""
    source = ListSource(["http://a:1"])
    pool = tlb.Pool([])
    async with tlb.Discovery(pool, source, interval=0.01, min_interval=0.01, timeout=30.0):
        source.hang = True
        await source.wait_calls(2)
    assert urls(pool) == {"http://a:1"}


async def test_events_subscribe_and_unsubscribe() -> None:
    """Subscribers see discovery_failed and discovery_recovered once per outage."""
    source = ListSource(["http://a:1"])
    seen: list[tlb.Event] = []
    found = tlb.Discovery(tlb.Pool([], name="p"), source)
    unsubscribe = found.subscribe(seen.append)
    source.error = RuntimeError("down")
    await found.refresh()
    await found.refresh()
    source.error = None
    await found.refresh()
    assert [(e.kind, e.pool) for e in seen] == [
        ("discovery_failed", "p"),
        ("discovery_recovered", "p"),
    ]
    assert "down" in seen[0].reason
    unsubscribe()
    source.error = RuntimeError("down")
    await found.refresh()
    assert len(seen) == 2


async def test_a_failing_event_handler_does_not_stop_discovery() -> None:
    """An event handler that raises is logged and ignored."""

    def broken(event: tlb.Event) -> None:
        raise ValueError("oops")

    source = ListSource(["http://a:1"])
    source.error = RuntimeError("down")
    found = tlb.Discovery(tlb.Pool([]), source, on_event=broken)
    assert (await found.refresh()).last_outcome == "failed"


def test_stats_are_frozen() -> None:
    """Stats are a frozen snapshot."""
    stats = tlb.Discovery(tlb.Pool([]), ListSource()).stats()
    assert stats.refreshes == 0
    assert stats.last_outcome is None
    with pytest.raises(AttributeError):
        stats.refreshes = 3  # type: ignore[misc]


def test_discovery_result_validates() -> None:
    """DiscoveryResult converts URLs and checks its TTL."""
    result = tlb.DiscoveryResult(["http://a:1"], ttl=5)
    assert result.endpoints == (tlb.Endpoint("http://a:1"),)
    assert result.ttl == 5.0
    with pytest.raises(ValueError, match="ttl must be >= 0"):
        tlb.DiscoveryResult([], ttl=-1)
    with pytest.raises(TypeError, match="ttl must be a number"):
        tlb.DiscoveryResult([], ttl="5")  # type: ignore[arg-type]


class SyncSource:
    def resolve(self) -> list[str]:
        return []


@pytest.mark.parametrize(
    ("source", "kwargs", "error", "match"),
    [
        (SyncSource(), {}, TypeError, "source must have an async resolve"),
        (object(), {}, TypeError, "source must have an async resolve"),
        (ListSource(), {"interval": 0.0}, ValueError, "interval must be > 0"),
        (ListSource(), {"min_interval": 0}, ValueError, "min_interval must be > 0"),
        (ListSource(), {"timeout": -1}, ValueError, "timeout must be > 0"),
        (ListSource(), {"jitter": float("nan")}, ValueError, "jitter must be >= 0"),
        (ListSource(), {"interval": True}, TypeError, "interval must be a number"),
    ],
)
def test_bad_input(
    source: object, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """Bad arguments raise a typed error that names the argument."""
    with pytest.raises(error, match=match):
        tlb.Discovery(tlb.Pool([]), source, **kwargs)  # type: ignore[arg-type]


def test_short_interval_lowers_the_default_min_interval() -> None:
    """min_interval defaults to 1 s, or the interval if that is shorter."""
    assert tlb.Discovery(tlb.Pool([]), ListSource(), interval=0.2).min_interval == 0.2
    assert tlb.Discovery(tlb.Pool([]), ListSource()).min_interval == 1.0


URLS = [f"http://10.0.0.{i}:8000" for i in range(8)]


@settings(max_examples=60, deadline=None)
@given(
    answers=st.lists(
        st.lists(st.sampled_from(URLS), unique=True).map(sorted), min_size=1, max_size=8
    ),
    allow_empty=st.booleans(),
)
def test_pool_follows_any_sequence_of_answers(answers: list[list[str]], allow_empty: bool) -> None:
    """After each round the pool holds the answer (an empty one only if allowed), and an endpoint
    that stays keeps its live state object."""

    async def run() -> None:
        source = ListSource()
        pool = tlb.Pool(["http://seed:1"])
        found = tlb.Discovery(pool, source, allow_empty=allow_empty)
        expected = {"http://seed:1"}
        for answer in answers:
            before = {url: pool.state(url) for url in urls(pool)}
            source.answer = answer
            stats = await found.refresh()
            if answer or allow_empty:
                expected = set(answer)
                assert stats.last_outcome in ("updated", "unchanged")
            else:
                assert stats.last_outcome == "empty"
            assert urls(pool) == expected
            for url in expected & before.keys():
                assert pool.state(url) is before[url]

    anyio.run(run)
