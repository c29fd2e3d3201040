"""PeakEWMA: a per-answer moving average of latency, best of three on cost x (in-flight + 1)."""

from __future__ import annotations

import heapq
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tenantlb as tlb
from tenantlb.balancing import EndpointState
from tenantlb.testing import ManualClock

URLS = [f"http://10.0.0.{i}:8000" for i in range(1, 11)]
WEIGHT = 0.07  # how far each answer after the fourth moves the estimate (the class docs)


def simulate(
    pool: tlb.Pool,
    clock: ManualClock,
    latency: dict[str, float],
    status: dict[str, int],
    *,
    requests: int,
    interval: float,
) -> Counter[str]:
    """Drive *pool* with a request every *interval* seconds; each takes its endpoint's latency."""
    picks: Counter[str] = Counter()
    done: list[tuple[float, int, tlb.Lease]] = []
    now = clock()
    for n in range(requests):
        arrival = now + n * interval
        while done and done[0][0] <= arrival:
            at, _, lease = heapq.heappop(done)
            clock.set(at)
            lease.record(status=status.get(lease.url, 200))
        clock.set(arrival)
        lease = pool.acquire()
        picks[lease.url] += 1
        heapq.heappush(done, (arrival + latency.get(lease.url, 0.010), n, lease))
    while done:
        at, _, lease = heapq.heappop(done)
        clock.set(at)
        lease.record(status=status.get(lease.url, 200))
    return picks


def test_is_the_pool_default() -> None:
    """A pool without a balancer uses PeakEWMA."""
    assert isinstance(tlb.Pool(URLS[:2]).balancer, tlb.PeakEWMA)


def test_slow_endpoint_gets_under_5_percent() -> None:
    """An endpoint ten times slower than its peers receives less than 5% of the traffic."""
    clock = ManualClock(1000.0)
    pool = tlb.Pool(URLS[:5], tlb.PeakEWMA(seed=1), clock=clock)
    slow = URLS[0]
    picks = simulate(pool, clock, {slow: 0.100}, {}, requests=20_000, interval=0.002)
    share = picks[slow] / 20_000
    assert share < 0.05, share
    assert all(s.in_flight == 0 for s in pool.stats().endpoints)


def test_fast_failing_endpoint_gets_under_5_percent() -> None:
    """An endpoint that answers 503 instantly receives less than 5% of the traffic."""
    clock = ManualClock(1000.0)
    pool = tlb.Pool(URLS[:5], tlb.PeakEWMA(seed=2), clock=clock)
    bad = URLS[3]
    picks = simulate(pool, clock, {bad: 0.0005}, {bad: 503}, requests=20_000, interval=0.002)
    share = picks[bad] / 20_000
    assert share < 0.05, share


def test_equal_endpoints_share_evenly() -> None:
    """Endpoints of equal latency each receive about the same share."""
    clock = ManualClock(1000.0)
    pool = tlb.Pool(URLS[:4], tlb.PeakEWMA(seed=3), clock=clock)
    picks = simulate(pool, clock, {}, {}, requests=20_000, interval=0.002)
    for url in URLS[:4]:
        assert 0.20 < picks[url] / 20_000 < 0.30


def test_recovered_endpoint_is_probed_again() -> None:
    """An endpoint that was slow gets traffic again once its latency returns to normal."""
    clock = ManualClock(1000.0)
    pool = tlb.Pool(URLS[:3], tlb.PeakEWMA(decay=10.0, seed=4), clock=clock)
    slow = URLS[0]
    simulate(pool, clock, {slow: 0.200}, {}, requests=5_000, interval=0.002)
    clock.advance(5.0)
    picks = simulate(pool, clock, {}, {}, requests=60_000, interval=0.002)
    assert picks[slow] / 60_000 > 0.2


def test_recovered_endpoint_is_probed_again_with_the_default_decay() -> None:
    """With the default decay (60 s) too, a recovered endpoint is back in use within two minutes."""
    clock = ManualClock(1000.0)
    pool = tlb.Pool(URLS[:3], tlb.PeakEWMA(seed=4), clock=clock)
    slow = URLS[0]
    simulate(pool, clock, {slow: 0.200}, {}, requests=5_000, interval=0.002)
    simulate(pool, clock, {}, {}, requests=60_000, interval=0.002)  # two minutes
    picks = simulate(pool, clock, {}, {}, requests=10_000, interval=0.002)
    assert picks[slow] / 10_000 > 0.2


def test_a_fast_answer_after_idling_keeps_the_decay_going() -> None:
    """An answer faster than the decayed cost does not restart the idle decay from the average."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(decay=10.0)
    pool = tlb.Pool(URLS[:1], balancer, clock=clock)
    state = pool.state(URLS[0])
    balancer.observe(state, 0.200, False)
    clock.advance(20.0)  # decayed to 0.2 * e^-2 = 0.027
    balancer.observe(state, 0.010, False)
    assert state.ewma == pytest.approx(0.200 + WEIGHT * (0.010 - 0.200))
    assert balancer.cost(state) == pytest.approx(state.ewma * math.exp(-2.0))
    balancer.observe(state, 0.100, False)  # slower than that: the decay starts again from now
    assert balancer.cost(state) == pytest.approx(state.ewma)


def test_cost_moves_by_the_weight_per_answer_and_decays_when_idle() -> None:
    """Each answer moves the cost 7% of the way, however long since the previous one; an
    idle endpoint's cost decays by exp(-idle/tau)."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(decay=10.0)
    pool = tlb.Pool(URLS[:1], balancer, clock=clock)
    state = pool.state(URLS[0])
    assert balancer.cost(state) == pytest.approx(0.030)  # default RTT before any sample
    balancer.observe(state, 0.010, False)
    assert state.ewma == pytest.approx(0.010)  # first sample is adopted
    clock.advance(1.0)
    balancer.observe(state, 0.500, False)
    assert state.ewma == pytest.approx(0.010 + WEIGHT * 0.490)  # a slow answer is no peak
    before = state.ewma
    clock.advance(10.0)
    assert balancer.cost(state) == pytest.approx(before * math.exp(-1.0))  # idle decay
    balancer.observe(state, 0.100, False)
    assert state.ewma == pytest.approx(before + WEIGHT * (0.100 - before))


def test_one_fast_answer_after_a_silence_does_not_clear_a_slow_estimate() -> None:
    """A slow endpoint's estimate survives one fast answer after a long silence (with Finagle's
    time-weighted average, that answer replaced 86% of it)."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(decay=10.0)
    pool = tlb.Pool(URLS[:1], balancer, clock=clock)
    state = pool.state(URLS[0])
    for _ in range(10):
        clock.advance(0.5)
        balancer.observe(state, 0.250, False)
    clock.advance(20.0)
    balancer.observe(state, 0.010, False)
    assert state.ewma > 0.2


def test_new_endpoint_gets_one_request_until_its_first_answer() -> None:
    """An endpoint with no answer yet is not picked again while its first request is out."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(seed=8)
    pool = tlb.Pool(URLS[:3], balancer, clock=clock)
    for url in URLS[:2]:
        balancer.observe(pool.state(url), 0.100, False)  # slower than default_rtt
    first = pool.acquire()
    assert first.url == URLS[2]  # not measured yet: tried at once
    for _ in range(50):
        with pool.acquire() as lease:
            assert lease.url != URLS[2]
    first.record(status=200)


def test_one_request_at_a_time_still_measures_every_endpoint() -> None:
    """Sequential requests faster than default_rtt still try every endpoint (untried ones first)."""
    clock = ManualClock(0.0)
    pool = tlb.Pool(URLS[:3], tlb.PeakEWMA(seed=10), clock=clock)
    used: Counter[str] = Counter()
    for _ in range(30):
        with pool.acquire() as lease:
            clock.advance(0.001)
            lease.record(status=200)
            used[lease.url] += 1
    assert set(used) == set(URLS[:3])


def test_picks_the_cheapest_of_three_distinct_candidates() -> None:
    """With three endpoints and three choices, every pick compares all three (no repeats)."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(seed=9, aperture=None)
    pool = tlb.Pool(URLS[:3], balancer, clock=clock)
    for url, latency in zip(URLS[:3], (0.300, 0.010, 0.200), strict=True):
        balancer.observe(pool.state(url), latency, False)
    assert {balancer.pick(None).url for _ in range(200)} == {URLS[1]}  # type: ignore[union-attr]


def test_as_many_choices_as_endpoints_compare_them_all() -> None:
    """choices=5 over five endpoints (the sampling path for more than three) takes the cheapest."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(choices=5, seed=12, aperture=None)
    pool = tlb.Pool(URLS[:5], balancer, clock=clock)
    for url, latency in zip(URLS[:5], (0.3, 0.2, 0.05, 0.4, 0.1), strict=True):
        balancer.observe(pool.state(url), latency, False)
    assert {balancer.pick(None).url for _ in range(100)} == {URLS[2]}  # type: ignore[union-attr]


def test_two_choices_leave_the_slowest_its_leftovers() -> None:
    """With choices=2 the dearest of three is never picked, the middle one sometimes."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(choices=2, seed=9, aperture=None)
    pool = tlb.Pool(URLS[:3], balancer, clock=clock)
    for url, latency in zip(URLS[:3], (0.300, 0.010, 0.200), strict=True):
        balancer.observe(pool.state(url), latency, False)
    picks = Counter(balancer.pick(None).url for _ in range(300))  # type: ignore[union-attr]
    assert picks[URLS[0]] == 0
    assert 0 < picks[URLS[2]] < picks[URLS[1]]


def test_failure_counts_as_a_penalty() -> None:
    """A failed request counts as at least failure_penalty seconds, and doubles a larger cost."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(failure_penalty=2.0)
    pool = tlb.Pool(URLS[:1], balancer, clock=clock)
    state = pool.state(URLS[0])
    balancer.observe(state, 0.001, True)
    assert state.ewma == pytest.approx(2.0)
    balancer.observe(state, 0.001, True)
    assert state.ewma == pytest.approx(4.0)


def test_in_flight_counts_toward_load() -> None:
    """With equal costs the endpoint with fewer requests in flight wins."""
    pool = tlb.Pool(URLS[:2], tlb.PeakEWMA(seed=5), clock=ManualClock())
    held = pool.acquire()
    other = pool.acquire()
    assert other.url != held.url
    held.release()
    other.release()


def test_empty_and_single() -> None:
    """No candidate picks None; one candidate is always picked."""
    balancer = tlb.PeakEWMA()
    balancer.bind(ManualClock())
    assert balancer.pick(None) is None
    state = EndpointState(tlb.Endpoint(URLS[0]), 0.0)
    balancer.rebuild([state])
    assert balancer.pick(b"k") is state


def test_observe_after_removal_is_harmless() -> None:
    """Recording a lease whose endpoint was removed meanwhile does not fail."""
    pool = tlb.Pool(URLS[:2], tlb.PeakEWMA(), clock=ManualClock())
    lease = pool.acquire()
    pool.remove(lease.url)
    lease.record(status=200)
    assert pool.acquire().url != lease.url


def test_clone_keeps_settings() -> None:
    """A clone is unbound and has the same settings."""
    balancer = tlb.PeakEWMA(5.0, default_rtt=0.1, failure_penalty=3.0, choices=4)
    balancer.bind(ManualClock())
    clone = balancer.clone()
    settings = (clone.decay, clone.default_rtt, clone.failure_penalty, clone.choices)
    assert settings == (5.0, 0.1, 3.0, 4)
    clone.bind(ManualClock())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"decay": 0}, ValueError, "decay must be > 0"),
        ({"decay": -1.0}, ValueError, "decay must be > 0"),
        ({"decay": math.inf}, ValueError, "decay must be > 0"),
        ({"default_rtt": 0.0}, ValueError, "default_rtt must be > 0"),
        ({"failure_penalty": math.nan}, ValueError, "failure_penalty must be > 0"),
        ({"decay": "10"}, TypeError, "decay must be a number"),
        ({"choices": 1}, ValueError, "choices must be >= 2"),
        ({"choices": 2.0}, TypeError, "choices must be an int"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    """Non-positive, non-finite or non-numeric settings are refused with the field named."""
    with pytest.raises(error, match=match):
        tlb.PeakEWMA(**kwargs)  # type: ignore[arg-type]


class CountingClock(ManualClock):
    """A manual clock that counts its readings."""

    readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return super().__call__()


def test_pick_reads_no_clock_once_endpoints_have_samples() -> None:
    """With a sample on every endpoint, picking needs neither the clock nor exp(): the decay to
    now is common to both candidates, so it cancels out of the comparison."""
    clock = CountingClock(100.0)
    pool = tlb.Pool(URLS[:5], tlb.PeakEWMA(seed=7), clock=clock)
    balancer = pool.balancer
    for i, url in enumerate(URLS[:5]):
        clock.advance(0.5)
        balancer.observe(pool.state(url), 0.010 * (i + 1), False)
    clock.readings = 0
    for _ in range(100):
        balancer.pick(None)
    assert clock.readings == 0


def test_an_untried_idle_candidate_is_picked_without_the_clock() -> None:
    """An endpoint with no answer and nothing in flight wins a pick without the clock being read
    (it would win any comparison of decayed costs): a cold pool's picks stay cheap."""
    clock = CountingClock(100.0)
    balancer = tlb.PeakEWMA(seed=7)
    pool = tlb.Pool(URLS[:3], balancer, clock=clock)
    for url in URLS[:2]:
        balancer.observe(pool.state(url), 0.010, False)
    clock.readings = 0
    assert {balancer.pick(None).url for _ in range(20)} == {URLS[2]}  # type: ignore[union-attr]
    assert clock.readings == 0


def test_a_lease_dates_the_answer_with_its_own_clock_reading() -> None:
    """Recording through a lease reads the clock once, for the latency, and PeakEWMA dates the
    answer with that reading instead of reading the clock again."""
    clock = CountingClock(100.0)
    pool = tlb.Pool(URLS[:3], tlb.PeakEWMA(seed=7), clock=clock, outlier_detector=None)
    lease = pool.acquire()
    clock.advance(0.020)
    clock.readings = 0
    lease.record(status=200)
    assert clock.readings == 1
    assert pool.state(lease.url).ewma_at == 100.020


def test_observe_dates_the_answer_at_now_when_given() -> None:
    """observe(..., now=t) dates the answer at t; without now it reads the pool clock."""
    clock = ManualClock(10.0)
    balancer = tlb.PeakEWMA(decay=10.0)
    pool = tlb.Pool(URLS[:2], balancer, clock=clock)
    given, read = pool.state(URLS[0]), pool.state(URLS[1])
    balancer.observe(given, 0.100, False, now=4.0)
    balancer.observe(read, 0.100, False)
    assert (given.ewma_at, read.ewma_at) == (4.0, 10.0)
    assert balancer.cost(given) == pytest.approx(0.100 * math.exp(-0.6))
    assert balancer.cost(read) == pytest.approx(0.100)


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(
        st.tuples(
            st.floats(min_value=1e-3, max_value=5.0),  # latency
            st.floats(min_value=0.0, max_value=5.0),  # time since the previous sample
            st.booleans(),  # failed
        ),
        min_size=2,
        max_size=12,
    ),
    in_flight=st.tuples(st.integers(0, 300), st.integers(0, 300)),
    weights=st.tuples(st.integers(1, 10), st.integers(1, 10)),
    idle=st.floats(min_value=0.0, max_value=10.0),
)
def test_pick_takes_the_lower_decayed_load(
    samples: list[tuple[float, float, bool]],
    in_flight: tuple[int, int],
    weights: tuple[int, int],
    idle: float,
) -> None:
    """Of two candidates, pick takes the one with the lower cost(now) x (in_flight + 1)^1.25 / weight."""
    clock = ManualClock(1000.0)
    endpoints = [tlb.Endpoint(u, weight=w) for u, w in zip(URLS[:2], weights, strict=True)]
    balancer = tlb.PeakEWMA(seed=11)
    pool = tlb.Pool(endpoints, balancer, clock=clock)
    states = [pool.state(u) for u in URLS[:2]]
    for k, (latency, gap, failed) in enumerate(samples):
        clock.advance(gap)
        balancer.observe(states[k % 2], latency, failed)
    clock.advance(idle)
    for state, count in zip(states, in_flight, strict=True):
        state.in_flight = count
    loads = [balancer.cost(s) * (s.in_flight + 1) ** 1.25 / s.weight for s in states]
    if math.isclose(loads[0], loads[1], rel_tol=1e-9):
        return  # a tie: either is right
    best = states[loads.index(min(loads))]
    for _ in range(4):
        assert balancer.pick(None) is best
    for state in states:
        state.in_flight = 0


def answered(pool: tlb.Pool, clock: ManualClock, latency: dict[str, float], answers: int) -> None:
    """Give every endpoint *answers* answers of its latency, one request at a time."""
    urls = [e.url for e in pool.stats().endpoints]
    for url in urls:
        others = [u for u in urls if u != url]
        for _ in range(answers):
            with pool.acquire(exclude=others) as lease:
                clock.advance(latency[url])
                lease.record(status=200)


def test_the_previous_pick_is_a_candidate_again() -> None:
    """Once picked, the cheapest of ten endpoints (ten answers) stays a candidate: every pick
    compares it with three random others, so it wins while it stays the cheapest."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(seed=13, aperture=None)
    pool = tlb.Pool(URLS, balancer, clock=clock)
    latency = {url: 0.050 for url in URLS} | {URLS[4]: 0.010}
    answered(pool, clock, latency, 10)
    for _ in range(200):
        if balancer.pick(None).url == URLS[4]:  # type: ignore[union-attr]
            break
    picks = Counter(balancer.pick(None).url for _ in range(100))  # type: ignore[union-attr]
    assert picks == {URLS[4]: 100}


def test_an_endpoint_with_few_answers_is_not_remembered() -> None:
    """With fewer than ten answers, the cheapest endpoint wins only when it is drawn."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(seed=13, aperture=None)
    pool = tlb.Pool(URLS, balancer, clock=clock)
    latency = {url: 0.050 for url in URLS} | {URLS[4]: 0.010}
    answered(pool, clock, latency, 9)
    picks = Counter(balancer.pick(None).url for _ in range(300))  # type: ignore[union-attr]
    assert 50 < picks[URLS[4]] < 150  # drawn in 3 of 10 picks


def test_a_removed_endpoint_is_forgotten() -> None:
    """The remembered pick is dropped when the candidates change: a removed endpoint is never
    picked again."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(seed=13, aperture=None)
    pool = tlb.Pool(URLS, balancer, clock=clock)
    latency = {url: 0.050 for url in URLS} | {URLS[4]: 0.010}
    answered(pool, clock, latency, 10)
    while balancer.pick(None).url != URLS[4]:  # type: ignore[union-attr]
        pass
    pool.remove(URLS[4])
    assert all(balancer.pick(None).url != URLS[4] for _ in range(100))  # type: ignore[union-attr]


@pytest.mark.parametrize("choices", [2, 4])
def test_other_choices_remember_the_previous_pick_too(choices: int) -> None:
    """With two or four choices too, the previous pick is compared again."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(choices=choices, seed=14, aperture=None)
    pool = tlb.Pool(URLS, balancer, clock=clock)
    latency = {url: 0.050 for url in URLS} | {URLS[7]: 0.010}
    answered(pool, clock, latency, 10)
    for _ in range(200):
        if balancer.pick(None).url == URLS[7]:  # type: ignore[union-attr]
            break
    picks = Counter(balancer.pick(None).url for _ in range(100))  # type: ignore[union-attr]
    assert picks == {URLS[7]: 100}


def test_the_first_answers_are_averaged() -> None:
    """An endpoint's first four answers are averaged equally; from the fifth on each answer moves
    the estimate 7% of the way."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA()
    pool = tlb.Pool(URLS[:1], balancer, clock=clock)
    state = pool.state(URLS[0])
    for latency in (0.010, 0.030, 0.050, 0.070):
        with pool.acquire() as lease:
            clock.advance(latency)
            lease.record(status=200)
    assert state.ewma == pytest.approx(0.040)  # not 0.010 moved 7% at a time
    with pool.acquire() as lease:
        clock.advance(0.140)
        lease.record(status=200)
    assert state.ewma == pytest.approx(0.040 + WEIGHT * (0.140 - 0.040))


MANY = [f"http://10.0.1.{i}:8000" for i in range(1, 21)]


def test_a_light_client_keeps_to_an_aperture_of_five() -> None:
    """One request at a time over twenty endpoints goes to five of them, not to all twenty."""
    clock = ManualClock(0.0)
    pool = tlb.Pool(MANY, tlb.PeakEWMA(seed=21), clock=clock)
    picks = simulate(pool, clock, {}, {}, requests=2_000, interval=0.020)
    assert len(picks) == 5


def test_the_aperture_widens_under_load_and_narrows_after() -> None:
    """With more than 1.25 requests in flight per endpoint of the aperture it takes in more
    endpoints, up to all of them; once the requests are done it narrows back to five."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(seed=22)
    pool = tlb.Pool(MANY, balancer, clock=clock)
    simulate(pool, clock, {}, {}, requests=200, interval=0.020)  # every endpoint in it answered
    held = [pool.acquire() for _ in range(100)]
    assert len({lease.url for lease in held}) == 20
    for lease in held:
        lease.record(status=200)
    simulate(pool, clock, {}, {}, requests=100, interval=0.020)  # one endpoint less a pick
    picks = simulate(pool, clock, {}, {}, requests=500, interval=0.020)
    assert len(picks) == 5


def test_every_pick_compares_the_whole_aperture() -> None:
    """Within the aperture every pick takes the cheapest endpoint: no draw can miss it."""
    clock = ManualClock(0.0)
    balancer = tlb.PeakEWMA(seed=23)
    pool = tlb.Pool(URLS[:5], balancer, clock=clock)
    for url, latency in zip(URLS[:5], (0.3, 0.2, 0.05, 0.4, 0.1), strict=True):
        balancer.observe(pool.state(url), latency, False)
    assert {balancer.pick(None).url for _ in range(100)} == {URLS[2]}  # type: ignore[union-attr]


def test_the_aperture_keeps_its_endpoints_when_another_leaves() -> None:
    """Removing an endpoint outside the aperture leaves it as it was; removing one inside
    replaces that one only (rendezvous order)."""
    clock = ManualClock(0.0)
    pool = tlb.Pool(MANY, tlb.PeakEWMA(seed=24), clock=clock)
    inside = set(simulate(pool, clock, {}, {}, requests=500, interval=0.020))
    outside = sorted(set(MANY) - inside)
    pool.remove(outside[0])
    assert set(simulate(pool, clock, {}, {}, requests=500, interval=0.020)) == inside
    gone = sorted(inside)[0]
    pool.remove(gone)
    after = set(simulate(pool, clock, {}, {}, requests=500, interval=0.020))
    assert len(after) == 5
    assert after > inside - {gone}


def test_independent_balancers_choose_different_apertures() -> None:
    """Balancers with different seeds (or none) keep to different subsets, so a fleet of
    clients spreads over every endpoint; one seed always gives the same subset."""
    subsets = []
    for seed in (31, 32, 33, 33):
        clock = ManualClock(0.0)
        pool = tlb.Pool(MANY, tlb.PeakEWMA(seed=seed), clock=clock)
        subsets.append(frozenset(simulate(pool, clock, {}, {}, requests=200, interval=0.020)))
    assert subsets[2] == subsets[3]
    assert len(set(subsets)) == 3


def test_without_an_aperture_every_endpoint_is_used() -> None:
    """aperture=None compares random candidates from every endpoint, as before the aperture."""
    clock = ManualClock(0.0)
    pool = tlb.Pool(MANY, tlb.PeakEWMA(seed=21, aperture=None), clock=clock)
    picks = simulate(pool, clock, {}, {}, requests=2_000, interval=0.020)
    assert len(picks) == 20


@pytest.mark.parametrize(
    ("aperture", "error", "match"),
    [
        (1, ValueError, "aperture must be >= 2"),
        (0, ValueError, "aperture must be >= 2"),
        (5.0, TypeError, "aperture must be an int"),
        (True, TypeError, "aperture must be an int"),
    ],
)
def test_bad_aperture(aperture: object, error: type[Exception], match: str) -> None:
    """An aperture that is not an int >= 2 (or None) is refused with the field named."""
    with pytest.raises(error, match=match):
        tlb.PeakEWMA(aperture=aperture)  # type: ignore[arg-type]


def test_a_light_client_counts_its_requests_in_flight_for_more_than_a_busy_one() -> None:
    """At the aperture (a light client) the load is cost x (in_flight + 1)^1.25; in a random pick
    (a busy client's widened aperture, or aperture=None) it is cost x (in_flight + 1)."""
    clock = ManualClock(0.0)
    picks = {}
    for aperture in (5, None):
        balancer = tlb.PeakEWMA(choices=2, aperture=aperture, seed=3)
        pool = tlb.Pool(URLS[:2], balancer, clock=clock)
        fast, slow = pool.state(URLS[0]), pool.state(URLS[1])
        balancer.observe(fast, 0.100, False)
        balancer.observe(slow, 0.220, False)
        fast.in_flight = 1  # load 0.2 counted as it is, 0.238 to the power 1.25; slow: 0.22
        picks[aperture] = {balancer.pick(None).url for _ in range(8)}  # type: ignore[union-attr]
        fast.in_flight = 0
    assert picks == {5: {URLS[1]}, None: {URLS[0]}}
