"""The asyncio engine of `RedisStore`: calls pipelined per Redis node, on connections it holds.

With an asyncio client (``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``) each call goes
to the node that holds its key: the one server, or the master of the key's slot. Per node:

- A lone call (nothing queued or in flight on its node) is sent by its caller: one write of
  its packed command and one read on an idle connection, with no hand-over to a task. A caller
  cancelled there loses its call like any cancelled request, but the call's cleanup still runs
  (an admitted cost is refunded, a slot token removed) and redis-py drops the half-read
  connection. Releases and refunds never take this path.
- Otherwise calls queue, and a few flusher tasks, detached from every caller (no cancellation of
  a caller reaches them), write every queued call in one ``send_packed_command`` and read the
  replies in order: one round trip for all the decisions that arrived meanwhile. Each call is
  still its own atomic script.

Only redis-py's public API: a pool's ``get_connection``/``release`` (a cluster node's
``acquire_connection``/``release``), ``Connection.send_packed_command``/``read_response``,
``RedisCluster.get_node_from_key`` and ``execute_command``. Commands are packed here: a RESP
array of bulk strings, which every Redis reads (RESP2 or RESP3).

A node's failure fails only the calls sent to it. On a cluster the other masters' pipelines are
untouched, and for a second after a node failed, or when it answers ``MOVED``/``ASK``, its calls
go through the cluster client's own ``execute_command``, which follows redirects, refreshes the
slot map and finds a promoted replica.

Time is bounded without a timer per call: each call carries a deadline, a flusher refuses a
queued call whose deadline passed, and each round trip is bounded by the oldest deadline in it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from .._errors import StoreUnavailable
from ._redis_batch import (
    DONE,
    MAX_BATCH,
    QUEUED,
    SENT,
    SKIPPED,
    Call,
    LoopRef,
    StoreBusy,
    spawn,
)
from ._resp import pack

if TYPE_CHECKING:
    from ._redis_store import RedisStore

__all__ = ["AsyncBatcher"]

_HOLD_FROM: Final = 16  # keep idle connections only from a pool at least this large
_LINGER: Final = 1.0  # seconds an idle held connection stays before it goes back to the pool
_SUSPECT: Final = 1.0  # seconds a failed cluster node's calls go through the cluster client
_BUSY_RETRY: Final = 0.002  # seconds between tries when the pool has no free connection


class AsyncBatcher:
    """Sends one asyncio loop's calls to Redis for a `RedisStore` (see the module docstring)."""

    __slots__ = (
        "aloop",
        "client",
        "cluster",
        "idle",
        "initialized",
        "loop",
        "nodes",
        "running",
        "single",
        "store",
    )

    def __init__(self, store: RedisStore, loop: LoopRef, client: Any, *, cluster: bool) -> None:
        self.store = store
        self.loop = loop
        self.aloop = asyncio.get_running_loop()
        self.client = client
        self.cluster = cluster
        self.running = 0  # detached tasks at work (flushers, cluster-client calls)
        self.idle: asyncio.Event | None = None
        self.nodes: dict[str, Node] = {}
        self.single = None if cluster else Node(self, client.connection_pool, None)
        # redis-py's cluster client discovers the topology on first use; many tasks doing that
        # at once race on the startup connections, so the first call does it alone.
        self.initialized: asyncio.Event | None = None

    # -- callers ---------------------------------------------------------------------------------

    async def run(self, call: Call) -> Any:
        """Send *call* and wait for its reply (at most the store's timeout).

        Raises:
            StoreUnavailable: No answer in time, or Redis failed; `StoreBusy` when no connection
                was free in time while Redis was answering (back-pressure).
        """
        node = self.route(call)
        if node is not None and not call.must and node.quiet():
            return await node.direct(call)
        return await self.wait(node, call)

    def submit(self, call: Call) -> None:
        """Queue *call* without waiting for it (it is sent even if nobody waits)."""
        call.deadline = self.aloop.time() + self.store.timeout
        self.send(self.route(call), call)

    async def wait(self, node: Node | None, call: Call) -> Any:
        future = call.event = self.aloop.create_future()
        call.deadline = self.aloop.time() + self.store.timeout
        self.send(node, call)  # before the first await: a cancelled caller still hands it over
        try:
            await future
        except BaseException:
            self.leave(call)
            raise
        if call.state != DONE:  # woken by its deadline
            queued = call.state == QUEUED
            self.leave(call)
            raise self.late(queued) from None
        if call.error is not None:
            raise call.error
        return call.result

    def late(self, queued: bool) -> StoreUnavailable:
        """The error of a call whose deadline passed (busy if it never got a connection)."""
        store = self.store
        if queued and store.up:
            return store.busy("no connection free")
        return store.failed(TimeoutError(f"no answer within {store.timeout} s"))

    def leave(self, call: Call) -> None:
        call.left = True
        if call.state == QUEUED and not call.must:
            call.state = SKIPPED  # never sent: nothing to clean up
        elif call.state == DONE and call.error is None:
            call.run_cleanup(call.result)  # answered, but the caller is gone before reading it

    # -- routing ---------------------------------------------------------------------------------

    def route(self, call: Call) -> Node | None:
        """The node for *call*, or None: send it through the cluster client."""
        single = self.single
        if single is not None:
            return single
        try:
            cnode = self.client.get_node_from_key(call.first_key())
        except Exception:  # no slot map yet (or the slot is uncovered): the client finds out
            return None
        node = self.nodes.get(cnode.name)
        if node is None or node.cnode is not cnode:  # new, or a refreshed topology
            node = self.nodes[cnode.name] = Node(self, None, cnode)
        if node.suspect_until and node.suspect_until > self.aloop.time():
            return None
        return node

    def send(self, node: Node | None, call: Call) -> None:
        if node is None:
            self.via_client(call)
        else:
            node.enqueue(call)

    def failed(self, call: Call, error: StoreUnavailable) -> None:
        """Fail *call*; an idempotent one (*must*) is tried again in the background."""
        call.fail(error)
        if call.must:
            retry = Call(call.args, must=call.must)
            self.running += 1
            spawn(self.loop, self._retry, retry, self.aloop.time() + call.must)

    def reply_error(self, call: Call, exc: Exception) -> None:
        """A call answered with an error: a cluster redirect is retried through the client."""
        import redis.exceptions as rex

        if self.cluster and isinstance(exc, rex.AskError | rex.TryAgainError | rex.ClusterError):
            self.via_client(call)  # MOVED/ASK/TRYAGAIN/CLUSTERDOWN: redis-py knows what to do
            return
        self.failed(call, self.store.error(exc))

    async def _retry(self, call: Call, give_up_at: float) -> None:
        """Send an idempotent *call* again until it is answered or *give_up_at* has passed."""
        delay = 0.05
        try:
            while True:
                await asyncio.sleep(delay)
                if self.aloop.time() >= give_up_at:
                    return
                future = call.event = self.aloop.create_future()
                call.state, call.error, call.must = QUEUED, None, 0.0
                self.submit(call)
                await future
                if call.state == DONE and call.error is None:
                    return
                delay = min(1.0, delay * 2)
        finally:
            self.done()

    # -- a cluster: calls through the cluster client ----------------------------------------------

    def via_client(self, call: Call) -> None:
        """Run *call* alone through the cluster client (redirects, failover, first discovery)."""
        call.state = SENT
        future = call.event
        if isinstance(future, asyncio.Future) and not future.done():
            # No flusher watches this call's deadline: a timer wakes its caller.
            delay = max(0.0, call.deadline - self.aloop.time())
            self.aloop.call_later(delay, _expire, future)
        self.running += 1
        spawn(self.loop, self._via_client, call)

    async def _via_client(self, call: Call) -> None:
        store = self.store
        try:
            if self.initialized is None:
                self.initialized = asyncio.Event()
                try:
                    async with asyncio.timeout(store.timeout):
                        await self.client.initialize()
                except Exception as exc:
                    self.initialized.set()
                    self.initialized = None  # the next call tries again
                    self.failed(call, store.error(exc))
                    return
                self.initialized.set()
            elif not self.initialized.is_set():
                try:
                    async with asyncio.timeout(store.timeout):
                        await self.initialized.wait()
                except TimeoutError:
                    pass
            # The caller stops waiting at its deadline, but the call is not cancelled that early:
            # cancelling redis-py's cluster client while it rediscovers the topology (after a
            # node died) stalls the calls to healthy nodes. It gets a longer hard bound.
            deadline = self.aloop.time() + max(10.0, 5 * store.timeout)
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        result = await _one(self.client, call)
                except Exception as exc:
                    error = store.error(exc)
                    if isinstance(error, StoreBusy) and self.aloop.time() < deadline:
                        await asyncio.sleep(_BUSY_RETRY)
                        continue
                    self.failed(call, error)
                    return
                store.answered(1)
                call.finish(result)
                return
        finally:
            self.done()

    # -- the end -----------------------------------------------------------------------------------

    def done(self) -> None:
        self.running -= 1
        if not self.running and self.idle is not None:
            self.idle.set()

    def busy(self) -> bool:
        if self.running:
            return True
        nodes = [self.single] if self.single is not None else list(self.nodes.values())
        return any(node is not None and (node.pending or node.directs) for node in nodes)

    async def drain(self, within: float) -> None:
        """Wait (at most *within* seconds) until every call handed over was answered, then give
        the connections held back to the pool."""
        try:
            async with asyncio.timeout(within):
                while self.busy():
                    idle = self.idle = asyncio.Event()
                    if self.running:
                        await idle.wait()
                    else:
                        await asyncio.sleep(0.01)  # a caller's own call in flight
        except TimeoutError:
            pass
        if self.single is not None:
            await self.single.give_back()
        # A master that died (or moved) has left the cluster client's node table, whose
        # aclose() then never closes the connections this store made to it: close them here.
        for node in self.nodes.values():
            if node.cnode is not None:
                with contextlib.suppress(Exception):
                    await node.cnode.disconnect()


class Node:
    """One Redis server's share of a batcher: its queue, flushers and held connections."""

    __slots__ = (
        "batcher",
        "bound",
        "cnode",
        "directs",
        "flushers",
        "free",
        "hold",
        "last_use",
        "max_flushers",
        "pending",
        "pool",
        "reaper",
        "socket_timeout",
        "suspect_until",
    )

    def __init__(self, batcher: AsyncBatcher, pool: Any, cnode: Any) -> None:
        self.batcher = batcher
        self.pool = pool  # one server: the client's connection pool
        self.cnode = cnode  # a cluster: redis-py's ClusterNode (a pool of its own)
        self.pending: deque[Call] = deque()
        self.flushers = 0
        self.directs = 0  # callers sending their own call right now
        self.free: list[Any] = []  # idle connections held (one server, large pool)
        self.last_use = 0.0
        self.reaper: asyncio.TimerHandle | None = None
        self.suspect_until = 0.0
        options = getattr(cnode if cnode is not None else pool, "connection_kwargs", None) or {}
        # The connections' socket timeout, restored when they go back; it still bounds each
        # exchange (with the store's timeout), as the client's own calls would be bounded.
        self.socket_timeout: float | None = options.get("socket_timeout")
        self.bound = float(self.socket_timeout or "inf")
        size = getattr(cnode if cnode is not None else pool, "max_connections", None) or 8
        # A few pipelines in flight keep the server busy while the next batch accumulates;
        # never more than half the pool, so other users of the client get connections.
        self.max_flushers = max(1, min(4, int(size) // 2))
        # Holding idle connections saves the pool's checks per call; only from a large pool,
        # so the application never finds a small one emptied by the store.
        self.hold = cnode is None and int(size) >= _HOLD_FROM

    def quiet(self) -> bool:
        """Nothing queued or in flight, and a connection at hand: a caller may send its own."""
        if self.pending or self.flushers or self.directs:
            return False
        return bool(self.free) or self.cnode is not None

    # -- a caller's own call ----------------------------------------------------------------

    async def direct(self, call: Call) -> Any:
        batcher = self.batcher
        store = batcher.store
        self.directs += 1
        call.state = SENT
        conn = None
        results: list[Any] = []
        try:
            try:
                conn = self.free.pop() if self.free else self.own(self.cnode.acquire_connection())
                async with asyncio.timeout(min(store.timeout, self.bound)):
                    trips = await _exchange(conn, (call,), results)
            except Exception as exc:
                error = store.error(exc)
                if conn is None and isinstance(error, StoreBusy):
                    call.state = QUEUED  # the cluster node's pool is full: wait in the queue
                    return await batcher.wait(self, call)
                if self.cnode is not None:
                    self.suspect_until = batcher.aloop.time() + _SUSPECT
                call.fail(error)
                raise error from exc
            except BaseException:
                # Cancelled: redis-py has dropped the connection; clean up what Redis may have done.
                call.left = True
                if results and not isinstance(results[0], Exception):
                    call.finish(results[0])
                else:
                    call.fail(StoreUnavailable("the caller left before the answer"))
                raise
        finally:
            self.directs -= 1
            if conn is not None:
                self.give(conn)
        store.answered(trips)
        result = results[0]
        if isinstance(result, Exception):
            if batcher.cluster:  # a redirect: the cluster client follows it
                import redis.exceptions as rex

                if isinstance(result, rex.AskError | rex.TryAgainError | rex.ClusterError):
                    call.state = QUEUED
                    return await batcher.wait(None, call)
            error = store.error(result)
            call.fail(error)
            raise error from result
        call.state = DONE
        return result

    # -- queued calls ---------------------------------------------------------------------------

    def enqueue(self, call: Call) -> None:
        self.pending.append(call)
        if self.flushers < self.max_flushers:
            self.flushers += 1
            self.batcher.running += 1
            spawn(self.batcher.loop, self._flush)

    def _collect(self) -> list[Call]:
        """The next batch: queued calls still wanted, oldest first; expired ones refused."""
        batcher = self.batcher
        now = batcher.aloop.time()
        pending = self.pending
        batch: list[Call] = []
        while pending and len(batch) < MAX_BATCH:
            call = pending.popleft()
            if call.state != QUEUED:
                continue
            if call.deadline <= now and call.event is not None:
                if not call.must:
                    call.refuse(batcher.late(queued=True))
                    continue
                call.deadline = now + batcher.store.timeout  # a release is sent however late
            call.state = SENT
            batch.append(call)
        return batch

    async def _flush(self) -> None:
        batcher = self.batcher
        store = batcher.store
        conn = None
        try:
            while self.pending:
                batch = self._collect()
                if not batch:
                    continue
                deadline = min(call.deadline for call in batch)
                deadline = min(deadline, batcher.aloop.time() + self.bound)
                results: list[Any] = []
                try:
                    async with asyncio.timeout_at(deadline):
                        if conn is None:
                            conn = await self.take()
                        trips = await _exchange(conn, batch, results)
                except Exception as exc:
                    error = store.error(exc)
                    if isinstance(error, StoreBusy) and conn is None:
                        # The pool is full (others use the client too): not sent, try again soon.
                        for call in reversed(batch):
                            call.state = QUEUED
                            self.pending.appendleft(call)
                        await asyncio.sleep(_BUSY_RETRY)
                        continue
                    if self.cnode is not None:
                        self.suspect_until = batcher.aloop.time() + _SUSPECT
                    for i, call in enumerate(batch):
                        result = results[i] if i < len(results) else error
                        if isinstance(result, Exception):
                            batcher.failed(call, error)
                        else:
                            call.finish(result)  # answered before the connection failed
                    continue
                store.answered(trips)
                for call, result in zip(batch, results, strict=True):
                    if isinstance(result, Exception):
                        batcher.reply_error(call, result)
                    else:
                        call.finish(result)
        finally:
            self.flushers -= 1
            if conn is not None:
                self.give(conn)
            batcher.done()

    # -- connections ----------------------------------------------------------------------------

    async def take(self) -> Any:
        if self.free:
            return self.free.pop()
        if self.cnode is not None:
            return self.own(self.cnode.acquire_connection())
        return self.own(await self.pool.get_connection())

    def own(self, conn: Any) -> Any:
        """Hold *conn* (out of its pool): its socket timeout is ours until it goes back.

        Each exchange is bounded by the store's own deadline, so redis-py's per-operation
        socket timeout is switched off meanwhile: with it, every write runs in a task of its
        own (``asyncio.wait_for``), about half the client's CPU of a lone call.
        """
        self.socket_timeout = conn.socket_timeout
        conn.socket_timeout = None
        return conn

    def give(self, conn: Any) -> None:
        if self.cnode is not None:
            conn.socket_timeout = self.socket_timeout
            self.cnode.release(conn)
            return
        if self.hold and len(self.free) <= self.max_flushers:
            self.free.append(conn)
            loop = self.batcher.aloop
            self.last_use = loop.time()
            if self.reaper is None:
                self.reaper = loop.call_later(_LINGER, self._reap)
            return
        spawn(self.batcher.loop, self.release, conn)

    async def release(self, conn: Any) -> None:
        conn.socket_timeout = self.socket_timeout
        await self.pool.release(conn)

    def _reap(self) -> None:
        """Give idle held connections back to the pool after `_LINGER` seconds unused."""
        self.reaper = None
        if not self.free:
            return
        loop = self.batcher.aloop
        unused = loop.time() - self.last_use
        if unused < _LINGER:
            self.reaper = loop.call_later(_LINGER - unused, self._reap)
            return
        conns, self.free = self.free, []
        for conn in conns:
            spawn(self.batcher.loop, self.release, conn)

    async def give_back(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
            self.reaper = None
        conns, self.free = self.free, []
        for conn in conns:
            await self.release(conn)


async def _exchange(conn: Any, calls: Any, results: list[Any]) -> int:
    """Write *calls* on *conn* at once, read their replies in order into *results* (a redis
    error reply as its exception); return the round trips (two if scripts had to be loaded)."""
    import redis.exceptions as rex

    await conn.send_packed_command([call.wire() for call in calls], check_health=False)
    for _ in calls:
        try:
            results.append(await conn.read_response(disable_decoding=True))
        except rex.ResponseError as exc:
            results.append(exc)
    redo = [i for i, r in enumerate(results) if isinstance(r, rex.NoScriptError)]
    if not redo:
        return 1
    # EVAL caches the script on the server as it runs it: no separate SCRIPT LOAD.
    await conn.send_packed_command([pack(calls[i].eval_args()) for i in redo], check_health=False)
    for i in redo:
        try:
            results[i] = await conn.read_response(disable_decoding=True)
        except rex.ResponseError as exc:
            results[i] = exc
    return 2


async def _one(client: Any, call: Call) -> Any:
    import redis.exceptions as rex

    try:
        return await client.execute_command(*call.args, NEVER_DECODE=True)
    except rex.NoScriptError:
        return await client.execute_command(*call.eval_args(), NEVER_DECODE=True)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
