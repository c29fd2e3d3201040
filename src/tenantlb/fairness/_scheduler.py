"""`FairScheduler`: the sans-I/O decisions behind `FairQueue`, drivable from a simulation.

A concurrency budget (*capacity* slots) is shared by flows (tenants). A request that finds a free
slot and nobody waiting runs at once; otherwise it queues, and each freed slot goes to the waiting
request with the smallest *virtual finish time* across flows (self-clocked fair queuing, Golestani
1994): a backlogged flow's next request is tagged ``F_prev + 1 / weight``, so backlogged flows take
turns in proportion to their weights however many requests each one piles up. A tag is kept per
*flow* (one entry per backlogged flow, in a calendar queue of unit-wide tag bins, Brown 1988), so a
dispatch costs O(1) amortised however many flows wait; within a bin flows go in arrival order, an
error of at most one request per flow.

Flows over their share go last. A flow with more requests waiting than one queue holds
(``queue_length``: it spills over its hand, APF's own sign of a flow far over its share) is *heavy*;
light flows are dispatched first, and heavy ones get what light flows leave plus at least 1/8 of
their fair share while light flows keep the budget busy, so they are never starved. Why: next to a
tenant that is always backlogged, strict fair queuing serves a tenant at exactly its fair share
with bursty arrivals at no more than its average rate, so it sits at 100% load and queues without
bound (``benchmarks/fairness_sim.py``: quiet tenants' p99 6.9x with a neighbour at 10x its share).
Served first, it sees about the latency it would see alone (0.98-1.11x at 4 to 64 slots), and the heavy
flow still gets its fair share from what the light ones leave. Classes are fixed when a flow's
next request is queued for dispatch, so a tenant's class follows its backlog.

Admission is Kubernetes API Priority and Fairness' shuffle sharding: a flow hashes to a *hand* of
``hand_size`` queues out of ``queues`` and each request joins the shortest queue of its hand; a
request whose hand is full (every queue at ``queue_length``) is refused with `QueueFull`. A few
heavy flows can fill only their own hands, so a light flow almost always finds room: two flows'
hands coincide with probability ``1 / C(queues, hand_size)`` (1 in 4.4e9 for APF's 64 and 8).

The scheduler does no I/O and never blocks. The caller submits requests, releases or cancels them,
and learns of requests that left the queue (granted a slot or expired) through the *wake*
callback, which runs synchronously inside the call that caused it. `FairQueue` parks anyio tasks on
top of it; `benchmarks/fairness_sim.py` drives it with a virtual clock. Not thread-safe: use one
scheduler per event loop.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Protocol, final, runtime_checkable

import attrs

from .._clock import Clock, default_clock
from .._errors import QueueFull, QueueTimeout
from .._validate import FieldTypeError, FieldValueError, count, seconds
from ._hands import deal_hand

__all__ = [
    "Capacity",
    "FairQueueStats",
    "FairScheduler",
    "Turn",
    "TurnState",
    "check_request",
]


@runtime_checkable
class Capacity(Protocol):
    """A concurrency limit that may change over time, such as `AdaptiveConcurrency`.

    The scheduler reads `limit` whenever it could grant a slot and reports how long each finished
    request held its slot with `record`.
    """

    @property
    def limit(self) -> int:
        """The number of requests that may be in flight now (>= 1)."""
        ...

    def record(self, latency: float) -> None:
        """Take note that a request finished after holding its slot *latency* seconds."""
        ...


class TurnState(Enum):
    """Where a `Turn` is in its life."""

    QUEUED = "queued"
    GRANTED = "granted"
    RELEASED = "released"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


_QUEUED = TurnState.QUEUED
_GRANTED = TurnState.GRANTED


@final
class Turn:
    """One request's place in a `FairScheduler`: queued, then granted a slot, then released.

    Attributes:
        flow: The flow (tenant) it belongs to.
        weight: Its weight (> 0); a flow's share of a contended budget is proportional to it.
        state: A `TurnState`.
        queue: The queue it waited in, or -1 if it never queued.
        enqueued_at: Clock reading when it queued (None if granted at once).
        granted_at: Clock reading when it got its slot (None while queued).
        waiter: Free for the I/O layer (`FairQueue` keeps the task's anyio.Event here).
    """

    __slots__ = ("enqueued_at", "flow", "granted_at", "queue", "state", "waiter", "weight")

    def __init__(self, flow: str, weight: float) -> None:
        self.flow = flow
        self.weight = weight
        self.state = _QUEUED
        self.queue = -1
        self.enqueued_at: float | None = None
        self.granted_at: float | None = None
        self.waiter: object = None

    def __repr__(self) -> str:
        return f"Turn({self.flow!r}, weight={self.weight!r}, state={self.state.value})"


@final
@attrs.define(frozen=True, kw_only=True)
class FairQueueStats:
    """A snapshot of a `FairQueue` (or its `FairScheduler`).

    Attributes:
        limit: The concurrency limit now (fixed, or the adaptive limit).
        in_flight: Slots held now.
        queued: Requests waiting now, all flows together.
        flows_queued: Flows with at least one waiting request.
        deepest_flows: Up to ``top`` ``(flow, waiting requests)`` pairs, deepest first (bounded, so
            a stats call stays cheap with 100,000 tenants).
        queue_lengths: Waiting requests per shuffle-sharded queue.
        dispatched: Slots granted since creation (at once or after waiting).
        waited: Of those, the requests that had to queue first.
        wait_seconds: Total time granted requests spent queued.
        rejected: Requests refused because every queue of their hand was full (`QueueFull`).
        timed_out: Requests dropped after waiting past the timeout (`QueueTimeout`).
        cancelled: Requests cancelled while queued (or just after being granted).
    """

    limit: int
    in_flight: int
    queued: int
    flows_queued: int
    deepest_flows: tuple[tuple[str, int], ...]
    queue_lengths: tuple[int, ...]
    dispatched: int
    waited: int
    wait_seconds: float
    rejected: int
    timed_out: int
    cancelled: int


@final
class FairScheduler:
    """Shuffle-sharded fair queuing over a shared concurrency budget, without I/O.

    ```python
    from tenantlb.fairness import FairScheduler

    woken = []
    sched = FairScheduler(1, wake=woken.append)
    first = sched.submit("acme")              # granted at once
    queued = sched.submit("globex")           # waits
    sched.release(first)                      # the slot goes to globex: wake(queued)
    assert woken == [queued] and queued.state.value == "granted"
    ```

    Args:
        capacity: Slots shared by every flow: an int >= 1, or a `Capacity` (e.g.
            `AdaptiveConcurrency`) read at every decision and told each request's latency.
        queues: Shuffle-sharded queues (APF default 64).
        hand_size: Queues a flow may use (APF default 8), <= *queues*.
        queue_length: Waiting requests per queue (APF default 50).
        timeout: Seconds a request may wait; one found waiting longer when its turn comes is
            expired instead of granted. None waits forever.
        wake: Called with every queued `Turn` that is granted or expired, synchronously.
        clock: Time source for waits, timeouts and latencies.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: *capacity* < 1, *hand_size* > *queues*, a count < 1, *timeout* <= 0.
    """

    __slots__ = (
        "_bins",
        "_cancelled",
        "_capacity",
        "_clock",
        "_dispatched",
        "_fixed",
        "_flows",
        "_hand_size",
        "_hands",
        "_heavy",
        "_hold_ewma",
        "_in_flight",
        "_keys",
        "_lengths",
        "_queue_length",
        "_queued",
        "_rejected",
        "_seq",
        "_spare",
        "_streak",
        "_timed_out",
        "_timeout",
        "_vtimes",
        "_wait_seconds",
        "_waited",
        "_wake",
    )

    def __init__(
        self,
        capacity: int | Capacity,
        *,
        queues: int = 64,
        hand_size: int = 8,
        queue_length: int = 50,
        timeout: float | None = None,
        wake: Callable[[Turn], None] | None = None,
        clock: Clock = default_clock,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, Capacity)):
            msg = f"capacity must be an int or a Capacity (e.g. AdaptiveConcurrency), got {type(capacity).__name__}"
            raise FieldTypeError(msg, field="capacity")
        queues = count("queues", queues)
        hand_size = count("hand_size", hand_size)
        if hand_size > queues:
            msg = f"hand_size must be <= queues ({queues}), got {hand_size}"
            raise FieldValueError(msg, field="hand_size")
        if not callable(clock):
            msg = f"clock must be callable, got {type(clock).__name__}"
            raise FieldTypeError(msg, field="clock")
        if wake is not None and not callable(wake):
            msg = f"wake must be callable or None, got {type(wake).__name__}"
            raise FieldTypeError(msg, field="wake")
        self._fixed = count("capacity", capacity) if isinstance(capacity, int) else 0
        self._capacity = None if isinstance(capacity, int) else capacity
        self._hand_size = hand_size
        self._queue_length = count("queue_length", queue_length)
        self._timeout = None if timeout is None else seconds("timeout", timeout)
        self._wake = wake
        self._clock = clock
        self._lengths = [0] * queues
        self._flows: dict[str, _Flow] = {}
        self._hands: dict[str, tuple[int, ...]] = {}
        self._spare: list[_Flow] = []  # emptied flow records, reused: 10,000 flows cost no churn
        # A calendar queue of backlogged flows by tag: bin k holds flows tagged in [k, k + 1), in
        # arrival order; a heap of the occupied bins finds the earliest. Many flows share a bin, so
        # a decision is O(1) amortised however many flows wait (a heap of flows was O(log n)).
        # Per class (0 light, 1 heavy): bins of flows by tag, the heap of occupied bins, V.
        self._bins: tuple[dict[int, deque[tuple[int, _Flow]]], ...] = ({}, {})
        self._keys: tuple[list[int], ...] = ([], [])
        self._vtimes = [0.0, 0.0]
        self._heavy = 0  # heavy flows waiting (entries in the heavy calendar)
        self._streak = 0  # light dispatches in a row while heavy flows wait
        self._seq = 0
        self._in_flight = 0
        self._queued = 0
        self._hold_ewma = 0.0
        self._dispatched = self._waited = self._rejected = self._timed_out = self._cancelled = 0
        self._wait_seconds = 0.0

    def __repr__(self) -> str:
        return (
            f"FairScheduler(limit={self.limit}, in_flight={self._in_flight}, "
            f"queued={self._queued}, queues={len(self._lengths)}, hand_size={self._hand_size})"
        )

    @property
    def limit(self) -> int:
        """The concurrency limit now."""
        return self._fixed or self._current_limit()

    @property
    def in_flight(self) -> int:
        """Slots held now."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Requests waiting now."""
        return self._queued

    def submit(self, flow: str, weight: float = 1.0) -> Turn:
        """Ask for a slot for one request of *flow*.

        Returns:
            A `Turn`, already ``GRANTED`` when a slot was free and nobody waited, else ``QUEUED``
            (the *wake* callback reports when it is granted).

        Raises:
            QueueFull: Every queue of the flow's hand is full (503 with ``Retry-After``).
            TypeError, ValueError: *flow* is not a non-empty str, *weight* not a finite number > 0.
        """
        if (
            type(flow) is not str
            or not flow
            or (type(weight) is not float and type(weight) is not int)
            or not 0 < weight < math.inf
        ):
            check_request(flow, weight)
        turn = Turn(flow, weight)
        if not self._queued and self._in_flight < (self._fixed or self._current_limit()):
            turn.state = _GRANTED
            turn.granted_at = self._clock()
            self._in_flight += 1
            self._dispatched += 1
            return turn
        lengths = self._lengths
        best = -1
        shortest = self._queue_length
        hand = self._hands.get(flow)
        if hand is None:
            if len(self._hands) >= _HANDS_CACHED:
                self._hands.clear()  # cheaper than LRU bookkeeping on every request
            hand = self._hands[flow] = deal_hand(flow, len(lengths), self._hand_size)
        for index in hand:
            if lengths[index] < shortest:
                best, shortest = index, lengths[index]
        if best < 0:
            self._rejected += 1
            msg = f"every queue of flow {flow!r} is full ({self._queue_length} requests each)"
            raise QueueFull(msg, flow=flow, retry_after=self._retry_after())
        lengths[best] += 1
        self._queued += 1
        turn.queue = best
        turn.enqueued_at = self._clock()
        state = self._flows.get(flow)
        if state is None:
            if self._spare:
                state = self._spare.pop()
                state.name = flow
            else:
                state = _Flow(flow)
            self._flows[flow] = state
        state.turns.append(turn)
        state.live += 1
        if state.live == 1:
            # A flow that had nothing queued starts from the light class's virtual time: no
            # credit for having been idle.
            self._push(state, self._vtimes[0] + 1.0 / weight, 0)
        if self._in_flight < (self._fixed or self._current_limit()):
            self._dispatch()  # the limit grew since the last decision
        return turn

    def release(self, turn: Turn, *, record: bool = True) -> None:
        """Give back the slot of a granted *turn*, then grant freed slots to waiting requests.

        Never raises for a turn that is not held any more (released twice, or withdrawn), so it
        is safe in a ``finally``; a still-queued turn is withdrawn as by `cancel`.

        Args:
            turn: A turn from `submit`.
            record: Report the hold time to a `Capacity` (pass False for a failed request).
        """
        state = turn.state
        if state is _GRANTED:
            turn.state = TurnState.RELEASED
            self._in_flight -= 1
            granted_at = turn.granted_at
            if granted_at is not None:
                held = self._clock() - granted_at
                # EWMA of hold times, only to estimate Retry-After.
                self._hold_ewma += 0.1 * (held - self._hold_ewma)
                if record and self._capacity is not None:
                    self._capacity.record(max(held, 0.0))
            self._dispatch()
        elif state is _QUEUED:
            self.cancel(turn)

    def cancel(self, turn: Turn) -> None:
        """Withdraw *turn*: a queued turn leaves its queue; a granted one gives its slot to the
        next waiting request without reporting a latency (it was granted but never used).

        Safe to call in any state (idempotent) and from a ``finally``.
        """
        state = turn.state
        if state is _QUEUED:
            self._withdraw(turn)
            turn.state = TurnState.CANCELLED
            self._cancelled += 1
        elif state is _GRANTED:
            turn.state = TurnState.CANCELLED
            self._in_flight -= 1
            self._cancelled += 1
            self._dispatch()

    def expire(self, turn: Turn) -> QueueTimeout:
        """Withdraw a queued *turn* that waited too long; returns the `QueueTimeout` to raise.

        A turn that is not queued any more is left as it is (the error is still returned).
        """
        if turn.state is _QUEUED:
            self._withdraw(turn)
            turn.state = TurnState.EXPIRED
            self._timed_out += 1
        return self.timeout_error(turn)

    def timeout_error(self, turn: Turn) -> QueueTimeout:
        """The `QueueTimeout` for an expired *turn* (with a ``Retry-After`` estimate)."""
        msg = f"a request of flow {turn.flow!r} waited longer than the queue timeout"
        return QueueTimeout(msg, flow=turn.flow, retry_after=self._retry_after())

    def full_error(self, flow: str) -> QueueFull:
        """The error for a request refused without queuing (`FairQueue.acquire_nowait`)."""
        self._rejected += 1
        msg = (
            f"no free slot for flow {flow!r}: {self._in_flight} in flight of "
            f"{self.limit}, {self._queued} waiting"
        )
        return QueueFull(msg, flow=flow, retry_after=self._retry_after())

    def poll(self) -> None:
        """Grant slots if the limit grew on its own (an adaptive limit after a time step)."""
        if self._queued and self._in_flight < (self._fixed or self._current_limit()):
            self._dispatch()

    def stats(self, *, top: int = 10) -> FairQueueStats:
        """A `FairQueueStats` snapshot, listing at most *top* flows by queue depth."""
        top = count("top", top, minimum=0)
        deepest = heapq.nlargest(top, ((f.live, f.name) for f in self._flows.values()))
        return FairQueueStats(
            limit=self.limit,
            in_flight=self._in_flight,
            queued=self._queued,
            flows_queued=len(self._flows),
            deepest_flows=tuple((name, live) for live, name in deepest),
            queue_lengths=tuple(self._lengths),
            dispatched=self._dispatched,
            waited=self._waited,
            wait_seconds=self._wait_seconds,
            rejected=self._rejected,
            timed_out=self._timed_out,
            cancelled=self._cancelled,
        )

    # --- helpers -------------------------------------------------------------------------------

    def _current_limit(self) -> int:
        capacity = self._capacity
        return 1 if capacity is None else max(1, capacity.limit)

    def _push(self, state: _Flow, tag: float, cls: int) -> None:
        self._seq = seq = self._seq + 1
        state.seq = seq
        state.tag = tag
        state.cls = cls
        if cls:
            self._heavy += 1
        key = math.floor(tag)
        bins = self._bins[cls]
        bucket = bins.get(key)
        if bucket is None:
            bucket = bins[key] = deque()
            heapq.heappush(self._keys[cls], key)
        bucket.append((seq, state))

    def _withdraw(self, turn: Turn) -> None:
        self._lengths[turn.queue] -= 1
        self._queued -= 1
        state = self._flows[turn.flow]
        state.live -= 1
        if not state.live:
            # Forget the flow; its bin entry goes stale (seq -1) and is skipped when popped. A stale
            # entry may point at a reused record: its old seq never matches the new one.
            del self._flows[turn.flow]
            state.seq = -1
            self._heavy -= state.cls
            state.turns.clear()
            if len(self._spare) < 1024:
                self._spare.append(state)
            if not self._flows:
                for cls in (0, 1):
                    self._bins[cls].clear()
                    self._keys[cls].clear()
                self._heavy = self._streak = 0
        # Otherwise the withdrawn turn stays in its flow's deque and is skipped at dispatch.

    def _dispatch(self) -> None:
        light, heavy = self._keys
        spare = self._spare
        vtimes = self._vtimes
        heavy_at = self._queue_length
        limit = self._fixed or self._current_limit()
        wake = self._wake
        while self._in_flight < limit and (light or heavy):
            # Light flows first; heavy ones when no light flow waits, and at least once per
            # _FLOOR_ROUNDS rounds of the waiting flows (1/8 of their fair share) while they do.
            cls = 0
            if heavy:
                if not light or self._streak * self._heavy >= _FLOOR_ROUNDS * len(self._flows):
                    cls = 1
                    self._streak = 0
                else:
                    self._streak += 1
            keys = self._keys[cls]
            bins = self._bins[cls]
            key = keys[0]
            bucket = bins[key]
            seq, state = bucket.popleft()
            if not bucket:
                del bins[key]
                heapq.heappop(keys)
            if state.seq != seq:
                continue  # stale: the flow emptied (every request cancelled) since it was pushed
            self._heavy -= cls
            tag = state.tag
            turns = state.turns
            turn = turns.popleft()
            while turn.state is not _QUEUED:
                turn = turns.popleft()  # cancelled ones left behind; live > 0 guarantees one
            self._lengths[turn.queue] -= 1
            self._queued -= 1
            state.live -= 1
            if tag > vtimes[cls]:
                vtimes[cls] = tag
            if state.live:
                while turns[0].state is not _QUEUED:
                    turns.popleft()
                step = 1.0 / turns[0].weight
                # Heavy: more waiting than one queue holds (it spills over its hand, APF's own
                # sign of a flow over its share). A flow changing class joins the other at its V.
                now_cls = 1 if state.live > heavy_at else 0
                if now_cls == cls:
                    self._push(state, tag + step, cls)
                else:
                    self._push(state, max(tag, vtimes[now_cls]) + step, now_cls)
            else:
                del self._flows[state.name]
                state.seq = -1
                turns.clear()
                if len(spare) < 1024:
                    spare.append(state)  # reused for the next new flow: no allocation churn
            now = self._clock()
            enqueued = turn.enqueued_at if turn.enqueued_at is not None else now
            if self._timeout is not None and now - enqueued >= self._timeout:
                # Its client has given up by now (or is about to): shed it, keep the slot.
                turn.state = TurnState.EXPIRED
                self._timed_out += 1
            else:
                turn.state = _GRANTED
                turn.granted_at = now
                self._in_flight += 1
                self._dispatched += 1
                self._waited += 1
                self._wait_seconds += now - enqueued
            if wake is not None:
                wake(turn)
            limit = self._fixed or self._current_limit()

    def _retry_after(self) -> float:
        # Time to drain what waits now at the current limit, from the mean hold time; >= 1 s.
        limit = self._fixed or self._current_limit()
        return max(1.0, min(3600.0, self._hold_ewma * (self._queued + 1) / limit))


@final
class _Flow:
    """A flow with waiting requests: its FIFO of turns and its heap entry."""

    __slots__ = ("cls", "live", "name", "seq", "tag", "turns")

    def __init__(self, name: str) -> None:
        self.name = name
        self.turns: deque[Turn] = deque()
        self.live = 0  # turns still queued (withdrawn ones may linger in `turns`)
        self.seq = -1  # id of its live heap entry; -1 when it has none
        self.tag = 0.0  # virtual finish time of its head request
        self.cls = 0  # the class of its calendar entry: 0 light, 1 heavy


# Heavy flows get at least 1/_FLOOR_ROUNDS of their fair share while light flows keep the budget
# busy (never starved), and the rest of their share from what light flows leave. A guarantee near
# their whole share would load tenants at exactly their share to 100% again.
_FLOOR_ROUNDS = 8

_HANDS_CACHED = 65536  # flows whose hands a scheduler remembers


def check_request(flow: object, weight: object) -> None:
    """Raise TypeError / ValueError naming *flow* or *weight* if either is unusable."""
    if not isinstance(flow, str):
        msg = f"flow must be a str, got {type(flow).__name__}"
        raise FieldTypeError(msg, field="flow")
    if not flow:
        msg = "flow must be a non-empty str"
        raise FieldValueError(msg, field="flow")
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        msg = f"weight must be a number, got {type(weight).__name__}"
        raise FieldTypeError(msg, field="weight")
    if not 0 < weight < math.inf:
        msg = f"weight must be > 0 and finite, got {weight!r}"
        raise FieldValueError(msg, field="weight")
