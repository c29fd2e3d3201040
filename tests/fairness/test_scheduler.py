"""FairScheduler: fair order, weights, shuffle sharding, refusals and exact accounting, without I/O."""

from __future__ import annotations

import contextlib
import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tenantlb as tlb
from tenantlb.fairness import FairScheduler, Turn, TurnState, deal_hand
from tenantlb.testing import ManualClock


def drain(sched: FairScheduler, woken: list[Turn], held: list[Turn], n: int) -> list[str]:
    """Release the oldest held slot *n* times; return the flows granted in that order."""
    order = []
    for _ in range(n):
        sched.release(held.pop(0))
        granted = [t for t in woken if t.state is TurnState.GRANTED]
        woken.clear()
        held.extend(granted)
        order.extend(t.flow for t in granted)
    return order


def test_grants_at_once_while_free_then_queues() -> None:
    """A free slot is taken at once; beyond the capacity requests queue, FIFO within a flow."""
    woken: list[Turn] = []
    sched = FairScheduler(2, wake=woken.append)
    a, b = sched.submit("acme"), sched.submit("acme")
    assert a.state is b.state is TurnState.GRANTED
    c, d = sched.submit("acme"), sched.submit("acme")
    assert c.state is d.state is TurnState.QUEUED
    assert (sched.in_flight, sched.queued) == (2, 2)
    sched.release(a)
    assert woken == [c]
    assert c.state is TurnState.GRANTED
    sched.release(b)
    assert woken == [c, d]


def test_a_quiet_flow_overtakes_a_backlog() -> None:
    """A flow that arrives behind another's backlog of 20 is served within its next turn."""
    woken: list[Turn] = []
    sched = FairScheduler(1, wake=woken.append)
    held = [sched.submit("noisy")]
    for _ in range(20):
        sched.submit("noisy")
    for _ in range(3):
        sched.submit("quiet")
    order = drain(sched, woken, held, 8)
    # noisy's head was tagged first, then the two flows alternate
    assert order[:6] == ["noisy", "quiet", "noisy", "quiet", "noisy", "quiet"]


def test_a_flow_far_over_its_share_goes_after_the_others() -> None:
    """A flow with more waiting than one queue holds is heavy: a light flow's requests go first."""
    woken: list[Turn] = []
    sched = FairScheduler(1, wake=woken.append, queue_length=10)
    held = [sched.submit("noisy")]
    for _ in range(40):
        sched.submit("noisy")
    drain(sched, woken, held, 3)  # the noisy flow is re-queued as heavy (39 > 10 waiting)
    for _ in range(5):
        sched.submit("quiet")
    order = drain(sched, woken, held, 8)
    assert order[:5] == ["quiet"] * 5
    assert order[5:] == ["noisy"] * 3


def test_light_flows_cannot_starve_a_heavy_one() -> None:
    """Twenty flows that drain and refill at once (one request each, always) keep the budget busy;
    the heavy flow (300 waiting) still gets at least 1/8 of its fair share."""
    woken: list[Turn] = []
    sched = FairScheduler(1, wake=woken.append, queue_length=100, hand_size=8)
    held = [sched.submit("backlogged")]
    for _ in range(300):
        sched.submit("backlogged")
    for i in range(20):
        sched.submit(f"light-{i}")
    served: Counter[str] = Counter()
    for _ in range(4200):
        done = held.pop(0)
        sched.release(done)
        if done.flow != "backlogged":
            sched.submit(done.flow)  # a closed loop: the next request as soon as one finishes
        held.extend(t for t in woken if t.state is TurnState.GRANTED)
        served.update(t.flow for t in woken)
        woken.clear()
    fair = 4200 / 21
    assert served["backlogged"] >= fair / 8


def test_backlogged_flows_share_in_proportion_to_weights() -> None:
    """Weights 3:1 give 3:1 of the slots while both flows are backlogged."""
    woken: list[Turn] = []
    sched = FairScheduler(1, wake=woken.append, queue_length=100)
    held = [sched.submit("warmup")]
    for _ in range(80):
        sched.submit("gold", weight=3.0)
        sched.submit("bronze", weight=1)
    order = drain(sched, woken, held, 80)
    counts = Counter(order)
    assert counts["gold"] == pytest.approx(60, abs=1)
    assert counts["bronze"] == pytest.approx(20, abs=1)


def test_equal_flows_get_equal_shares_among_many() -> None:
    """Ten backlogged flows with equal weights get equal shares of 200 slots."""
    woken: list[Turn] = []
    sched = FairScheduler(1, wake=woken.append, queue_length=100)
    held = [sched.submit("warmup")]
    for i in range(10):
        for _ in range(40):
            sched.submit(f"tenant-{i}")
    counts = Counter(drain(sched, woken, held, 200))
    assert set(counts.values()) == {20}


def test_hands_are_distinct_stable_and_in_range() -> None:
    """A hand has hand_size distinct queues in range and is the same on every call."""
    for flow in ("acme", "globex", "ünïcode", "x" * 1000):
        hand = deal_hand(flow, 64, 8)
        assert len(set(hand)) == 8
        assert all(0 <= q < 64 for q in hand)
        assert deal_hand(flow, 64, 8) == hand
    assert sorted(deal_hand("acme", 5, 5)) == [0, 1, 2, 3, 4]


@given(st.text(min_size=1, max_size=30), st.integers(1, 200), st.data())
def test_hand_property(flow: str, queues: int, data: st.DataObject) -> None:
    """Any flow's hand is hand_size distinct queues of the deck."""
    hand_size = data.draw(st.integers(1, queues))
    hand = deal_hand(flow, queues, hand_size)
    assert len(hand) == len(set(hand)) == hand_size
    assert all(0 <= q < queues for q in hand)


def test_a_few_heavy_flows_cannot_fill_every_queue() -> None:
    """Three flooding flows fill at most their 3 x 8 queues; nearly every other flow still gets in."""
    sched = FairScheduler(1, queues=64, hand_size=8, queue_length=50)
    sched.submit("holder")
    refused: Counter[str] = Counter()
    for heavy in ("whale-1", "whale-2", "whale-3"):
        for _ in range(1000):
            try:
                sched.submit(heavy)
            except tlb.QueueFull:
                refused[heavy] += 1
    assert all(refused[h] > 0 for h in ("whale-1", "whale-2", "whale-3"))
    full = [q for q, n in enumerate(sched.stats().queue_lengths) if n == 50]
    assert len(full) <= 24
    admitted = 0
    for i in range(1000):
        try:
            sched.submit(f"minnow-{i}")
            admitted += 1
        except tlb.QueueFull:
            pass
    # a minnow is refused only if all 8 of its queues are among the <= 24 full ones:
    # C(24, 8) / C(64, 8) = 1.7e-4
    assert admitted == 1000


def test_queue_full_is_a_503_with_retry_after() -> None:
    """A full hand refuses with QueueFull: an OverCapacity / RequestRejected, 503, Retry-After."""
    sched = FairScheduler(1, queues=2, hand_size=1, queue_length=1)
    sched.submit("acme")
    sched.submit("acme")
    with pytest.raises(tlb.QueueFull) as info:
        sched.submit("acme")
    err = info.value
    assert isinstance(err, tlb.OverCapacity)
    assert isinstance(err, tlb.RequestRejected)
    assert err.status == 503
    assert err.flow == "acme"
    assert "acme" in str(err)
    [(name, value)] = err.headers
    assert name == "Retry-After"
    assert int(value) >= 1
    assert sched.stats().rejected == 1


def test_retry_after_grows_with_the_backlog() -> None:
    """Retry-After estimates the drain time from the mean hold time and the queue."""
    clock = ManualClock()
    sched = FairScheduler(1, queues=1, hand_size=1, queue_length=30, clock=clock)
    for _ in range(40):  # hold times of 2 s train the estimate
        turn = sched.submit("acme")
        clock.advance(2.0)
        sched.release(turn)
    sched.submit("acme")
    for _ in range(30):
        sched.submit("acme")
    with pytest.raises(tlb.QueueFull) as info:
        sched.submit("acme")
    assert info.value.retry_after > 30


def test_a_request_found_waiting_past_the_timeout_is_expired() -> None:
    """When its turn comes after the timeout the request expires and the slot goes on."""
    clock = ManualClock()
    woken: list[Turn] = []
    sched = FairScheduler(1, timeout=5.0, wake=woken.append, clock=clock)
    holder = sched.submit("a")
    late = sched.submit("a")
    clock.advance(6.0)
    fresh = sched.submit("b")
    sched.release(holder)
    assert woken == [late, fresh]
    assert late.state is TurnState.EXPIRED
    assert fresh.state is TurnState.GRANTED
    err = sched.timeout_error(late)
    assert isinstance(err, tlb.QueueTimeout)
    assert err.status == 503
    assert err.headers[0][0] == "Retry-After"
    stats = sched.stats()
    assert (stats.timed_out, stats.in_flight, stats.queued) == (1, 1, 0)


def test_cancel_leaves_the_queue_and_release_is_idempotent() -> None:
    """Cancelled waiters leave their queues; releasing twice or cancelling twice changes nothing."""
    woken: list[Turn] = []
    sched = FairScheduler(1, wake=woken.append)
    holder = sched.submit("a")
    waiting = [sched.submit(f"f{i % 3}") for i in range(9)]
    for turn in waiting:
        sched.cancel(turn)
        sched.cancel(turn)
    stats = sched.stats()
    assert (stats.queued, stats.flows_queued, stats.cancelled) == (0, 0, 9)
    assert sum(stats.queue_lengths) == 0
    sched.release(holder)
    sched.release(holder)
    assert woken == []
    assert sched.in_flight == 0
    assert sched.submit("a").state is TurnState.GRANTED


def test_a_granted_turn_cancelled_hands_its_slot_on() -> None:
    """A slot granted to a waiter that is cancelled at that moment goes to the next waiter."""
    woken: list[Turn] = []
    sched = FairScheduler(1, wake=woken.append)
    holder = sched.submit("a")
    first, second = sched.submit("b"), sched.submit("c")
    sched.release(holder)
    assert first.state is TurnState.GRANTED
    sched.cancel(first)  # its task was cancelled before it could run
    assert second.state is TurnState.GRANTED
    assert sched.in_flight == 1
    sched.release(second)
    assert (sched.in_flight, sched.queued) == (0, 0)


def test_cancelled_head_does_not_block_its_flow() -> None:
    """Cancelling the head of a flow's backlog lets the next one of that flow through."""
    woken: list[Turn] = []
    sched = FairScheduler(1, wake=woken.append)
    holder = sched.submit("x")
    head, nxt = sched.submit("a"), sched.submit("a")
    sched.cancel(head)
    sched.release(holder)
    assert woken == [nxt]


class StepLimit:
    """A Capacity whose limit the test sets, recording the latencies it is told."""

    def __init__(self, limit: int) -> None:
        self.value = limit
        self.latencies: list[float] = []

    @property
    def limit(self) -> int:
        return self.value

    def record(self, latency: float) -> None:
        self.latencies.append(latency)


def test_a_capacity_object_is_read_at_every_decision() -> None:
    """A growing Capacity admits more on poll(); finished requests report their hold time."""
    clock = ManualClock()
    woken: list[Turn] = []
    cap = StepLimit(1)
    sched = FairScheduler(cap, wake=woken.append, clock=clock)
    first = sched.submit("a")
    waiting = [sched.submit("a") for _ in range(3)]
    cap.value = 3
    sched.poll()
    assert woken == waiting[:2]
    clock.advance(0.25)
    sched.release(first)
    assert cap.latencies == [0.25]
    sched.release(waiting[0], record=False)
    assert cap.latencies == [0.25]
    assert sched.stats().limit == 3


def test_stats_are_a_bounded_frozen_snapshot() -> None:
    """stats() lists at most `top` flows, deepest first, and cannot be modified."""
    sched = FairScheduler(1, queues=256, hand_size=4, queue_length=50)
    sched.submit("holder")
    for i in range(100):
        for _ in range(i % 7 + 1):
            sched.submit(f"t{i}")
    stats = sched.stats(top=5)
    assert len(stats.deepest_flows) == 5
    assert [n for _, n in stats.deepest_flows] == [7] * 5
    assert stats.flows_queued == 100
    assert stats.queued == sum(stats.queue_lengths)
    with pytest.raises(AttributeError):
        stats.queued = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"capacity": 0}, ValueError, "capacity must be >= 1, got 0"),
        ({"capacity": -3}, ValueError, "capacity must be >= 1"),
        ({"capacity": 2.5}, TypeError, "capacity must be an int or a Capacity"),
        ({"capacity": True}, TypeError, "capacity must be"),
        ({"capacity": "8"}, TypeError, "capacity must be"),
        ({"capacity": 4, "hand_size": 65}, ValueError, "hand_size must be <= queues (64), got 65"),
        ({"capacity": 4, "queues": 0}, ValueError, "queues must be >= 1"),
        ({"capacity": 4, "hand_size": 0}, ValueError, "hand_size must be >= 1"),
        ({"capacity": 4, "queue_length": 0}, ValueError, "queue_length must be >= 1"),
        ({"capacity": 4, "queues": 8.0}, TypeError, "queues must be an int"),
        ({"capacity": 4, "timeout": 0}, ValueError, "timeout must be > 0"),
        ({"capacity": 4, "timeout": -1.0}, ValueError, "timeout must be > 0"),
        ({"capacity": 4, "timeout": "5"}, TypeError, "timeout must be a number"),
        ({"capacity": 4, "clock": 3}, TypeError, "clock must be callable"),
    ],
)
def test_bad_arguments_name_the_field(
    kwargs: dict[str, object], error: type[Exception], words: str
) -> None:
    """Bad constructor arguments raise TypeError/ValueError naming the argument."""
    capacity = kwargs.pop("capacity")
    with pytest.raises(error) as info:
        FairScheduler(capacity, **kwargs)  # type: ignore[arg-type]
    assert words in str(info.value)
    assert getattr(info.value, "field", None) == words.split()[0]  # for config paths
    with pytest.raises(error):
        tlb.FairQueue(capacity, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flow", "weight", "error", "words"),
    [
        ("acme", -1.0, ValueError, "weight must be > 0 and finite, got -1.0"),
        ("acme", 0, ValueError, "weight must be > 0"),
        ("acme", math.nan, ValueError, "weight must be > 0"),
        ("acme", math.inf, ValueError, "weight must be > 0"),
        ("acme", "2", TypeError, "weight must be a number, got str"),
        ("acme", True, TypeError, "weight must be a number, got bool"),
        ("", 1.0, ValueError, "flow must be a non-empty str"),
        (42, 1.0, TypeError, "flow must be a str, got int"),
        (None, 1.0, TypeError, "flow must be a str"),
    ],
)
def test_bad_requests_name_the_field(
    flow: object, weight: object, error: type[Exception], words: str
) -> None:
    """A bad flow or weight is refused before anything is taken, queued or full alike."""
    sched = FairScheduler(1)
    with pytest.raises(error) as info:
        sched.submit(flow, weight)  # type: ignore[arg-type]
    assert words in str(info.value)
    assert getattr(info.value, "field", None) == words.split()[0]  # for config paths
    assert sched.in_flight == 0
    sched.submit("holder")
    with pytest.raises(error):
        sched.submit(flow, weight)  # type: ignore[arg-type]
    assert sched.queued == 0


ops = st.lists(
    st.tuples(
        st.sampled_from(["submit", "release", "cancel", "grow", "shrink"]), st.integers(0, 30)
    ),
    max_size=300,
)


@given(ops)
def test_accounting_invariants_under_any_sequence(steps: list[tuple[str, int]]) -> None:
    """Under any mix of submits, releases, cancels and limit changes the books balance and no
    slot idles while someone waits; releasing everything leaves nothing queued or in flight."""
    cap = StepLimit(3)
    woken: list[Turn] = []
    sched = FairScheduler(cap, queues=8, hand_size=2, queue_length=3, wake=woken.append)
    turns: list[Turn] = []
    for op, n in steps:
        if op == "submit":
            with contextlib.suppress(tlb.QueueFull):
                turns.append(sched.submit(f"f{n % 6}", weight=1 + n % 3))
        elif op == "release" and turns:
            sched.release(turns[n % len(turns)])
        elif op == "cancel" and turns:
            sched.cancel(turns[n % len(turns)])
        elif op == "grow":
            cap.value = min(cap.value + 1, 6)
            sched.poll()
        elif op == "shrink":
            cap.value = max(cap.value - 1, 1)
        states = Counter(t.state for t in turns)
        stats = sched.stats()
        assert stats.in_flight == states[TurnState.GRANTED]
        assert stats.queued == states[TurnState.QUEUED] == sum(stats.queue_lengths)
        assert all(0 <= n <= 3 for n in stats.queue_lengths)
        if stats.queued:
            assert stats.in_flight >= cap.value  # work-conserving
    for turn in turns:
        sched.release(turn)
    stats = sched.stats()
    assert (stats.in_flight, stats.queued, stats.flows_queued) == (0, 0, 0)
