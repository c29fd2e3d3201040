"""AdaptiveConcurrency: Envoy's gradient controller, driven by a manual clock (no sleeps)."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

import tenantlb as tlb
from tenantlb.testing import ManualClock


def make(clock: ManualClock, **kwargs: object) -> tlb.AdaptiveConcurrency:
    options: dict[str, object] = {
        "min_limit": 3,
        "max_limit": 200,
        "update_interval": 1.0,
        "min_rtt_requests": 10,
        "min_rtt_interval": 600.0,
        "jitter": 10.0,
        "clock": clock,
        "rng": random.Random(1),
    }
    options.update(kwargs)
    return tlb.AdaptiveConcurrency(**options)  # type: ignore[arg-type]


def measure_min_rtt(ac: tlb.AdaptiveConcurrency, clock: ManualClock, latency: float) -> None:
    for _ in range(10):
        clock.advance(latency)
        ac.record(latency)


def window(ac: tlb.AdaptiveConcurrency, clock: ManualClock, latency: float, n: int = 50) -> int:
    """One sampling window of *n* requests of *latency*; returns the limit after it closes."""
    for _ in range(n):
        ac.record(latency)
    clock.advance(1.0)
    return ac.limit


def test_measures_min_rtt_first_at_the_pinned_limit() -> None:
    """It starts pinned to min_limit and measures minRTT from the first requests."""
    clock = ManualClock()
    ac = make(clock)
    stats = ac.stats()
    assert (stats.limit, stats.min_rtt, stats.measuring_min_rtt) == (3, None, True)
    measure_min_rtt(ac, clock, 0.1)
    stats = ac.stats()
    assert stats.min_rtt == pytest.approx(0.1)
    assert not stats.measuring_min_rtt
    assert stats.min_rtt_measurements == 1


def test_limit_grows_while_latency_stays_at_min_rtt() -> None:
    """With latency at minRTT the gradient is 1.25 and the limit climbs to max_limit."""
    clock = ManualClock()
    ac = make(clock)
    measure_min_rtt(ac, clock, 0.1)
    limits = [window(ac, clock, 0.1) for _ in range(20)]
    assert limits == sorted(limits)
    # Envoy's formula: 3 * 1.25 = 3.75, + sqrt(3.75) = 5.68 -> 5
    assert limits[0] == 5
    assert limits[-1] == 200
    assert ac.stats().sample_rtt == pytest.approx(0.1)


def test_limit_falls_within_a_few_windows_when_latency_doubles_and_recovers() -> None:
    """Doubling the latency cuts the limit below half within three windows; it recovers after."""
    clock = ManualClock()
    ac = make(clock)
    measure_min_rtt(ac, clock, 0.1)
    while window(ac, clock, 0.1) < 200:
        pass
    falling = [window(ac, clock, 0.2) for _ in range(3)]
    assert falling == sorted(falling, reverse=True)
    assert falling[-1] < 100
    rising = [window(ac, clock, 0.1) for _ in range(8)]
    assert rising[-1] == 200
    assert ac.stats().min_rtt == pytest.approx(0.1)


def test_gradient_is_clamped() -> None:
    """A sample 10x minRTT halves the limit at most (gradient floor 0.5), plus headroom."""
    clock = ManualClock()
    ac = make(clock, max_limit=1000)
    measure_min_rtt(ac, clock, 0.1)
    while window(ac, clock, 0.01) < 1000:  # a fast sample doubles at most
        pass
    assert window(ac, clock, 1.0) == int(500 + 500**0.5)


def test_requests_sent_before_the_pin_do_not_count_towards_min_rtt() -> None:
    """A slow request that started before the measurement began is not a minRTT sample."""
    clock = ManualClock()
    ac = make(clock)
    clock.advance(1.0)
    for _ in range(20):
        ac.record(10.0)  # started at t=-9, before the measurement began at t=0
    assert ac.stats().measuring_min_rtt
    measure_min_rtt(ac, clock, 0.1)
    assert ac.stats().min_rtt == pytest.approx(0.1)


def test_min_rtt_is_remeasured_periodically_with_jitter() -> None:
    """minRTT is measured again after the interval plus at most jitter% of it."""
    clock = ManualClock()
    ac = make(clock, min_rtt_interval=100.0, jitter=10.0)
    measure_min_rtt(ac, clock, 0.1)
    start = clock()
    while not ac.stats().measuring_min_rtt:
        window(ac, clock, 0.1, n=5)
    waited = clock() - start
    assert 100.0 <= waited <= 111.0
    assert ac.limit == 3  # pinned again
    measure_min_rtt(ac, clock, 0.3)  # the backend is slower now
    assert ac.min_rtt == pytest.approx(0.3)
    assert ac.stats().min_rtt_measurements == 2


def test_five_windows_at_the_minimum_trigger_a_new_measurement() -> None:
    """A limit stuck at min_limit for five windows re-measures minRTT (Envoy)."""
    clock = ManualClock()
    ac = make(clock)
    measure_min_rtt(ac, clock, 0.1)
    for _ in range(4):
        window(ac, clock, 1.0)
    assert ac.limit == 3
    assert not ac.stats().measuring_min_rtt
    window(ac, clock, 1.0)
    assert ac.stats().measuring_min_rtt


def test_a_fixed_min_rtt_never_measures() -> None:
    """With min_rtt fixed the limit adapts from the first window and never pins."""
    clock = ManualClock()
    ac = make(clock, min_rtt=0.1, min_rtt_interval=1.0)
    assert not ac.stats().measuring_min_rtt
    for _ in range(30):
        window(ac, clock, 0.1)
    assert ac.limit == 200
    assert ac.stats().min_rtt_measurements == 0


def test_a_window_without_samples_keeps_the_limit() -> None:
    """Idle windows leave the limit where it was."""
    clock = ManualClock()
    ac = make(clock)
    measure_min_rtt(ac, clock, 0.1)
    limit = window(ac, clock, 0.1)
    clock.advance(50.0)
    assert ac.limit == limit


def test_standalone_acquire_refuses_over_the_limit() -> None:
    """Alone it admits `limit` at once and refuses the next with OverCapacity (503)."""
    clock = ManualClock()
    ac = make(clock)
    holds = [ac.acquire_nowait() for _ in range(3)]
    for hold in holds:
        hold.__enter__()
    with pytest.raises(tlb.OverCapacity) as info, ac.acquire_nowait():
        pass
    assert info.value.status == 503
    for hold in holds:
        clock.advance(0.1)
        hold.__exit__(None, None, None)
    stats = ac.stats()
    assert (stats.in_flight, stats.rejected) == (0, 1)


def test_a_failed_request_is_not_a_sample() -> None:
    """A block that raises frees its slot but feeds no latency."""
    clock = ManualClock()
    ac = make(clock, min_rtt_requests=1)
    with pytest.raises(KeyError):
        fail_after(ac, clock, 5.0)
    assert ac.stats().measuring_min_rtt
    with ac.acquire_nowait():
        clock.advance(0.2)
    assert ac.min_rtt == pytest.approx(0.2)
    assert ac.stats().in_flight == 0


def fail_after(ac: tlb.AdaptiveConcurrency, clock: ManualClock, seconds: float) -> None:
    with ac.acquire_nowait():
        clock.advance(seconds)
        raise KeyError("boom")


@pytest.mark.anyio
async def test_async_acquire_measures_and_frees() -> None:
    """`async with acquire()` records the block's latency and frees the slot, even if cancelled."""
    ac = tlb.AdaptiveConcurrency(min_limit=2, min_rtt_requests=1)
    async with ac.acquire():
        await anyio.lowlevel.checkpoint()
    assert ac.min_rtt is not None
    with anyio.move_on_after(0.001):
        async with ac.acquire():
            await anyio.sleep_forever()
    assert ac.stats().in_flight == 0


def test_as_capacity_the_fair_queue_feeds_it_and_follows_it() -> None:
    """Used as a FairScheduler's capacity it receives hold times and its limit admits more."""
    from tenantlb.fairness import FairScheduler, Turn

    clock = ManualClock()
    ac = make(clock)
    woken: list[Turn] = []
    sched = FairScheduler(ac, wake=woken.append, clock=clock, queue_length=200)
    held = [sched.submit("acme") for _ in range(3)]
    queued = [sched.submit("acme") for _ in range(100)]
    assert sched.in_flight == 3
    for _ in range(40):  # one release every 0.1 s, oldest first: each slot is held 0.3 s
        clock.advance(0.1)
        turn = held.pop(0)
        sched.release(turn)
        held.extend(t for t in woken if t.state.value == "granted")
        woken.clear()
    assert ac.min_rtt == pytest.approx(0.3)
    assert sched.in_flight > 3  # the limit grew after minRTT was measured
    assert sched.in_flight == min(ac.limit, sched.in_flight + sched.queued)
    del queued


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"min_limit": 0}, ValueError, "min_limit must be >= 1, got 0"),
        ({"max_limit": 2}, ValueError, "max_limit must be >= min_limit (3), got 2"),
        ({"max_limit": 10.5}, TypeError, "max_limit must be an int"),
        ({"update_interval": 0}, ValueError, "update_interval must be > 0"),
        ({"percentile": 101}, ValueError, "percentile must be between 0 and 100"),
        ({"buffer": -1}, ValueError, "buffer must be between 0 and 100"),
        ({"jitter": "10"}, TypeError, "jitter must be a number"),
        ({"min_rtt_interval": -5.0}, ValueError, "min_rtt_interval must be > 0"),
        ({"min_rtt_requests": 0}, ValueError, "min_rtt_requests must be >= 1"),
        ({"min_rtt": 0.0}, ValueError, "min_rtt must be > 0"),
        ({"clock": "now"}, TypeError, "clock must be callable"),
        ({"rng": 42}, TypeError, "rng must be a random.Random"),
    ],
)
def test_bad_arguments_name_the_field(
    kwargs: dict[str, object], error: type[Exception], words: str
) -> None:
    """Bad arguments raise TypeError/ValueError naming the argument."""
    with pytest.raises(error) as info:
        tlb.AdaptiveConcurrency(**kwargs)  # type: ignore[arg-type]
    assert words in str(info.value)
    assert getattr(info.value, "field", None) == words.split()[0]  # for config paths


@pytest.mark.parametrize(
    ("latency", "error"), [(-0.1, ValueError), (float("nan"), ValueError), ("1", TypeError)]
)
def test_bad_latency_is_refused(latency: object, error: type[Exception]) -> None:
    """record() refuses a negative, NaN or non-number latency, naming it."""
    ac = tlb.AdaptiveConcurrency()
    with pytest.raises(error, match="latency"):
        ac.record(latency)  # type: ignore[arg-type]


def test_events_report_measurements_and_limit_changes() -> None:
    """Handlers hear when minRTT is measured, when the limit changes and when it is pinned again."""
    clock = ManualClock()
    seen: list[tlb.Event] = []
    ac = make(clock, name="shared", on_event=seen.append)
    extra: list[tlb.Event] = []
    unsubscribe = ac.subscribe(extra.append)
    measure_min_rtt(ac, clock, 0.1)
    window(ac, clock, 0.1)
    window(ac, clock, 0.1)
    unsubscribe()
    for _ in range(20):  # slow windows: the limit falls to min_limit, five there re-measure
        if ac.stats().measuring_min_rtt:
            break
        window(ac, clock, 1.0)
    kinds = [e.kind for e in seen]
    assert kinds[0] == "min_rtt_measured"
    assert "concurrency_limit_changed" in kinds
    assert kinds[-1] == "min_rtt_measuring"  # five windows at the minimum
    assert all(e.pool == "shared" for e in seen)
    assert "limit 3 -> 5" in seen[1].reason
    assert len(extra) < len(seen)
    with pytest.raises(TypeError, match="handler must be callable"):
        ac.subscribe(42)  # type: ignore[arg-type]


def test_a_failing_event_handler_never_breaks_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    """An exception in a handler is logged and swallowed."""

    def broken(event: tlb.Event) -> None:
        raise RuntimeError("observer bug")

    clock = ManualClock()
    ac = make(clock, on_event=broken)
    measure_min_rtt(ac, clock, 0.1)
    assert window(ac, clock, 0.1) == 5
    assert "observer bug" in caplog.text
