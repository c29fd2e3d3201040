"""OutlierDetector: Envoy's consecutive-failure and failure-percentage ejection, driven by a manual clock."""

from __future__ import annotations

import random
import threading

import pytest

import tenantlb as tlb
from tenantlb.health import OutlierDetector
from tenantlb.testing import ManualClock


def make_pool(
    n: int, clock: ManualClock, detector: OutlierDetector, **kwargs: object
) -> tuple[tlb.Pool, list[tlb.Event]]:
    events: list[tlb.Event] = []
    pool = tlb.Pool(
        [f"http://10.0.0.{i}:8000" for i in range(n)],
        balancer=tlb.RoundRobin(),
        clock=clock,
        outlier_detector=detector,
        on_event=events.append,
        **kwargs,  # type: ignore[arg-type]
    )
    return pool, events


def record_on(
    pool: tlb.Pool, url: str, status: int | None = None, error: BaseException | None = None
) -> None:
    """Record one outcome on *url* by acquiring until the balancer hands it out."""
    others = [e.url for e in pool.endpoints if e.url != url]
    with pool.acquire(exclude=others) as lease:
        assert lease.url == url
        lease.record(status=status, error=error)


def ejected(pool: tlb.Pool) -> set[str]:
    return {e.url for e in pool.stats().endpoints if e.ejected}


URL0 = "http://10.0.0.0:8000"


def test_ejects_after_exactly_five_consecutive_5xx(clock: ManualClock) -> None:
    """Four 5xx in a row leave the endpoint in; the fifth ejects it."""
    pool, events = make_pool(10, clock, OutlierDetector(max_ejection_percent=100))
    for _ in range(4):
        record_on(pool, URL0, status=500)
    assert ejected(pool) == set()
    record_on(pool, URL0, status=500)
    assert ejected(pool) == {URL0}
    (event,) = [e for e in events if e.kind == "ejected"]
    assert event.url == URL0
    assert "5 consecutive 5xx" in event.reason


def test_success_breaks_the_run(clock: ManualClock) -> None:
    """A success between failures resets the consecutive count."""
    pool, _ = make_pool(10, clock, OutlierDetector())
    for _ in range(3):
        for _ in range(4):
            record_on(pool, URL0, status=503 if _ % 2 else 500)
        record_on(pool, URL0, status=200)
    assert ejected(pool) == set()


def test_gateway_failures_and_errors_count_as_gateway_run(clock: ManualClock) -> None:
    """502/503/504 and connection errors form a gateway-failure run; another 5xx breaks it."""
    detector = OutlierDetector(consecutive_5xx=None, consecutive_gateway_failure=3)
    pool, events = make_pool(10, clock, detector)
    record_on(pool, URL0, status=502)
    record_on(pool, URL0, status=500)  # not a gateway error: the run starts over
    record_on(pool, URL0, status=503)
    record_on(pool, URL0, error=ConnectionRefusedError())
    assert ejected(pool) == set()
    record_on(pool, URL0, status=504)
    assert ejected(pool) == {URL0}
    assert "3 consecutive gateway failures" in events[-1].reason


def test_split_mode_counts_local_origin_errors_separately(clock: ManualClock) -> None:
    """With split errors, connection errors eject on their own run and a response breaks it."""
    detector = OutlierDetector(
        consecutive_5xx=2,
        consecutive_local_origin_failure=3,
        split_external_local_origin_errors=True,
    )
    pool, _ = make_pool(10, clock, detector)
    record_on(pool, URL0, error=OSError("reset"))
    record_on(pool, URL0, error=OSError("reset"))
    record_on(pool, URL0, status=404)  # the connection worked
    record_on(pool, URL0, error=OSError("reset"))
    record_on(pool, URL0, error=OSError("reset"))
    assert ejected(pool) == set()  # errors do not count as 5xx in split mode
    record_on(pool, URL0, error=OSError("reset"))
    assert ejected(pool) == {URL0}
    assert detector.stats().endpoints[0].times_ejected == 1


def test_ejected_endpoint_returns_after_ejection_time(clock: ManualClock) -> None:
    """The endpoint is back in rotation once base_ejection_time has passed."""
    pool, events = make_pool(10, clock, OutlierDetector(base_ejection_time=30.0))
    for _ in range(5):
        record_on(pool, URL0, status=500)
    with pytest.raises(tlb.NoHealthyEndpoint):
        record_on(pool, URL0, status=200)
    clock.advance(29.9)
    with pytest.raises(tlb.NoHealthyEndpoint):
        record_on(pool, URL0, status=200)
    clock.advance(0.1)
    record_on(pool, URL0, status=200)
    assert events[-1].kind == "unejected"
    assert ejected(pool) == set()


def test_ejection_time_grows_with_times_ejected_and_is_capped(clock: ManualClock) -> None:
    """Ejection lasts base x times ejected, capped at max_ejection_time."""
    detector = OutlierDetector(base_ejection_time=10.0, max_ejection_time=25.0, interval=1000.0)
    pool, _ = make_pool(10, clock, detector)
    durations = []
    for _ in range(4):
        for _ in range(5):
            record_on(pool, URL0, status=500)
        until = detector.stats().endpoints[0].ejected_until
        assert until is not None
        durations.append(until - clock())
        clock.advance(durations[-1])
    assert durations == [10.0, 20.0, 25.0, 25.0]


def test_multiplier_decays_per_interval_while_behaving(clock: ManualClock) -> None:
    """Each interval spent back in rotation takes one off the times-ejected multiplier."""
    detector = OutlierDetector(base_ejection_time=10.0, interval=5.0)
    pool, _ = make_pool(10, clock, detector)
    for _ in range(3):
        for _ in range(5):
            record_on(pool, URL0, status=500)
        clock.advance(100.0)  # ejections were 10, 20, 30 s; ends long before the next round
    # After the third ejection ended the host behaved for many intervals: multiplier decayed to 0.
    assert detector.stats().endpoints[0].ejection_multiplier == 0
    for _ in range(5):
        record_on(pool, URL0, status=500)
    (host,) = detector.stats().endpoints
    assert host.ejected_until == clock() + 10.0
    assert host.times_ejected == 4


def test_jitter_adds_up_to_the_configured_seconds(clock: ManualClock) -> None:
    """Jitter adds a random 0..jitter seconds to the ejection time."""
    detector = OutlierDetector(base_ejection_time=30.0, jitter=5.0, rng=random.Random(7))
    pool, _ = make_pool(10, clock, detector)
    for _ in range(5):
        record_on(pool, URL0, status=500)
    until = detector.stats().endpoints[0].ejected_until
    assert until is not None
    assert 30.0 < until - clock() <= 35.0


def test_max_ejection_percent_holds_with_all_failing(clock: ManualClock) -> None:
    """With 10 endpoints all failing and the 10 % default, exactly one is ejected."""
    detector = OutlierDetector()
    pool, events = make_pool(10, clock, detector)
    for _ in range(6):
        for endpoint in pool.endpoints:
            if endpoint.url not in ejected(pool):
                record_on(pool, endpoint.url, status=500)
    assert len(ejected(pool)) == 1
    assert [e.kind for e in events].count("ejected") == 1
    assert detector.stats().ejections_refused > 0


def test_at_least_one_ejection_in_a_small_pool(clock: ManualClock) -> None:
    """Envoy ejects one host even when one host is more than max_ejection_percent of the pool."""
    pool, _ = make_pool(3, clock, OutlierDetector(max_ejection_percent=10))
    for _ in range(6):
        for endpoint in pool.endpoints:
            if endpoint.url not in ejected(pool):
                record_on(pool, endpoint.url, status=500)
    assert len(ejected(pool)) == 1


def test_refused_outlier_is_ejected_when_room_frees_up(clock: ManualClock) -> None:
    """An outlier refused by max_ejection_percent is ejected at its next failure once there is room."""
    detector = OutlierDetector(base_ejection_time=10.0, max_ejection_percent=10)
    pool, _ = make_pool(10, clock, detector)
    url1 = "http://10.0.0.1:8000"
    for _ in range(5):
        record_on(pool, URL0, status=500)
        record_on(pool, url1, status=500)
    assert ejected(pool) == {URL0}
    clock.advance(10.0)
    record_on(pool, URL0, status=200)  # acquisition applies the expiry
    record_on(pool, url1, status=500)
    assert ejected(pool) == {url1}


def test_panic_mode_engages_when_too_many_are_ejected(clock: ManualClock) -> None:
    """Ejecting more than half of the endpoints puts the pool in panic mode, and an event says so."""
    pool, events = make_pool(10, clock, OutlierDetector(max_ejection_percent=100))
    for endpoint in pool.endpoints[:6]:
        for _ in range(5):
            record_on(pool, endpoint.url, status=500)
    assert pool.panic
    panic = [e for e in events if e.kind == "panic_entered"]
    assert len(panic) == 1
    assert panic[0].reason == "4/10 endpoints available"
    # In panic, ejected endpoints receive traffic again.
    seen = set()
    for _ in range(20):
        with pool.acquire() as lease:
            seen.add(lease.url)
            lease.record(status=200)
    assert len(seen) == 10


def test_failure_percentage_ejects_at_the_next_interval(clock: ManualClock) -> None:
    """An endpoint failing >= 85 % of 50+ requests in an interval is ejected when the interval ends."""
    detector = OutlierDetector(
        consecutive_5xx=None, consecutive_gateway_failure=None, interval=10.0
    )
    pool, events = make_pool(5, clock, detector)
    record_on(pool, URL0, status=200)  # starts the first interval
    for i in range(60):
        record_on(pool, URL0, status=500 if i % 10 else 200)  # 90 % failures, never 9 in a row
    for endpoint in pool.endpoints[1:]:
        for _ in range(60):
            record_on(pool, endpoint.url, status=200)
    assert ejected(pool) == set()
    clock.advance(10.0)
    record_on(pool, "http://10.0.0.1:8000", status=200)
    assert ejected(pool) == {URL0}
    assert "failure percentage" in next(e for e in events if e.kind == "ejected").reason


def test_failure_percentage_needs_minimum_hosts_and_volume(clock: ManualClock) -> None:
    """Below the minimum pool size, or the request volume, failure percentage does not eject."""
    detector = OutlierDetector(consecutive_5xx=None, consecutive_gateway_failure=None)
    pool, _ = make_pool(4, clock, detector)
    record_on(pool, URL0, status=200)
    for _ in range(60):
        record_on(pool, URL0, status=500)
    clock.advance(10.0)
    record_on(pool, URL0, status=200)
    assert ejected(pool) == set()

    detector = OutlierDetector(consecutive_5xx=None, consecutive_gateway_failure=None)
    pool, _ = make_pool(5, ManualClock(), detector)
    record_on(pool, URL0, status=200)
    for _ in range(40):
        record_on(pool, URL0, status=500)
    assert ejected(pool) == set()


def test_uneject_by_active_check_clears_counters(clock: ManualClock) -> None:
    """An early uneject (a passing active check) clears the consecutive counts."""
    detector = OutlierDetector()
    pool, _ = make_pool(10, clock, detector)
    for _ in range(5):
        record_on(pool, URL0, status=500)
    pool.uneject(URL0, "active health check passed")
    for _ in range(4):
        record_on(pool, URL0, status=500)
    assert ejected(pool) == set()
    (host,) = detector.stats().endpoints
    assert host.consecutive_5xx == 4
    assert host.ejection_multiplier == 1


def test_removed_endpoint_is_forgotten(clock: ManualClock) -> None:
    """Removing an endpoint drops its counters."""
    detector = OutlierDetector()
    pool, _ = make_pool(10, clock, detector)
    record_on(pool, URL0, status=500)
    pool.remove(URL0)
    assert detector.stats().endpoints == ()


def test_concurrent_records_from_threads(clock: ManualClock) -> None:
    """Threads recording at once leave consistent counters and exactly the failing endpoint ejected."""
    detector = OutlierDetector(max_ejection_percent=100)
    pool, _ = make_pool(10, clock, detector)
    barrier = threading.Barrier(4)

    def work(k: int) -> None:
        barrier.wait()
        for _ in range(500):
            with pool.acquire() as lease:
                lease.record(status=500 if lease.url == URL0 and k == 0 else 200)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pool.stats().in_flight == 0
    assert ejected(pool) <= {URL0}


def test_one_detector_per_pool(clock: ManualClock) -> None:
    """Attaching a detector to a second pool is a RuntimeError."""
    detector = OutlierDetector()
    make_pool(2, clock, detector)
    with pytest.raises(RuntimeError, match="already attached"):
        make_pool(2, clock, detector)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"consecutive_5xx": 0}, ValueError, "consecutive_5xx must be >= 1, got 0"),
        (
            {"consecutive_gateway_failure": 2.5},
            TypeError,
            "consecutive_gateway_failure must be an int",
        ),
        ({"interval": 0}, ValueError, "interval must be > 0"),
        ({"base_ejection_time": -1.0}, ValueError, "base_ejection_time must be > 0"),
        (
            {"max_ejection_percent": 101},
            ValueError,
            "max_ejection_percent must be between 0 and 100",
        ),
        ({"failure_percentage_threshold": -5}, ValueError, "failure_percentage_threshold"),
        ({"jitter": -0.1}, ValueError, "jitter must be >= 0"),
        ({"interval": "10"}, TypeError, "interval must be a number"),
        ({"clock": 3}, TypeError, "clock must be callable"),
    ],
)
def test_bad_configuration(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    """Bad settings raise a typed error naming the field and the value."""
    with pytest.raises(error, match=match):
        OutlierDetector(**kwargs)  # type: ignore[arg-type]
