"""Calls to Redis for `RedisStore`, and the engine for sync clients (worker threads).

A `Call` is one command (usually a script) with its reply or error and a *cleanup* that undoes
what Redis did when the caller left before the answer (a slot token removed, a cost refunded).
With an asyncio client the calls go through `tenantlb.ratelimit._redis_pipe`; with a sync client
(trio, or a store given only ``redis.Redis``) a `Batcher` runs them in worker threads:

- On one server, calls queue and a few flusher tasks send them as pipelines (``transaction=False``,
  redis-py's public pipeline API): one round trip carries every decision that arrived meanwhile.
  Each call is still its own atomic script.
- On a cluster, the same per master: each master's calls queue in its own lane and go out as
  pipelines on that master's own client (``RedisCluster.get_redis_connection``), in the lane's own
  worker threads, so a dead master fails and delays only the tenants it holds. A call answered
  with ``MOVED``/``ASK``, and for a second every call to a master that just failed, goes through
  the cluster client itself, which follows redirects, refreshes its slot map and finds failovers.

The flushers are *detached* tasks (an asyncio task kept by a strong reference, or a trio system
task), so a caller that is cancelled (``asyncio.wait_for``, a trio cancel scope) cannot stop a
release or refund it handed over, and calls that succeed after their caller left are cleaned up.
Every flush is bounded by the store's timeout; a caller waits at most that long.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio

from .._errors import StoreUnavailable
from ._resp import pack

if TYPE_CHECKING:
    from ._redis_store import RedisStore

__all__ = [
    "Batcher",
    "Call",
    "MAX_BATCH",
    "LoopRef",
    "Script",
    "StoreBusy",
    "current_loop",
    "next_batch",
    "spawn",
]

logger = logging.getLogger("tenantlb.ratelimit")

QUEUED: Final = 0
SENT: Final = 1
DONE: Final = 2
SKIPPED: Final = 3

MAX_BATCH: Final = 512
_LANE_FLUSHERS: Final = 2  # pipelines in flight per cluster master (sync client)
_TASKS: set[asyncio.Task[Any]] = set()  # strong references: the loop keeps only weak ones
_SOURCES: dict[str, str] = {}  # script sources by sha, for EVAL after a NOSCRIPT answer


class StoreBusy(StoreUnavailable):
    """No connection of the client's pool was free within the decision's timeout (back-pressure)."""


class Script:
    """A Lua script run with EVALSHA (EVAL when the server has not cached it yet)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        _SOURCES[self.sha] = source


class Call:
    """One command for Redis and, once answered, its reply or error.

    Args:
        args: The command, e.g. ``("ZREM", key, token)``; or the keys and arguments of *script*.
        script: Run *args* (``keys``, ``argv``) with this script.
        nkeys: How many of *args* are keys (with a script).
        cleanup: Called with the reply when it arrives after the caller left, or with None
            when the call failed (the caller may not know whether Redis ran it).
        must: An idempotent call (a release) that is retried in the background after a failure,
            until *must* seconds have passed.
        packed: The same command already packed (`pack`), when the caller keeps parts ready.
    """

    __slots__ = (
        "args",
        "cleanup",
        "deadline",
        "error",
        "event",
        "left",
        "must",
        "packed",
        "result",
        "state",
    )

    def __init__(
        self,
        args: Sequence[Any],
        script: Script | None = None,
        nkeys: int = 0,
        *,
        cleanup: Callable[[Any], None] | None = None,
        must: float = 0.0,
        packed: bytes | None = None,
    ) -> None:
        if script is not None:
            args = ("EVALSHA", script.sha, nkeys, *args)
        self.args: tuple[Any, ...] = tuple(args)
        self.packed = packed  # the command as sent on a connection, if built already (`wire`)
        self.deadline = 0.0  # when its caller stops waiting (loop time; asyncio engine)
        self.cleanup = cleanup
        self.must = must
        self.state = QUEUED
        self.left = False  # the caller stopped waiting (cancelled or timed out)
        self.result: Any = None
        self.error: StoreUnavailable | None = None
        # What the waiter waits on: a loop future under asyncio (cheapest), else an anyio.Event.
        self.event: asyncio.Future[None] | anyio.Event | None = None

    def wire(self) -> bytes:
        """The command packed for the wire (once)."""
        packed = self.packed
        if packed is None:
            packed = self.packed = pack(self.args)
        return packed

    def first_key(self) -> Any:
        """The key that decides which cluster node runs the call."""
        return self.args[3] if self.args[0] == "EVALSHA" else self.args[1]

    def eval_args(self) -> tuple[Any, ...]:
        """The same call as EVAL with the script's source (after a NOSCRIPT answer)."""
        sha = self.args[1]
        return ("EVAL", _SOURCES[sha], *self.args[2:])

    def finish(self, result: Any) -> None:
        if self.state == DONE:
            return
        self.state, self.result = DONE, result
        if self.left:
            self._cleanup(result)
        else:
            self._wake()

    def fail(self, error: StoreUnavailable) -> None:
        if self.state == DONE:
            return
        self.state, self.error = DONE, error
        self._cleanup(None)
        self._wake()

    def refuse(self, error: StoreUnavailable) -> None:
        """Give up on a call that was never sent: its caller gets *error*, nothing to clean up."""
        self.state, self.error = DONE, error
        self._wake()

    def _wake(self) -> None:
        event = self.event
        if event is None:
            return
        if isinstance(event, asyncio.Future):
            if not event.done():  # done: the waiter was cancelled or timed out
                event.set_result(None)
        else:
            event.set()

    def run_cleanup(self, result: Any) -> None:
        """Undo what the call did (its caller left after Redis answered *result*)."""
        self._cleanup(result)

    def _cleanup(self, result: Any) -> None:
        cleanup, self.cleanup = self.cleanup, None
        if cleanup is not None:
            try:
                cleanup(result)
            except Exception:  # pragma: no cover - a cleanup only queues another call
                logger.exception("RedisStore cleanup failed")


class LoopRef:
    """The running event loop (asyncio loop or trio run), hashable, held weakly."""

    __slots__ = ("_id", "_ref", "kind")

    def __init__(self, kind: str, loop: object) -> None:
        self.kind = kind
        self._ref = weakref.ref(loop)
        self._id = id(loop)

    def __hash__(self) -> int:
        return self._id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LoopRef) and other._id == self._id and other._ref() is self._ref()

    def get(self) -> object:
        """The loop object (None once it is gone)."""
        return self._ref()

    def alive(self) -> bool:
        loop = self._ref()
        if loop is None:
            return False
        return not (self.kind == "asyncio" and loop.is_closed())  # type: ignore[attr-defined]


def current_loop() -> LoopRef:
    """The running loop: asyncio's, or trio's root task (anyio runs on one of the two)."""
    try:
        return LoopRef("asyncio", asyncio.get_running_loop())
    except RuntimeError:
        import trio

        return LoopRef("trio", trio.lowlevel.current_root_task())


def spawn(loop: LoopRef, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run ``fn(*args)`` in a task no caller's cancellation reaches (ended only with the loop)."""
    if loop.kind == "asyncio":
        task = asyncio.get_running_loop().create_task(_guarded(fn, *args))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
    else:
        import trio

        trio.lowlevel.spawn_system_task(_guarded, fn, *args)


async def _guarded(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    # A trio system task that raises crashes the whole run: log instead.
    try:
        await fn(*args)
    except Exception:  # pragma: no cover - the batcher maps every error itself
        logger.exception("RedisStore background task failed")


class Batcher:
    """Sends one event loop's calls to Redis for a `RedisStore` (see the module docstring)."""

    __slots__ = (
        "client",
        "cluster",
        "flushers",
        "idle",
        "lanes",
        "loop",
        "max_flushers",
        "pending",
        "store",
    )

    def __init__(self, store: RedisStore, loop: LoopRef, client: Any, *, cluster: bool) -> None:
        self.store = store
        self.loop = loop
        self.client = client  # a sync client: calls run in worker threads
        self.cluster = cluster
        self.pending: deque[Call] = deque()
        self.flushers = 0  # flusher tasks (one server) or calls in flight (cluster)
        self.idle: anyio.Event | None = None
        self.lanes: dict[str, _Lane] = {}
        # A few pipelines in flight keep the server busy while the next batch accumulates;
        # never more than half the client's pool, so other users of the client get connections.
        pool = getattr(client, "connection_pool", None)
        max_connections = getattr(pool, "max_connections", None) or 8
        self.max_flushers = max(1, min(4, int(max_connections) // 2))

    def submit(self, call: Call) -> None:
        """Queue *call* (it is sent even if nobody waits for it)."""
        if self.cluster:
            lane = self._lane(call)
            if lane.client is None or lane.suspect_until > time.monotonic():
                self._via_client(call)
                return
            lane.pending.append(call)
            if lane.flushers < _LANE_FLUSHERS:
                lane.flushers += 1
                self.flushers += 1
                spawn(self.loop, self._flush_lane, lane)
            return
        self.pending.append(call)
        if self.flushers < self.max_flushers:
            self.flushers += 1
            spawn(self.loop, self._flush)

    async def run(self, call: Call) -> Any:
        """Submit *call* and wait for its reply, at most the store's timeout.

        Raises:
            StoreUnavailable: No answer in time, or Redis failed; `StoreBusy` if the call
                could not even be sent in time while Redis was answering (back-pressure).
        """
        return await self._wait(call)

    async def _wait(self, call: Call) -> Any:
        if self.loop.kind == "asyncio":
            loop = asyncio.get_running_loop()
            future = call.event = loop.create_future()
            self.submit(call)  # before the first await: a cancelled caller still hands it over
            timer = loop.call_later(self.store.timeout, _expire, future)
            try:
                await future
            except BaseException:
                self._leave(call)
                raise
            finally:
                timer.cancel()
        else:
            event = call.event = anyio.Event()
            self.submit(call)  # before the first checkpoint, as above
            try:
                with anyio.move_on_after(self.store.timeout):
                    await event.wait()
            except BaseException:
                self._leave(call)
                raise
        if call.state != DONE:
            queued = call.state == QUEUED
            self._leave(call)
            if queued and self.store.up:
                why = "no connection free"
                raise self.store.busy(why)
            late = TimeoutError(f"no answer within {self.store.timeout} s")
            raise self.store.failed(late) from None
        if call.error is not None:
            raise call.error
        return call.result

    def _leave(self, call: Call) -> None:
        call.left = True
        if call.state == QUEUED and not call.must:
            call.state = SKIPPED  # never sent: nothing to clean up
        elif call.state == DONE and call.error is None:
            call.run_cleanup(call.result)  # answered, but the caller is gone before reading it

    async def drain(self, within: float) -> None:
        """Wait (at most *within* seconds) until every call handed over was answered."""
        with anyio.move_on_after(within):
            while self.pending or self.flushers:
                idle = self.idle = anyio.Event()
                await idle.wait()

    def _done(self) -> None:
        self.flushers -= 1
        if not self.flushers and self.idle is not None:
            self.idle.set()

    # -- one server: pipelines ----------------------------------------------------------------

    async def _flush(self) -> None:
        try:
            pending = self.pending
            while pending:
                batch = next_batch(pending)
                if batch:
                    await self._send(batch)
        finally:
            self._done()

    async def _send(self, batch: list[Call]) -> None:
        store = self.store
        try:
            with store.mapped(), anyio.fail_after(store.timeout):
                results, trips = await anyio.to_thread.run_sync(
                    _pipeline_sync, self.client, batch, abandon_on_cancel=True
                )
        except StoreBusy:
            # Our own pool is full (others use the client too): not sent, so try again soon.
            for call in reversed(batch):
                call.state = QUEUED
                if not call.left or call.must:
                    self.pending.appendleft(call)
            await anyio.sleep(0.002)
            return
        except StoreUnavailable as error:
            for call in batch:
                self._failed(call, error)
            return
        store.answered(trips)
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                try:
                    with store.mapped():
                        raise result
                except StoreUnavailable as error:
                    self._failed(call, error)
            else:
                call.finish(result)

    def _failed(self, call: Call, error: StoreUnavailable) -> None:
        call.fail(error)
        if call.must:
            retry = Call(call.args, must=call.must)
            spawn(self.loop, self._retry, retry, time.monotonic() + call.must, 0.05)

    async def _retry(self, call: Call, give_up_at: float, delay: float) -> None:
        """Send an idempotent *call* again until it is answered or *give_up_at* has passed."""
        while True:
            await anyio.sleep(delay)
            if time.monotonic() >= give_up_at:
                return
            call.event = anyio.Event()
            call.state, call.error, call.must = QUEUED, None, 0.0
            self.submit(call)
            await call.event.wait()
            if call.error is None:
                return
            delay = min(1.0, delay * 2)

    # -- a cluster: pipelines per master, redirects through the cluster client ------------------

    def _lane(self, call: Call) -> _Lane:
        """The lane of the master holding *call*'s key (its queue, client and worker threads).

        One lane per node: a dead node's calls fill only its own lane's threads, never the
        threads the other nodes' tenants need.
        """
        try:
            node = self.client.get_node_from_key(call.first_key())
        except Exception:  # no slot map yet (or an uncovered slot): the cluster client decides
            node = None
        name = "" if node is None else node.name
        lane = self.lanes.get(name)
        if lane is None:
            client = None if node is None else self.client.get_redis_connection(node)
            lane = self.lanes[name] = _Lane(client)
        return lane

    def _via_client(self, call: Call) -> None:
        call.state = SENT
        self.flushers += 1
        spawn(self.loop, self._one, call)

    async def _flush_lane(self, lane: _Lane) -> None:
        store = self.store
        try:
            pending = lane.pending
            while pending:
                batch = next_batch(pending)
                if not batch:
                    continue
                try:
                    with store.mapped(), anyio.fail_after(store.timeout):
                        results, trips = await anyio.to_thread.run_sync(
                            _pipeline_sync,
                            lane.client,
                            batch,
                            abandon_on_cancel=True,
                            limiter=lane.limiter,
                        )
                except StoreBusy:
                    for call in reversed(batch):
                        call.state = QUEUED
                        if not call.left or call.must:
                            pending.appendleft(call)
                    await anyio.sleep(0.002)
                    continue
                except StoreUnavailable as error:
                    # This master failed: for a while its calls go through the cluster client,
                    # which notices a failover and refreshes the slot map.
                    lane.suspect_until = time.monotonic() + 1.0
                    for call in batch:
                        self._failed(call, error)
                    continue
                store.answered(trips)
                for call, result in zip(batch, results, strict=True):
                    if isinstance(result, _redirects()):
                        self._via_client(call)  # MOVED/ASK/TRYAGAIN/CLUSTERDOWN
                    elif isinstance(result, Exception):
                        self._failed(call, store.error(result))
                    else:
                        call.finish(result)
        finally:
            lane.flushers -= 1
            self._done()

    async def _one(self, call: Call) -> None:
        try:
            await self._one_call(call)
        finally:
            self._done()

    async def _one_call(self, call: Call) -> None:
        store = self.store
        # The caller stops waiting after the store's timeout. The call itself is not cancelled
        # that early: cancelling redis-py's cluster client while it rediscovers the topology
        # (after a node died) stalls the calls to healthy nodes. It gets a longer hard bound.
        deadline = time.monotonic() + max(10.0, 5 * store.timeout)
        while True:
            try:
                with store.mapped(), anyio.fail_after(max(0.0, deadline - time.monotonic())):
                    result = await anyio.to_thread.run_sync(
                        _one_sync,
                        self.client,
                        call,
                        abandon_on_cancel=True,
                        limiter=self._lane(call).limiter,
                    )
            except StoreBusy as busy:
                if time.monotonic() < deadline:
                    await anyio.sleep(0.002)
                    continue
                self._failed(call, busy)
                return
            except StoreUnavailable as error:
                self._failed(call, error)
                return
            store.answered(1)
            call.finish(result)
            return


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Lane:
    """One cluster master's share of a sync `Batcher`."""

    __slots__ = ("client", "flushers", "limiter", "pending", "suspect_until")

    def __init__(self, client: Any) -> None:
        self.client = client  # the master's own redis.Redis (None: through the cluster client)
        self.pending: deque[Call] = deque()
        self.flushers = 0
        self.limiter = anyio.CapacityLimiter(16)
        self.suspect_until = 0.0


def _redirects() -> tuple[type[Exception], ...]:
    import redis.exceptions as rex

    return (rex.AskError, rex.TryAgainError, rex.ClusterError)


def _pipeline_sync(client: Any, batch: list[Call]) -> tuple[list[Any], int]:
    """Send *batch* in one round trip (in a worker thread); a second one reloads scripts."""
    import redis.exceptions

    pipe = client.pipeline(transaction=False)
    for call in batch:
        pipe.execute_command(*call.args, NEVER_DECODE=True)
    results = pipe.execute(raise_on_error=False)
    redo = [i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)]
    if not redo:
        return results, 1
    pipe = client.pipeline(transaction=False)
    for i in redo:
        pipe.execute_command(*batch[i].eval_args(), NEVER_DECODE=True)
    for i, result in zip(redo, pipe.execute(raise_on_error=False), strict=True):
        results[i] = result
    return results, 2


def _one_sync(client: Any, call: Call) -> Any:
    import redis.exceptions

    try:
        return client.execute_command(*call.args, NEVER_DECODE=True)
    except redis.exceptions.NoScriptError:
        return client.execute_command(*call.eval_args(), NEVER_DECODE=True)


def next_batch(pending: deque[Call]) -> list[Call]:
    """Take up to `MAX_BATCH` calls still queued from *pending*, oldest first, marked sent."""
    batch: list[Call] = []
    while pending and len(batch) < MAX_BATCH:
        call = pending.popleft()
        if call.state == QUEUED:
            call.state = SENT
            batch.append(call)
    return batch
