"""Pool and Lease: membership, availability, panic mode, slow start, subsets and lease accounting."""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter

import pytest

import tenantlb as tlb
from tenantlb.testing import ManualClock

URLS = [f"http://e{i}" for i in range(4)]


def rr_pool(urls: list[str] = URLS, **kwargs: object) -> tlb.Pool:
    return tlb.Pool(urls, balancer=tlb.RoundRobin(), **kwargs)  # type: ignore[arg-type]


def spread(pool: tlb.Pool | tlb.balancing.PoolSubset, n: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        with pool.acquire() as lease:
            counts[lease.url] += 1
            lease.record(status=200)
    return counts


# -- membership ---------------------------------------------------------------------------------


def test_empty_pool_raises_no_healthy_endpoint() -> None:
    """Acquiring from an empty pool raises NoHealthyEndpoint naming the pool."""
    pool = tlb.Pool([], balancer=tlb.RoundRobin(), name="api")
    with pytest.raises(tlb.NoHealthyEndpoint, match="'api' has no endpoints"):
        pool.acquire()


def test_duplicate_endpoints_are_rejected() -> None:
    """Two endpoints that normalise to the same URL are an error naming it."""
    with pytest.raises(ValueError, match=r"duplicate endpoint 'http://a:8000'"):
        rr_pool(["http://a:8000", "HTTP://A:8000/"])
    pool = rr_pool(["http://a"])
    with pytest.raises(ValueError, match="duplicate endpoint 'http://a'"):
        pool.add("http://a/")
    assert len(pool) == 1


def test_remove_unknown_url_names_it() -> None:
    """Removing an unknown URL raises EndpointNotFound (a LookupError) naming the URL."""
    pool = rr_pool()
    with pytest.raises(tlb.EndpointNotFound, match="no endpoint 'http://nope' in pool") as info:
        pool.remove("http://nope")
    assert isinstance(info.value, LookupError)
    assert len(pool) == 4


def test_bad_endpoint_types_and_single_url_are_type_errors() -> None:
    """Passing a bare string or a non-URL item is a TypeError, not a pool of characters."""
    with pytest.raises(TypeError, match="not a single one"):
        rr_pool("http://a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"endpoints\[1\] must be a URL str or an Endpoint"):
        rr_pool(["http://a", 42])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("threshold", "error", "message"),
    [
        (-0.1, ValueError, "panic_threshold must be between 0 and 1, got -0.1"),
        (1.5, ValueError, "panic_threshold must be between 0 and 1, got 1.5"),
        ("x", TypeError, "panic_threshold must be a number, got str"),
        (True, TypeError, "panic_threshold must be a number, got bool"),
    ],
)
def test_bad_panic_threshold(threshold: object, error: type[Exception], message: str) -> None:
    """A panic threshold outside [0, 1] is a ValueError, one that is not a number a TypeError."""
    with pytest.raises(error, match=message):
        rr_pool(panic_threshold=threshold)


def test_add_remove_and_membership() -> None:
    """Added endpoints receive traffic; removed ones stop receiving it."""
    pool = rr_pool(["http://a", "http://b"])
    pool.add(tlb.Endpoint("http://c", weight=2))
    assert set(spread(pool, 40)) == {"http://a", "http://b", "http://c"}
    pool.remove("http://a")
    assert "http://a" not in pool
    assert "http://b" in pool
    assert set(spread(pool, 40)) == {"http://b", "http://c"}
    assert [e.url for e in pool.endpoints] == ["http://b", "http://c"]


def test_update_keeps_live_stats_and_applies_the_diff() -> None:
    """update() keeps kept endpoints' counters, adds new ones, removes missing ones."""
    pool = rr_pool(["http://a", "http://b"])
    spread(pool, 10)
    held = pool.acquire()
    pool.update(["http://b", tlb.Endpoint("http://a", weight=3), "http://c"])
    stats = {e.url: e for e in pool.stats().endpoints}
    assert stats["http://a"].requests == 5
    assert stats["http://a"].weight == 3
    assert stats["http://b"].requests == 5
    assert stats["http://c"].requests == 0
    assert sum(e.in_flight for e in stats.values()) == 1
    held.record(status=200)
    pool.update(["http://c"])
    assert [e.url for e in pool.endpoints] == ["http://c"]
    assert pool.stats().in_flight == 0


def test_failed_update_changes_nothing() -> None:
    """An update with a bad entry raises and leaves the pool as it was."""
    pool = rr_pool(["http://a", "http://b"])
    with pytest.raises(ValueError, match="duplicate endpoint"):
        pool.update(["http://c", "http://c"])
    with pytest.raises(ValueError, match="url"):
        pool.update(["http://c", "not a url"])
    assert [e.url for e in pool.endpoints] == ["http://a", "http://b"]


def test_set_weight_changes_the_share() -> None:
    """set_weight() changes an endpoint's share immediately and validates the weight."""
    pool = rr_pool(["http://a", "http://b"])
    pool.set_weight("http://a", 3)
    counts = spread(pool, 400)
    assert counts["http://a"] == 300
    with pytest.raises(ValueError, match="weight must be > 0"):
        pool.set_weight("http://a", 0)
    with pytest.raises(tlb.EndpointNotFound):
        pool.set_weight("http://zz", 1)


# -- availability, panic ------------------------------------------------------------------------


def test_unhealthy_endpoints_get_no_traffic() -> None:
    """An endpoint marked unhealthy is skipped until marked healthy again."""
    pool = rr_pool()
    assert pool.mark_unhealthy("http://e1", "probe failed")
    assert not pool.mark_unhealthy("http://e1")
    assert "http://e1" not in spread(pool, 30)
    assert pool.mark_healthy("http://e1")
    assert "http://e1" in spread(pool, 30)


def test_panic_mode_balances_across_all_when_too_few_are_available() -> None:
    """Below the panic threshold the pool uses every endpoint and says so in stats and events."""
    events: list[tlb.Event] = []
    pool = rr_pool(on_event=events.append)
    pool.mark_unhealthy("http://e0")
    pool.mark_unhealthy("http://e1")  # 2/4 available = 50%: not below the threshold
    assert not pool.stats().panic
    assert set(spread(pool, 20)) == {"http://e2", "http://e3"}
    pool.mark_unhealthy("http://e2")  # 1/4 = 25% < 50%: panic
    stats = pool.stats()
    assert stats.panic
    assert stats.available == 1
    assert set(spread(pool, 40)) == set(URLS)
    assert [e.kind for e in events if e.kind.startswith("panic")] == ["panic_entered"]
    pool.mark_healthy("http://e2")
    assert not pool.panic
    assert [e.kind for e in events if e.kind.startswith("panic")] == [
        "panic_entered",
        "panic_left",
    ]
    assert events[-1].reason == "2/4 endpoints available"


def test_panic_threshold_zero_disables_panic() -> None:
    """With panic_threshold=0 a pool whose endpoints are all down raises NoHealthyEndpoint."""
    pool = rr_pool(["http://a"], panic_threshold=0.0)
    pool.mark_unhealthy("http://a")
    with pytest.raises(tlb.NoHealthyEndpoint, match="no available endpoint"):
        pool.acquire()


def test_ejection_ends_by_itself_after_its_time() -> None:
    """An ejected endpoint returns at the first acquisition after its ejection time."""
    clock = ManualClock()
    events: list[tlb.Event] = []
    pool = rr_pool(clock=clock, on_event=events.append)
    assert pool.eject("http://e0", 30.0, "5 consecutive 5xx")
    assert pool.stats().endpoints[0].ejected
    clock.advance(29.9)
    assert "http://e0" not in spread(pool, 12)
    clock.advance(0.2)
    assert "http://e0" in spread(pool, 12)
    assert [(e.kind, e.url) for e in events] == [
        ("ejected", "http://e0"),
        ("unejected", "http://e0"),
    ]
    with pytest.raises(ValueError, match="duration must be > 0"):
        pool.eject("http://e0", 0)


def test_uneject_ends_an_ejection_early() -> None:
    """uneject() puts an ejected endpoint back at once."""
    pool = rr_pool(clock=ManualClock())
    pool.eject("http://e0", 30.0)
    assert pool.uneject("http://e0")
    assert not pool.uneject("http://e0")
    assert "http://e0" in spread(pool, 8)


# -- slow start ---------------------------------------------------------------------------------


def test_slow_start_follows_envoys_formula() -> None:
    """A new endpoint's weight is weight * max(min%, (max(t,1)/window)^(1/aggression))."""
    clock = ManualClock()
    ramp = tlb.SlowStart(window=60.0, aggression=2.0, min_weight_percent=10.0)
    pool = tlb.Pool(["http://old"], balancer=tlb.RoundRobin(), clock=clock, slow_start=ramp)
    pool.add(tlb.Endpoint("http://new", weight=4))

    def weight() -> float:
        spread(pool, 1)  # a pick applies due weight steps
        return {e.url: e for e in pool.stats().endpoints}["http://new"].effective_weight

    assert weight() == pytest.approx(4 * (1 / 60) ** 0.5)  # max(t, 1): the first second counts
    clock.advance(15.0)
    assert weight() == pytest.approx(4 * (15 / 60) ** 0.5)
    clock.advance(30.0)
    assert weight() == pytest.approx(4 * (45 / 60) ** 0.5)
    clock.advance(15.0)
    assert weight() == 4.0
    assert not pool.stats().endpoints[1].slow_start
    assert pool.stats().endpoints[0].effective_weight == 1.0  # initial endpoints do not ramp
    linear = tlb.SlowStart(window=60.0)
    assert linear.factor(0.0) == 0.1  # (1/60) is below the 10% floor
    assert linear.factor(30.0) == 0.5
    assert linear.factor(61.0) == 1.0


def test_slow_start_ramps_traffic_share() -> None:
    """During the window a new endpoint gets a small share that grows to its full share."""
    clock = ManualClock()
    pool = rr_pool(["http://a", "http://b"], clock=clock, slow_start=tlb.SlowStart(window=100.0))
    pool.add("http://c")
    early = spread(pool, 1000)["http://c"]
    clock.advance(50.0)
    middle = spread(pool, 1000)["http://c"]
    clock.advance(60.0)
    late = spread(pool, 3000)["http://c"]
    assert early < 60  # weight 0.1 of 2.1 -> about 48
    assert 150 < middle < 250  # weight 0.5 of 2.5 -> 200
    assert late == 1000


def test_slow_start_reenters_after_health_returns() -> None:
    """An endpoint returning to health ramps up again."""
    clock = ManualClock()
    pool = rr_pool(clock=clock, slow_start=tlb.SlowStart(window=10.0))
    pool.mark_unhealthy("http://e0")
    clock.advance(5.0)
    pool.mark_healthy("http://e0")
    assert pool.stats().endpoints[0].slow_start
    assert pool.stats().endpoints[0].effective_weight == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window": 0}, "window"),
        ({"window": 10, "aggression": -1}, "aggression"),
        ({"window": 10, "min_weight_percent": 0}, "min_weight_percent"),
        ({"window": 10, "min_weight_percent": 101}, "min_weight_percent"),
    ],
)
def test_slow_start_validates(kwargs: dict[str, float], field: str) -> None:
    """Bad slow-start settings raise ValueError naming the field."""
    with pytest.raises(ValueError, match=f"^{field} must be"):
        tlb.SlowStart(**kwargs)


# -- leases -------------------------------------------------------------------------------------


def test_lease_measures_latency_with_the_pool_clock() -> None:
    """record() measures latency from acquisition with the pool's clock."""
    clock = ManualClock()
    pool = rr_pool(clock=clock)
    with pool.acquire() as lease:
        clock.advance(0.25)
        lease.record(status=200)
    assert lease.latency == 0.25
    assert lease.released


def test_double_record_is_misuse_and_releases_once() -> None:
    """Recording twice raises RuntimeError and the endpoint is released only once."""
    pool = rr_pool()
    lease = pool.acquire()
    lease.record(status=503)
    with pytest.raises(RuntimeError, match="already released"):
        lease.record(status=200)
    lease.release()
    stats = pool.stats()
    assert stats.in_flight == 0
    assert sum(e.requests for e in stats.endpoints) == 1
    assert sum(e.failures for e in stats.endpoints) == 1


def test_exit_without_record_releases_without_an_outcome() -> None:
    """An exception inside the block releases the endpoint but counts no outcome."""
    pool = rr_pool()
    with pytest.raises(ZeroDivisionError), pool.acquire():
        1 / 0  # noqa: B018
    stats = pool.stats()
    assert stats.in_flight == 0
    assert sum(e.requests for e in stats.endpoints) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs status= or error="),
        ({"status": 99}, "status must be an int between 100 and 599"),
        ({"status": 600}, "status must be"),
        ({"status": "200"}, "status must be"),
    ],
)
def test_bad_record_arguments_keep_the_lease_open(kwargs: dict[str, object], match: str) -> None:
    """A bad record() call raises ValueError and the lease can still be recorded."""
    pool = rr_pool()
    lease = pool.acquire()
    with pytest.raises(ValueError, match=match):
        lease.record(**kwargs)  # type: ignore[arg-type]
    lease.record(error=ConnectionError("refused"))
    assert pool.stats().in_flight == 0


def test_failures_are_counted() -> None:
    """5xx, 429 and errors count as failures; 4xx other than 429 do not."""
    pool = rr_pool(["http://a"])
    for status in (200, 404, 429, 500, 503):
        pool.acquire().record(status=status)
    pool.acquire().record(error=TimeoutError())
    [endpoint] = pool.stats().endpoints
    assert (endpoint.requests, endpoint.failures) == (6, 4)


def test_exclude_avoids_urls_and_raises_when_nothing_is_left() -> None:
    """exclude= skips the given URLs; excluding everything raises NoHealthyEndpoint."""
    pool = rr_pool(["http://a", "http://b"])
    for _ in range(5):
        with pool.acquire(exclude={"http://a"}) as lease:
            assert lease.url == "http://b"
    with pytest.raises(tlb.NoHealthyEndpoint, match="all 2 candidates are excluded"):
        pool.acquire(exclude={"http://a", "http://b"})
    assert pool.stats().in_flight == 0


def test_bad_key_type() -> None:
    """A hash key that is not str or bytes raises TypeError."""
    with pytest.raises(TypeError, match="key must be str, bytes or None"):
        rr_pool().acquire(key=42)  # type: ignore[arg-type]


def test_threads_never_leak_in_flight() -> None:
    """Eight threads acquiring and recording concurrently leave every in-flight count at zero."""
    pool = rr_pool([f"http://t{i}" for i in range(8)])
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(2000):
                with pool.acquire() as lease:
                    if i % 3:
                        lease.record(status=200)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = pool.stats()
    assert stats.in_flight == 0
    assert sum(e.requests for e in stats.endpoints) == 8 * sum(1 for i in range(2000) if i % 3)


# -- subsets and events -------------------------------------------------------------------------


def test_subset_balances_within_its_urls_and_shares_state() -> None:
    """A subset picks only its URLs and shares in-flight counts and health with the pool."""
    pool = rr_pool()
    subset = pool.subset(["http://e1", "http://e2", "http://unknown"])
    assert pool.subset(["http://e2", "http://e1", "http://unknown"]) is subset
    assert set(spread(subset, 20)) == {"http://e1", "http://e2"}
    held = subset.acquire()
    assert pool.stats().in_flight == 1
    held.release()
    pool.mark_unhealthy("http://e1")
    assert set(spread(subset, 10)) == {"http://e2"}
    pool.remove("http://e2")
    assert set(spread(subset, 10)) == {"http://e1"}  # 0/1 available: the subset panics
    assert subset.panic
    assert not pool.panic
    assert pool.stats().in_flight == 0


def test_exclude_given_as_one_url_string_is_a_type_error() -> None:
    """Passing exclude as a single URL string raises TypeError instead of matching substrings."""
    pool = rr_pool(["http://e1:80", "http://e1:8000"])
    with pytest.raises(TypeError, match="exclude must be a collection of URLs, not a single str"):
        pool.acquire(exclude="http://e1:8000")
    assert pool.stats().in_flight == 0


@pytest.mark.parametrize(
    ("duration", "error", "match"),
    [
        ("30", TypeError, "duration must be a number, got str"),
        (None, TypeError, "duration must be a number, got NoneType"),
        (0, ValueError, "duration must be > 0 and finite, got 0"),
    ],
)
def test_eject_rejects_a_bad_duration(duration: object, error: type[Exception], match: str) -> None:
    """eject() with a duration that is not a positive number raises a typed error naming it."""
    pool = rr_pool()
    with pytest.raises(error, match=match):
        pool.eject("http://e0", duration)  # type: ignore[arg-type]
    assert not pool.state("http://e0").ejected


def test_subset_held_by_a_caller_follows_health_after_many_other_subsets() -> None:
    """A subset still in use keeps following health changes after thousands of newer subsets."""
    urls = [f"http://e{i}" for i in range(14)]
    pool = rr_pool(urls)
    held = pool.subset(urls[:2])
    for size in (3, 4, 5, 6):  # 6370 distinct subsets: more than the pool caches
        for combo in itertools.combinations(urls, size):
            pool.subset(combo)
    pool.mark_unhealthy(urls[0])
    assert set(spread(held, 10)) == {urls[1]}


def test_failing_event_handler_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """An event handler that raises is logged and never breaks the pool."""

    def broken(event: tlb.Event) -> None:
        raise RuntimeError("observer bug")

    pool = rr_pool()
    unsubscribe = pool.subscribe(broken)
    with caplog.at_level(logging.ERROR, logger="tenantlb"):
        pool.mark_unhealthy("http://e0")
    assert "event handler" in caplog.text
    unsubscribe()
    caplog.clear()
    pool.mark_healthy("http://e0")
    assert caplog.text == ""
