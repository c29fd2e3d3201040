"""`RedisStore`: rate-limit and concurrency state shared by many processes through Redis.

Each decision is one Lua script (see `tenantlb.ratelimit._lua`) run atomically on the node that
holds the tenant's keys: the script reads Redis' own clock (``TIME``), checks every rate of a
limiter and writes with a TTL, so idle keys vanish. Keys look like
``tenantlb:{acme}:rl:gcra:100.0/1.0/20.0``; the ``{acme}`` hash tag keeps one tenant's keys in one
Redis Cluster slot.

Concurrent decisions from one process are coalesced: with an asyncio client they share
pipelined round trips per Redis node (`tenantlb.ratelimit._redis_pipe`; on a cluster, per master),
with a sync client pipelines run in worker threads (`tenantlb.ratelimit._redis_batch`), and a
decision waits at most *timeout* seconds. The store speaks only redis-py's public API (pooled
connections' ``send_packed_command``/``read_response``, pipelines, ``execute_command``,
``get_node_from_key``, its exception types), so it works with ``redis.asyncio.Redis``,
``redis.asyncio.RedisCluster``, ``redis.Redis`` and ``redis.RedisCluster`` (Valkey too).

What counts as an outage: Redis did not answer (refused, reset, timed out, garbage). Then the
store follows *on_error* and never leaks a redis exception. Waiting for a free connection of the
client's own pool is back-pressure, not an outage: bounded by *timeout* too, it never triggers
*on_error* (the decision raises `StoreUnavailable` saying the store is busy).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Literal, final

import anyio
import attrs

from .._errors import StoreUnavailable
from .._events import Event, EventHandler, emit
from . import _lua
from ._algorithms import Algorithm
from ._memory import MemoryStore
from ._redis_batch import Batcher, Call, LoopRef, Script, StoreBusy, current_loop
from ._redis_pipe import AsyncBatcher
from ._store import ConcurrencyBackend, ConcurrencySpec, RateBackend, RateSpec

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["RedisStore", "RedisStoreStats"]

logger = logging.getLogger("tenantlb.ratelimit")

OnError = Literal["fail_closed", "fail_open"] | MemoryStore


@attrs.define(frozen=True, kw_only=True)
class RedisStoreStats:
    """A snapshot of a `RedisStore`'s health.

    Attributes:
        available: False from a failed call until the next successful one.
        outages: How many times Redis went from answering to failing.
        errors: Failed calls in total.
        fallback_decisions: Decisions made by the *on_error* policy instead of Redis.
        busy: Decisions refused because no connection was free within *timeout*
            (back-pressure from the client's own pool; not an outage).
        round_trips: Round trips sent (a pipeline of coalesced decisions counts once).
    """

    available: bool
    outages: int
    errors: int
    fallback_decisions: int
    busy: int = 0
    round_trips: int = 0


@final
class RedisStore:
    """Keeps limiter state in Redis so that many processes share one quota per key.

    ```python
    import redis.asyncio
    import tenantlb as tlb

    client = redis.asyncio.Redis.from_url("redis://localhost:6379/0")   # or RedisCluster
    store = tlb.RedisStore(client, on_error="fail_open", timeout=0.5)
    limiter = tlb.RateLimiter(tlb.Rate(100, per=1.0), store=store)
    # decision = await limiter.acquire("acme")
    ```

    Args:
        client: A ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster`` (asyncio), or a sync
            ``redis.Redis`` / ``redis.RedisCluster`` (sync calls; async calls and trio run it in
            worker threads). Valkey works through the same clients.
        sync_client: A sync client for sync callers (``limiter.acquire_nowait``) and trio, when
            *client* is an asyncio one.
        prefix: The first part of every key (no ``{`` or ``}``).
        on_error: What to do when Redis does not answer: ``"fail_closed"`` (default) raises
            `StoreUnavailable`; ``"fail_open"`` admits every request; a `MemoryStore` decides
            locally (per process) until Redis is back.
        timeout: Seconds a decision may take, queueing and waiting for a connection included
            (> 0). The store bounds it itself, so a client with redis-py's default retries
            cannot stall requests; give sync clients a ``socket_timeout`` and no retries for
            sync calls.

    Raises:
        TypeError: *client* is not a redis-py client, *on_error* of the wrong type.
        ValueError: *prefix* is empty or holds a brace, *on_error* an unknown name, *timeout* <= 0.
    """

    __slots__ = (
        "_async",
        "_batchers",
        "_busy",
        "_errors",
        "_fallback",
        "_fallbacks",
        "_handlers",
        "_last",
        "_lock",
        "_on_error",
        "_outages",
        "_prefix",
        "_round_trips",
        "_scripts",
        "_sync",
        "_timeout",
        "_up",
        "_warned",
        "_warned_at",
        "cluster",
        "sync_cluster",
    )

    in_process: ClassVar[bool] = False  # see Store: every decision is a round trip

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster | redis.Redis | redis.RedisCluster,
        *,
        sync_client: redis.Redis | redis.RedisCluster | None = None,
        prefix: str = "tenantlb",
        on_error: OnError = "fail_closed",
        timeout: float = 1.0,
    ) -> None:
        import redis as redis_sync
        import redis.asyncio as redis_async

        self._async: Any = None
        self._sync: Any = None
        self.cluster = False
        self.sync_cluster = False
        if isinstance(client, redis_async.Redis | redis_async.RedisCluster):
            self._async = client
            self.cluster = isinstance(client, redis_async.RedisCluster)
        elif isinstance(client, redis_sync.Redis | redis_sync.RedisCluster):
            self._sync = client
            self.sync_cluster = isinstance(client, redis_sync.RedisCluster)
        else:
            msg = (
                "client must be a redis.asyncio.Redis, redis.asyncio.RedisCluster, redis.Redis "
                f"or redis.RedisCluster, got {type(client).__name__}"
            )
            raise TypeError(msg)
        if sync_client is not None:
            if not isinstance(sync_client, redis_sync.Redis | redis_sync.RedisCluster):
                msg = (
                    "sync_client must be a redis.Redis or redis.RedisCluster, "
                    f"got {type(sync_client).__name__}"
                )
                raise TypeError(msg)
            self._sync = sync_client
            self.sync_cluster = isinstance(sync_client, redis_sync.RedisCluster)
        if not isinstance(prefix, str):
            msg = f"prefix must be a str, got {type(prefix).__name__}"
            raise TypeError(msg)
        if not prefix or "{" in prefix or "}" in prefix:
            msg = f"prefix must be a non-empty str without braces, got {prefix!r}"
            raise ValueError(msg)
        self._fallback: MemoryStore | None = None
        if isinstance(on_error, MemoryStore):
            self._fallback = on_error
        elif not isinstance(on_error, str):
            msg = f"on_error must be 'fail_closed', 'fail_open' or a MemoryStore, got {type(on_error).__name__}"
            raise TypeError(msg)
        elif on_error not in ("fail_closed", "fail_open"):
            msg = f"on_error must be 'fail_closed', 'fail_open' or a MemoryStore, got {on_error!r}"
            raise ValueError(msg)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            msg = f"timeout must be a number of seconds, got {type(timeout).__name__}"
            raise TypeError(msg)
        if not 0 < timeout < float("inf"):
            msg = f"timeout must be a finite number of seconds > 0, got {timeout!r}"
            raise ValueError(msg)
        self._on_error = on_error
        self._prefix = prefix
        self._timeout = float(timeout)
        self._scripts: dict[tuple[type[Algorithm], bool], Script] = {}
        self._batchers: dict[LoopRef, Batcher | AsyncBatcher] = {}
        self._last: Batcher | AsyncBatcher | None = None
        self._lock = threading.Lock()
        self._up = True
        self._warned_at = -float("inf")
        self._warned = False
        self._outages = 0
        self._errors = 0
        self._fallbacks = 0
        self._busy = 0
        self._round_trips = 0
        self._handlers: list[EventHandler] = []

    @property
    def supports_nowait(self) -> bool:
        """True when the store has a sync client, so the ``*_nowait`` calls work (they block)."""
        return self._sync is not None

    def subscribe(self, handler: EventHandler) -> Callable[[], None]:
        """Call *handler* with ``store_unavailable`` / ``store_recovered`` events (one per outage
        and recovery); returns a function that unsubscribes it. A `Gateway` subscribes itself."""
        with self._lock:
            self._handlers = [*self._handlers, handler]

        def unsubscribe() -> None:
            with self._lock:
                self._handlers = [h for h in self._handlers if h is not handler]

        return unsubscribe

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r}, on_error={self._on_error!r}, timeout={self._timeout!r})"

    @property
    def prefix(self) -> str:
        """The first part of every key."""
        return self._prefix

    @property
    def timeout(self) -> float:
        """Seconds a decision may take before the store gives up on it."""
        return self._timeout

    @property
    def fallback(self) -> MemoryStore | None:
        """The `MemoryStore` deciding while Redis is down, if *on_error* is one."""
        return self._fallback

    @property
    def policy(self) -> str:
        """The *on_error* policy by name: ``fail_closed``, ``fail_open`` or ``memory``."""
        return "memory" if self._fallback is not None else str(self._on_error)

    async def aclose(self) -> None:
        """Close the clients this store was given (their connection pools).

        Call it when the store was built for you (``load_config``) or you hand it the clients'
        lifetime; a `Gateway` from config does it on ``async with`` exit. Work handed to the
        store (releases still in flight) is given up to *timeout* seconds to finish first.
        """
        loop = current_loop()
        batcher = self._batchers.get(loop)
        if batcher is not None:
            await batcher.drain(self._timeout)
        if self._sync is not None:
            await anyio.to_thread.run_sync(self._sync.close)
        if self._async is not None and loop.kind == "asyncio":
            await self._async.aclose()

    def stats(self) -> RedisStoreStats:
        """A snapshot: whether Redis answered last time, outages, errors, fallbacks, busy, trips."""
        return RedisStoreStats(
            available=self._up,
            outages=self._outages,
            errors=self._errors,
            fallback_decisions=self._fallbacks,
            busy=self._busy,
            round_trips=self._round_trips,
        )

    def bind_rates(self, spec: RateSpec) -> RateBackend:
        """Return the backend deciding for *spec* in Redis."""
        from ._redis_backends import RedisRates

        algorithm = spec.algorithm
        one = len(spec.rates) == 1
        with self._lock:
            script = self._scripts.get((type(algorithm), one))
            if script is None:
                source = _lua.single(algorithm) if one else _lua.multi(algorithm)
                script = self._scripts[type(algorithm), one] = Script(source)
        fallback = self._fallback.bind_rates(spec) if self._fallback is not None else None
        return RedisRates(self, spec, script, fallback)

    def bind_concurrency(self, spec: ConcurrencySpec) -> ConcurrencyBackend:
        """Return the slot backend for *spec* (leases in a Redis sorted set, renewed while held)."""
        from ._redis_backends import RedisConcurrency

        fallback = self._fallback.bind_concurrency(spec) if self._fallback is not None else None
        return RedisConcurrency(self, spec, fallback)

    # -- the two ways to Redis ----------------------------------------------------------------

    def key_prefix(self, key: str) -> bytes:
        """``<prefix>:{<key>}:`` as bytes: the part of every key of *key* that pins its slot.

        ``%``, ``{`` and ``}`` in *key* are percent-escaped (so the hash tag is always the whole
        key and distinct keys stay distinct), and lone surrogates are kept apart with
        ``surrogatepass``, as a `MemoryStore` keeps any str apart.
        """
        if "%" in key or "{" in key or "}" in key:
            key = key.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
        return b"%s:{%s}:" % (self._prefix.encode(), key.encode("utf-8", "surrogatepass"))

    def run_nowait(self, call: Call) -> Any:
        """Run *call* with the sync client in this thread; errors mapped by `mapped`."""
        client = self._sync
        if client is None:
            msg = (
                "this RedisStore has only an asyncio client: use `await limiter.acquire(...)`, "
                "or pass sync_client=redis.Redis(...) for sync calls"
            )
            raise RuntimeError(msg)
        import redis.exceptions

        with self.mapped():
            try:
                result = client.execute_command(*call.args, NEVER_DECODE=True)
            except redis.exceptions.NoScriptError:
                result = client.execute_command(*call.eval_args(), NEVER_DECODE=True)
        with self._lock:
            self._round_trips += 1
        self.answered()
        return result

    async def run(self, call: Call) -> Any:
        """Run *call* through this event loop's batcher; wait at most *timeout* for the answer.

        The call is queued before this coroutine first yields, so a cancelled caller cannot
        stop work it handed over (a release, a refund).

        Raises:
            StoreUnavailable: Redis did not answer in time (or `StoreBusy`: no connection).
        """
        return await self.batcher().run(call)

    def submit(self, call: Call) -> None:
        """Hand *call* to the batcher without waiting for it (releases, refunds, cleanup)."""
        self.batcher().submit(call)

    def batcher(self) -> Batcher | AsyncBatcher:
        """The batcher of the running event loop (created on first use)."""
        last = self._last
        if last is not None:  # the common case: the same asyncio loop as the previous call
            try:
                if asyncio.get_running_loop() is last.loop.get():
                    return last
            except RuntimeError:
                pass
        loop = current_loop()
        batcher: Batcher | AsyncBatcher | None = self._batchers.get(loop)
        if batcher is None:
            if loop.kind == "asyncio" and self._async is not None:
                batcher = AsyncBatcher(self, loop, self._async, cluster=self.cluster)
            elif self._sync is not None:
                batcher = Batcher(self, loop, self._sync, cluster=self.sync_cluster)
            else:
                msg = (
                    "RedisStore needs sync_client= (a redis.Redis) outside asyncio, e.g. under trio"
                )
                raise RuntimeError(msg)
            with self._lock:
                # Batchers of event loops that are gone are dropped: bounded by live loops.
                self._batchers = {k: v for k, v in self._batchers.items() if k.alive()}
                self._batchers[loop] = batcher
        self._last = batcher if loop.kind == "asyncio" else None
        return batcher

    # -- health and the error boundary -------------------------------------------------------

    @contextmanager
    def mapped(self) -> Iterator[None]:
        """The one place redis errors are translated: `StoreBusy` or `StoreUnavailable`.

        A full pool (redis-py's ``MaxConnectionsError``) is back-pressure: `StoreBusy`, not
        counted as an outage. Anything else redis-py or the socket raises (and a timeout of the
        decision's own deadline) means Redis did not answer: counted, logged once per outage,
        `StoreUnavailable`. It wraps only calls into redis-py, so no bug of ours hides here.
        """
        try:
            yield
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise self.error(exc) from exc

    def error(self, exc: Exception) -> StoreUnavailable:
        """*exc* from inside redis-py as `StoreBusy` (full pool) or `StoreUnavailable` (counted)."""
        import redis.exceptions

        if isinstance(exc, StoreUnavailable):
            return exc
        if isinstance(exc, redis.exceptions.MaxConnectionsError):
            return self.busy(str(exc))
        # Anything else from inside redis-py (a race in its cluster client leaves a connection
        # without a writer: AttributeError) is still "Redis did not answer".
        return self.failed(exc)

    def busy(self, why: str) -> StoreBusy:
        """Count a decision refused for back-pressure and return the error to raise."""
        with self._lock:
            self._busy += 1
        return StoreBusy(f"Redis store busy ({why}) within {self._timeout} s: back-pressure")

    def failed(self, exc: BaseException) -> StoreUnavailable:
        """Record a failed call (log once per outage) and return the error to raise."""
        with self._lock:
            self._errors += 1
            first = self._up
            if first:
                self._up = False
                self._outages += 1
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if first:
            # Once per outage, and at most once a minute: with one master of a cluster down,
            # answers from the others would otherwise end and restart an "outage" per call.
            now = time.monotonic()
            if now - self._warned_at >= 60.0:
                self._warned_at, self._warned = now, True
                logger.warning(
                    "Redis unavailable (%s); on_error=%r until it answers again", what, self.policy
                )
            if self._handlers:
                reason = f"{type(exc).__name__}; on_error={self.policy}"
                event = Event(kind="store_unavailable", reason=reason, at=time.monotonic())
                emit(self._handlers, (event,))
        return StoreUnavailable(f"Redis did not answer: {what}")

    def answered(self, trips: int = 0) -> None:
        """Record a successful call (and *trips* round trips)."""
        if trips:
            with self._lock:
                self._round_trips += trips
        if not self._up:
            with self._lock:
                recovered, self._up = not self._up, True
                told, self._warned = self._warned, False
            if recovered and told:
                logger.info("Redis answers again; decisions are shared again")
            if recovered and self._handlers:
                event = Event(kind="store_recovered", reason="Redis", at=time.monotonic())
                emit(self._handlers, (event,))

    @property
    def up(self) -> bool:
        """Whether the last call was answered."""
        return self._up

    def count_fallback(self) -> str:
        """Count a decision made by the *on_error* policy; return the policy name."""
        with self._lock:
            self._fallbacks += 1
        return self.policy
