"""`FairQueue`: anyio tasks wait their turn for a shared concurrency budget, fairly across flows.

The decisions are `FairScheduler`'s (sans-I/O); this module only parks each waiting task on an
`anyio.Event` and makes the accounting exact under cancellation: every path out of a wait or a
held slot runs synchronous scheduler calls in ``except``/``finally`` blocks that never await, so
asyncio's ``task.cancel()`` (``wait_for``) and trio's cancel scopes cannot interrupt them.
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any, final

import anyio
import anyio.lowlevel

from .._clock import Clock, default_clock
from .._errors import QueueTimeout
from ._scheduler import Capacity, FairQueueStats, FairScheduler, Turn, TurnState, check_request

__all__ = ["FairQueue"]

_GRANTED = TurnState.GRANTED
_QUEUED = TurnState.QUEUED


@final
class FairQueue:
    """A concurrency budget shared by flows (tenants), with fair queuing when it is exhausted.

    ```python
    import anyio
    import tenantlb as tlb

    fq = tlb.FairQueue(2, timeout=5.0)

    async def handle(tenant: str) -> None:
        async with fq.acquire(tenant, weight=1.0):   # waits for its fair turn
            await anyio.sleep(0.01)                  # ... call the upstream

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(handle, "noisy" if i < 8 else "quiet")
        assert fq.stats().in_flight == 0

    anyio.run(main)
    ```

    While a slot is free and nobody waits, `acquire` takes it at once. Otherwise the request
    joins the shortest of its flow's ``hand_size`` shuffle-sharded queues (out of ``queues``,
    Kubernetes APF's defaults 64 and 8, ``queue_length`` 50 each) and each freed slot goes to the
    flow with the smallest virtual finish time, so backlogged flows share the budget in proportion
    to their weights; a flow with more requests waiting than one queue holds (a tenant far over
    its share) goes after the others, with at least 1/8 of its fair share guaranteed. A tenant
    sending ten times its share then barely moves the others' latency and still gets the capacity
    they leave. See `FairScheduler` for the algorithm.

    Every refusal is a `RequestRejected` with status 503 and ``Retry-After``: `QueueFull` when the
    flow's queues are full, `QueueTimeout` after waiting *timeout* seconds. A cancelled waiter
    leaves its queue; a slot granted to a task cancelled at that moment goes to the next waiter;
    a finished holder always frees its slot.

    Args:
        capacity: Slots in flight, all flows together: an int >= 1, or a `Capacity` such as
            `AdaptiveConcurrency`, read at every decision and told each request's latency.
        queues: Shuffle-sharded queues (default 64).
        hand_size: Queues one flow may use (default 8), <= *queues*.
        queue_length: Waiting requests per queue (default 50).
        timeout: Seconds a request may wait for its turn (None: no limit).
        clock: Time source for waits, timeouts and latencies (`tenantlb.testing.ManualClock`
            in tests). The *timeout* also runs on the event loop's clock.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: *capacity* < 1, *hand_size* > *queues*, *queues*/*queue_length* < 1,
            *timeout* <= 0.
    """

    __slots__ = ("_scheduler", "_timeout")

    def __init__(
        self,
        capacity: int | Capacity,
        *,
        queues: int = 64,
        hand_size: int = 8,
        queue_length: int = 50,
        timeout: float | None = None,
        clock: Clock = default_clock,
    ) -> None:
        self._scheduler = FairScheduler(
            capacity,
            queues=queues,
            hand_size=hand_size,
            queue_length=queue_length,
            timeout=timeout,
            wake=_wake,
            clock=clock,
        )
        self._timeout = None if timeout is None else float(timeout)

    def __repr__(self) -> str:
        s = self._scheduler
        return f"FairQueue(limit={s.limit}, in_flight={s.in_flight}, queued={s.queued})"

    @property
    def scheduler(self) -> FairScheduler:
        """The sans-I/O `FairScheduler` making the decisions."""
        return self._scheduler

    def acquire(self, flow: str, weight: float = 1.0) -> _Acquire:
        """Hold a slot for the ``async with`` block, waiting for *flow*'s fair turn.

        ``async with fq.acquire(flow) as turn:`` yields the granted `Turn`. The slot is freed
        when the block exits by any path, and the hold time is reported to an adaptive capacity
        unless the block raised. Where a block does not fit (a slot held across callbacks),
        ``turn = await fq.acquire(flow)`` waits the same way and `release` gives it back: call
        it in a ``finally``.

        Args:
            flow: The flow (usually the tenant id), a non-empty str.
            weight: The flow's relative share when queues are contended (> 0, default 1).

        Raises:
            QueueFull: Every queue of the flow's hand is full (503 with ``Retry-After``).
            QueueTimeout: The request waited longer than *timeout* (503 with ``Retry-After``).
            TypeError, ValueError: Bad *flow* or *weight* (raised on entering the block).
        """
        return _Acquire(self._scheduler, self._timeout, flow, weight)

    def acquire_nowait(self, flow: str, weight: float = 1.0) -> Turn:
        """Take a slot at once (sync), without queuing; give it back with `release`.

        Raises:
            QueueFull: No slot is free, or other requests are waiting for one (503).
            TypeError, ValueError: Bad *flow* or *weight*.
        """
        scheduler = self._scheduler
        if scheduler.queued or scheduler.in_flight >= scheduler.limit:
            check_request(flow, weight)
            raise scheduler.full_error(flow)
        return scheduler.submit(flow, weight)

    def release(self, turn: Turn, *, record: bool = True) -> None:
        """Give back the slot of *turn* (from `acquire_nowait`); harmless if already given back.

        Args:
            turn: The granted turn.
            record: Report its hold time to an adaptive capacity (False for a failed request).
        """
        self._scheduler.release(turn, record=record)

    def stats(self, *, top: int = 10) -> FairQueueStats:
        """A frozen `FairQueueStats` snapshot (at most *top* flows listed by queue depth)."""
        return self._scheduler.stats(top=top)


@final
class _Acquire:
    """The ``async with`` of `FairQueue.acquire` (a class, not a generator: it is on every request)."""

    __slots__ = ("_flow", "_scheduler", "_timeout", "_turn", "_weight")

    def __init__(
        self, scheduler: FairScheduler, timeout: float | None, flow: str, weight: float
    ) -> None:
        self._scheduler = scheduler
        self._timeout = timeout
        self._flow = flow
        self._weight = weight
        self._turn: Turn | None = None

    async def __aenter__(self) -> Turn:
        if self._turn is not None:
            msg = "this acquire() context manager was already entered; call acquire() again"
            raise RuntimeError(msg)
        scheduler = self._scheduler
        turn = scheduler.submit(self._flow, self._weight)
        if turn.state is _GRANTED:
            try:
                await anyio.lowlevel.checkpoint()  # acquiring is a checkpoint, as with Semaphore
            except BaseException:
                scheduler.cancel(turn)
                raise
        else:
            event = anyio.Event()
            turn.waiter = event
            try:
                if self._timeout is None:
                    await event.wait()
                else:
                    with anyio.move_on_after(self._timeout):
                        await event.wait()
            except BaseException:
                # Cancelled: leave the queue, or hand on a slot granted at this very moment.
                scheduler.cancel(turn)
                raise
            if turn.state is not _GRANTED:
                raise _timed_out(scheduler, turn)
        self._turn = turn
        return turn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        turn = self._turn
        if turn is not None:
            self._scheduler.release(turn, record=exc_type is None)

    def __await__(self) -> Generator[Any, None, Turn]:
        return self.__aenter__().__await__()


def _wake(turn: Turn) -> None:
    event = turn.waiter
    if isinstance(event, anyio.Event):
        event.set()


def _timed_out(scheduler: FairScheduler, turn: Turn) -> QueueTimeout:
    # Either our timer fired while it still waited (withdraw it now), or the scheduler shed it.
    if turn.state is _QUEUED:
        return scheduler.expire(turn)
    return scheduler.timeout_error(turn)
