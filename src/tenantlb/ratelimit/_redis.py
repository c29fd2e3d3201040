"""`RedisStore`: rate-limit and concurrency state shared by many processes through Redis.

One round trip per decision: each algorithm's Lua script (see `tenantlb.ratelimit._algorithms`)
runs with EVALSHA, is loaded once and reloaded when Redis answers NOSCRIPT (after a restart or
SCRIPT FLUSH). The script reads Redis' own clock (``TIME``), so client clocks never matter, and
checks every rate of a limiter atomically. Keys look like ``tenantlb:{acme}:rl:gcra:100.0/1.0/20.0``:
the ``{key}`` hash tag keeps one tenant's keys in one Redis Cluster slot, and every key is written
with a TTL (``SET ... PX``) so idle keys vanish. Works with Valkey too (same protocol). The scripts
are in `tenantlb.ratelimit._lua` (a lean one for one-rate limiters, one for several rates).

When Redis cannot answer (down, timeout, garbage), the store follows *on_error*, never leaking a
redis exception: ``"fail_closed"`` raises `StoreUnavailable`, ``"fail_open"`` admits, and a
`MemoryStore` decides locally meanwhile. An outage is logged once (warning on the first failure,
info on recovery) and counted in `RedisStore.stats`; decisions resume by themselves when Redis is
back (redis-py reconnects; scripts are reloaded).

redis-py's asyncio client works under asyncio only. Under trio (or from sync code), give the store
a sync ``redis.Redis``: sync calls use it directly and async calls run it in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, final

import anyio
import attrs

from .._errors import StoreUnavailable
from .._events import Event, EventHandler, emit
from . import _lua
from ._algorithms import Algorithm
from ._decision import Decision
from ._memory import MemoryStore
from ._store import ConcurrencyBackend, ConcurrencySpec, RateBackend, RateSpec, Slot

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["RedisStore", "RedisStoreStats"]

logger = logging.getLogger("tenantlb.ratelimit")

# Concurrency leases: a sorted set of lease tokens scored by their expiry (server ms).
_SLOT_ACQUIRE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""
_SLOT_COUNT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
_SLOT_RENEW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if (not score) or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""


@attrs.define(frozen=True, kw_only=True)
class RedisStoreStats:
    """A snapshot of a `RedisStore`'s health.

    Attributes:
        available: False from a failed call until the next successful one.
        outages: How many times Redis went from answering to failing.
        errors: Failed calls in total.
        fallback_decisions: Decisions made by the *on_error* policy instead of Redis.
    """

    available: bool
    outages: int
    errors: int
    fallback_decisions: int


class _Script:
    __slots__ = ("load", "sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self.load = b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n" + _bulk(source.encode())


def _bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _pack_evalsha(script: _Script, keys: Sequence[str], args: Sequence[str]) -> bytes:
    """The RESP bytes of ``EVALSHA sha numkeys *keys *args``."""
    parts = [script.sha, str(len(keys)), *keys, *args]
    packed = [b"*%d\r\n$7\r\nEVALSHA\r\n" % (len(parts) + 1)]
    packed += [_bulk(part.encode()) for part in parts]
    return b"".join(packed)


OnError = Literal["fail_closed", "fail_open"] | MemoryStore


@final
class RedisStore:
    """Keeps limiter state in Redis so that many processes share one quota per key.

    ```python
    import redis.asyncio
    store = RedisStore(redis.asyncio.Redis.from_url("redis://localhost:6379/0"), on_error="fail_open")
    limiter = RateLimiter(Rate(100, per=1.0), store=store)
    decision = await limiter.acquire("acme")
    ```

    Args:
        client: A ``redis.asyncio.Redis`` or a sync ``redis.Redis`` (Valkey works too). Give the
            client a ``socket_timeout`` so a hung Redis cannot stall requests. With the asyncio
            client the store keeps the connections its decisions used (at most half of the
            pool's ``max_connections``) rather than checking one out per call; `aclose` gives
            them back.
        sync_client: A sync ``redis.Redis`` for sync callers (``limiter.acquire_nowait``) when
            *client* is the asyncio one.
        prefix: The first part of every key.
        on_error: What to do when Redis cannot answer: ``"fail_closed"`` (default) raises
            `StoreUnavailable`; ``"fail_open"`` admits every request; a `MemoryStore` decides
            locally (per process) until Redis is back.

    Raises:
        TypeError: *client* is not a redis-py client, *on_error* of the wrong type.
        ValueError: *prefix* is empty, or *on_error* an unknown name.
    """

    __slots__ = (
        "_async",
        "_errors",
        "_fallback",
        "_fallbacks",
        "_handlers",
        "_idle",
        "_lock",
        "_max_idle",
        "_on_error",
        "_outages",
        "_prefix",
        "_scripts",
        "_sync",
        "_up",
    )

    in_process: ClassVar[bool] = False  # see Store: every decision is a round trip

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.Redis,
        *,
        sync_client: redis.Redis | None = None,
        prefix: str = "tenantlb",
        on_error: OnError = "fail_closed",
    ) -> None:
        import redis as redis_sync
        import redis.asyncio as redis_async

        self._async: redis_async.Redis | None = None
        self._sync: redis_sync.Redis | None = None
        if isinstance(client, redis_async.Redis):
            self._async = client
        elif isinstance(client, redis_sync.Redis):
            self._sync = client
        else:
            msg = (
                f"client must be a redis.asyncio.Redis or redis.Redis, got {type(client).__name__}"
            )
            raise TypeError(msg)
        if sync_client is not None:
            if not isinstance(sync_client, redis_sync.Redis):
                msg = f"sync_client must be a redis.Redis, got {type(sync_client).__name__}"
                raise TypeError(msg)
            self._sync = sync_client
        if not isinstance(prefix, str):
            msg = f"prefix must be a str, got {type(prefix).__name__}"
            raise TypeError(msg)
        if not prefix:
            msg = "prefix must be a non-empty str, got ''"
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
        self._on_error = on_error
        self._prefix = prefix
        self._scripts: dict[tuple[type[Algorithm], bool], _Script] = {}
        # Connections this store took from the asyncio client's pool and keeps between decisions:
        # the pool's own get/release (a lock, health checks, metrics hooks) costs more than the
        # round trip. At most half the pool is kept idle, and aclose() gives them back.
        self._idle: list[Any] = []
        max_connections = getattr(
            getattr(self._async, "connection_pool", None), "max_connections", 2
        )
        self._max_idle = max(1, int(max_connections) // 2)
        self._lock = threading.Lock()
        self._up = True
        self._outages = 0
        self._errors = 0
        self._fallbacks = 0
        self._handlers: list[EventHandler] = []

    @property
    def supports_nowait(self) -> bool:
        """True when the store has a sync client, so the ``*_nowait`` calls work (they block)."""
        return self._sync is not None

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r}, on_error={self._on_error!r})"

    @property
    def prefix(self) -> str:
        """The first part of every key."""
        return self._prefix

    async def aclose(self) -> None:
        """Close the clients this store was given (their connection pools).

        Call it when the store was built for you (``load_config``) or you hand it the clients'
        lifetime; a `Gateway` from config does it on ``async with`` exit.
        """
        if self._sync is not None:
            await anyio.to_thread.run_sync(self._sync.close)
        if self._async is not None and asyncio._get_running_loop() is not None:
            idle, self._idle = self._idle, []
            for conn in idle:
                await self._async.connection_pool.release(conn)
            await self._async.aclose()

    def stats(self) -> RedisStoreStats:
        """A snapshot: whether Redis answered last time, outages, errors, fallback decisions."""
        return RedisStoreStats(
            available=self._up,
            outages=self._outages,
            errors=self._errors,
            fallback_decisions=self._fallbacks,
        )

    def subscribe(self, handler: EventHandler) -> Callable[[], None]:
        """Call *handler* with ``store_unavailable`` / ``store_recovered`` events (one per outage
        and recovery); returns a function that unsubscribes it. A `Gateway` subscribes itself."""
        with self._lock:
            self._handlers = [*self._handlers, handler]

        def unsubscribe() -> None:
            with self._lock:
                self._handlers = [h for h in self._handlers if h is not handler]

        return unsubscribe

    def bind_rates(self, spec: RateSpec) -> RateBackend:
        """Return the backend deciding for *spec* in Redis."""
        algorithm = spec.algorithm
        one = len(spec.rates) == 1
        with self._lock:
            script = self._scripts.get((type(algorithm), one))
            if script is None:
                source = _lua.single(algorithm) if one else _lua.multi(algorithm)
                script = self._scripts[type(algorithm), one] = _Script(source)
        fallback = self._fallback.bind_rates(spec) if self._fallback is not None else None
        return _RedisRates(self, spec, script, fallback)

    def bind_concurrency(self, spec: ConcurrencySpec) -> ConcurrencyBackend:
        """Return the slot backend for *spec* (leases in a Redis sorted set)."""
        fallback = self._fallback.bind_concurrency(spec) if self._fallback is not None else None
        return _RedisConcurrency(self, spec, fallback)

    # -- calls: exactly one round trip unless the script must be (re)loaded -------------------

    def call_sync(self, script: _Script, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run *script* with the sync client; redis errors become `StoreUnavailable`."""
        client = self._sync
        if client is None:
            msg = (
                "this RedisStore has only an asyncio client: use `await limiter.acquire(...)`, "
                "or pass sync_client=redis.Redis(...) for sync calls"
            )
            raise RuntimeError(msg)
        import redis.exceptions

        # Replies are binary (`_lua.REPLY`): never decoded, even with decode_responses=True.
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            try:
                result = client.execute_command(*command, **_RAW)  # type: ignore[no-untyped-call]
            except redis.exceptions.NoScriptError:
                client.script_load(script.source)
                result = client.execute_command(*command, **_RAW)  # type: ignore[no-untyped-call]
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._failed(exc) from exc
        self._ok()
        return result

    async def call(self, script: _Script, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run *script* (asyncio client, or the sync one in a worker thread)."""
        client = self._async_client()
        if client is None:
            return await anyio.to_thread.run_sync(self.call_sync, script, keys, args)
        if client.connection is None:
            return await self.call_packed(client, script, _pack_evalsha(script, keys, args))
        import redis.exceptions

        # A single-connection client: let redis-py serialise access to its connection.
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            try:
                result = await client.execute_command(*command, **_RAW)  # type: ignore[no-untyped-call]
            except redis.exceptions.NoScriptError:
                await client.script_load(script.source)
                result = await client.execute_command(*command, **_RAW)  # type: ignore[no-untyped-call]
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._failed(exc) from exc
        self._ok()
        return result

    async def call_packed(self, client: redis.asyncio.Redis, script: _Script, packed: bytes) -> Any:
        """Send *packed* (an EVALSHA of *script*) on a pooled connection; the async hot path."""
        import redis.exceptions

        try:
            try:
                result = await self._roundtrip(client, packed)
            except redis.exceptions.NoScriptError:
                # On the connection that just answered (the pool may hold stale ones).
                await self._roundtrip(client, script.load)
                result = await self._roundtrip(client, packed)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._failed(exc) from exc
        self._ok()
        return result

    async def _roundtrip(self, client: redis.asyncio.Redis, packed: bytes) -> Any:
        """Write *packed*, read one reply: take a connection, write, read, keep it.

        redis-py's ``execute_command`` wraps each command in retries, per-command observability,
        generic argument encoding and a pool checkout, which together cost more than the round
        trip on loopback; a decision has its own failure policy (on_error), so it only needs
        this. A connection that failed or was cancelled between write and read may still
        receive the reply, so it is disconnected and handed back to the pool.
        """
        import redis.exceptions

        pool = client.connection_pool
        idle = self._idle
        conn = idle.pop() if idle else None
        if conn is not None and not _clean(conn):
            await _discard(pool, conn)
            conn = None
        if conn is None:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            reader, writer = conn._reader, conn._writer
            if reader is None or writer is None:  # defensive: not a stream connection
                await conn.send_packed_command(packed, check_health=False)
                result = await conn.read_response(disable_decoding=True)
            else:
                # Written directly: send_packed_command wraps the write in asyncio.wait_for,
                # a task per call, although the write almost always completes at once.
                writer.write(packed)
                if writer.transport.get_write_buffer_size():
                    async with asyncio.timeout(conn.socket_timeout):
                        await writer.drain()
                if getattr(conn, "_maint_notifications_connection_handler", None) is not None:
                    # RESP3 with server push notifications: redis-py's parser must see those.
                    result = await conn.read_response(disable_decoding=True)
                else:
                    async with asyncio.timeout(conn.socket_timeout):
                        result = await _read_reply(reader)
        except redis.exceptions.ResponseError:
            await self._keep(pool, conn)  # an error reply leaves the connection clean
            raise
        except asyncio.IncompleteReadError as exc:
            await _discard(pool, conn)
            msg = "Redis closed the connection"
            raise redis.exceptions.ConnectionError(msg) from exc
        except BaseException:
            await _discard(pool, conn)
            raise
        await self._keep(pool, conn)
        return result

    async def _keep(self, pool: Any, conn: Any) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            await pool.release(conn)

    def command_sync(self, *args: str) -> Any:
        """Run one plain command with the sync client; redis errors become `StoreUnavailable`."""
        client = self._sync
        if client is None:
            msg = "this RedisStore has only an asyncio client: use the async methods"
            raise RuntimeError(msg)
        import redis.exceptions

        try:
            result = client.execute_command(*args)  # type: ignore[no-untyped-call]
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._failed(exc) from exc
        self._ok()
        return result

    async def command(self, *args: str) -> Any:
        """Run one plain command (asyncio client, or the sync one in a worker thread)."""
        client = self._async_client()
        if client is None:
            return await anyio.to_thread.run_sync(self.command_sync, *args)
        import redis.exceptions

        try:
            result = await client.execute_command(*args)  # type: ignore[no-untyped-call]
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._failed(exc) from exc
        self._ok()
        return result

    def _async_client(self) -> redis.asyncio.Redis | None:
        # redis-py's asyncio client needs a running asyncio loop; under trio use the sync client.
        client = self._async
        if client is not None and asyncio._get_running_loop() is None:
            if self._sync is None:
                msg = (
                    "RedisStore needs sync_client= (a redis.Redis) outside asyncio, e.g. under trio"
                )
                raise RuntimeError(msg)
            return None
        return client

    def _failed(self, exc: BaseException) -> StoreUnavailable:
        with self._lock:
            self._errors += 1
            first = self._up
            if first:
                self._up = False
                self._outages += 1
        if first:
            logger.warning(
                "Redis unavailable (%s: %s); on_error=%r until it answers again",
                type(exc).__name__,
                exc,
                self._on_error,
            )
            if self._handlers:
                policy = "memory fallback" if self._fallback is not None else self._on_error
                reason = f"{type(exc).__name__}; on_error={policy}"
                event = Event(kind="store_unavailable", reason=reason, at=time.monotonic())
                emit(self._handlers, (event,))
        return StoreUnavailable(f"Redis did not answer: {type(exc).__name__}: {exc}")

    def _ok(self) -> None:
        if not self._up:
            with self._lock:
                recovered, self._up = not self._up, True
            if recovered:
                logger.info("Redis answers again; decisions are shared again")
                if self._handlers:
                    event = Event(kind="store_recovered", reason="Redis", at=time.monotonic())
                    emit(self._handlers, (event,))

    def _policy(self) -> str | None:
        """Count a fallback decision and return the policy name (None for a MemoryStore)."""
        with self._lock:
            self._fallbacks += 1
        return None if self._fallback is not None else str(self._on_error)


_RAW: Final = {"NEVER_DECODE": True}  # redis-py's execute_command option: raw bytes back
_MODES: Final = {"a": _bulk(b"a"), "p": _bulk(b"p"), "r": _bulk(b"r")}
_COST_ONE: Final = _bulk(b"1.0")


def _clean(conn: Any) -> bool:
    """Whether a kept connection is still open (the server may have closed it meanwhile)."""
    reader, writer = conn._reader, conn._writer
    return not (
        reader is None
        or writer is None
        or writer.transport.is_closing()
        or reader.at_eof()
        or reader.exception() is not None
    )


async def _discard(pool: Any, conn: Any) -> None:
    await conn.disconnect(nowait=True)
    await pool.release(conn)


async def _read_reply(reader: asyncio.StreamReader) -> Any:
    """Read one reply of a script (RESP2 or RESP3): a bulk string, an integer or an error."""
    import redis.exceptions

    line = await reader.readuntil(b"\r\n")
    kind = line[:1]
    if kind == b"$":
        size = int(line[1:-2])
        return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
    if kind == b":":
        return int(line[1:-2])
    if kind == b"-":
        message = line[1:-2].decode(errors="replace")
        if message.startswith("NOSCRIPT"):
            raise redis.exceptions.NoScriptError(message)
        raise redis.exceptions.ResponseError(message)
    msg = f"unexpected reply to EVALSHA: {line[:40]!r}"
    raise redis.exceptions.InvalidResponse(msg)


class _RedisRates:
    """Rate decisions for one spec: one EVALSHA per decision."""

    __slots__ = (
        "_fallback",
        "_head",
        "_params",
        "_rates",
        "_script",
        "_store",
        "_suffixes",
        "_suffixes_b",
        "_tail",
    )

    def __init__(
        self, store: RedisStore, spec: RateSpec, script: _Script, fallback: RateBackend | None
    ) -> None:
        self._store = store
        self._script = script
        self._rates = spec.rates
        self._fallback = fallback
        namespace = spec.namespace
        self._suffixes = [
            f"{namespace}:{float(r.limit)!r}/{float(r.per)!r}/{float(r.burst)!r}"
            for r in spec.rates
        ]
        self._params: list[str] = []
        for rate in spec.rates:
            self._params += [
                repr(float(rate.limit)),
                repr(float(rate.per)),
                repr(float(rate.burst)),
            ]
        # The async hot path sends pre-packed RESP: only the keys, mode and cost vary per call.
        n = len(spec.rates)
        self._head = b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (
            3 + n + 2 + 3 * n,
            _bulk(script.sha.encode()),
            _bulk(str(n).encode()),
        )
        self._suffixes_b = [s.encode() for s in self._suffixes]
        self._tail = b"".join(_bulk(p.encode()) for p in self._params)

    def _request(self, key: str, mode: str, cost: float) -> tuple[list[str], list[str]]:
        prefix = f"{self._store.prefix}:{{{key}}}:"
        return [prefix + s for s in self._suffixes], [mode, repr(float(cost)), *self._params]

    def _packed(self, key: str, mode: bytes, cost: float) -> bytes:
        prefix = b"%s:{%s}:" % (self._store.prefix.encode(), key.encode())
        parts = [self._head]
        parts += [_bulk(prefix + suffix) for suffix in self._suffixes_b]
        parts += [mode, _COST_ONE if cost == 1 else _bulk(repr(float(cost)).encode()), self._tail]
        return b"".join(parts)

    def _decision(self, reply: Any) -> Decision:
        try:
            allowed, index, remaining, reset, retry = _lua.REPLY.unpack(reply)
            rates = self._rates
            return Decision(allowed == 1, remaining, reset, retry, rates[index - 1], rates)
        except (TypeError, struct.error, IndexError) as exc:
            msg = f"Redis answered garbage to a rate-limit script: {reply!r}"
            raise StoreUnavailable(msg) from exc

    def _open(self, cost: float) -> Decision:
        rate = self._rates[0]
        return Decision(True, max(0.0, rate.burst - cost), 0.0, 0.0, rate, self._rates)

    def acquire_nowait(self, key: str, cost: float) -> Decision:
        return self._sync("a", key, cost)

    def peek_nowait(self, key: str, cost: float) -> Decision:
        return self._sync("p", key, cost)

    async def acquire(self, key: str, cost: float) -> Decision:
        return await self._async("a", key, cost)

    async def peek(self, key: str, cost: float) -> Decision:
        return await self._async("p", key, cost)

    def refund_nowait(self, key: str, cost: float) -> None:
        keys, args = self._request(key, "r", cost)
        try:
            self._store.call_sync(self._script, keys, args)
        except StoreUnavailable:
            if self._fallback is None and self._store._policy() == "fail_closed":
                raise
            if self._fallback is not None:
                self._fallback.refund_nowait(key, cost)

    async def refund(self, key: str, cost: float) -> None:
        try:
            await self._call("r", key, cost)
        except StoreUnavailable:
            if self._fallback is None and self._store._policy() == "fail_closed":
                raise
            if self._fallback is not None:
                await self._fallback.refund(key, cost)

    def _sync(self, mode: str, key: str, cost: float) -> Decision:
        keys, args = self._request(key, mode, cost)
        try:
            return self._decision(self._store.call_sync(self._script, keys, args))
        except StoreUnavailable:
            policy = self._store._policy()
            if self._fallback is not None:
                if mode == "p":
                    return self._fallback.peek_nowait(key, cost)
                return self._fallback.acquire_nowait(key, cost)
            if policy == "fail_open":
                return self._open(cost)
            raise

    async def _call(self, mode: str, key: str, cost: float) -> Any:
        store = self._store
        client = store._async_client()
        if client is None or client.connection is not None:
            keys, args = self._request(key, mode, cost)
            return await store.call(self._script, keys, args)
        return await store.call_packed(client, self._script, self._packed(key, _MODES[mode], cost))

    async def _async(self, mode: str, key: str, cost: float) -> Decision:
        try:
            return self._decision(await self._call(mode, key, cost))
        except StoreUnavailable:
            policy = self._store._policy()
            if self._fallback is not None:
                if mode == "p":
                    return await self._fallback.peek(key, cost)
                return await self._fallback.acquire(key, cost)
            if policy == "fail_open":
                return self._open(cost)
            raise


_ACQUIRE = _Script(_SLOT_ACQUIRE)
_COUNT = _Script(_SLOT_COUNT)
_RENEW = _Script(_SLOT_RENEW)


class _RedisConcurrency:
    """Concurrency slots as leases in a Redis sorted set, scored by expiry (server time)."""

    __slots__ = ("_fallback", "_max", "_spec", "_store", "_suffix", "_ttl_ms")

    def __init__(
        self, store: RedisStore, spec: ConcurrencySpec, fallback: ConcurrencyBackend | None
    ) -> None:
        self._store = store
        self._spec = spec
        self._max = str(spec.max)
        self._ttl_ms = str(max(1, round(spec.lease_ttl * 1000)))
        self._suffix = f"cc:{spec.namespace}"
        self._fallback = fallback

    def _zkey(self, key: str) -> str:
        return f"{self._store.prefix}:{{{key}}}:{self._suffix}"

    def _on_error(self, key: str) -> Slot | None:
        policy = self._store._policy()
        if self._fallback is not None:
            return self._fallback.acquire_nowait(key)
        if policy == "fail_open":
            return Slot(key=key, token="fail-open", backend=_UNTRACKED)
        return None  # unreachable for fail_closed: callers re-raise first

    def acquire_nowait(self, key: str) -> Slot | None:
        token = os.urandom(12).hex()
        try:
            got = self._store.call_sync(
                _ACQUIRE, [self._zkey(key)], [self._max, self._ttl_ms, token]
            )
        except StoreUnavailable:
            if self._fallback is None and self._on_error_policy() == "fail_closed":
                raise
            return self._on_error(key)
        return Slot(key=key, token=token, backend=self) if int(got) else None

    async def acquire(self, key: str) -> Slot | None:
        token = os.urandom(12).hex()
        try:
            got = await self._store.call(
                _ACQUIRE, [self._zkey(key)], [self._max, self._ttl_ms, token]
            )
        except StoreUnavailable:
            if self._fallback is None and self._on_error_policy() == "fail_closed":
                raise
            return self._on_error(key)
        return Slot(key=key, token=token, backend=self) if int(got) else None

    def _on_error_policy(self) -> str:
        return str(self._store._on_error)

    def release_nowait(self, slot: Slot) -> bool:
        try:
            return bool(self._store.command_sync("ZREM", self._zkey(slot.key), slot.token))
        except StoreUnavailable:
            return False  # the lease expires by itself within lease_ttl

    async def release(self, slot: Slot) -> bool:
        try:
            return bool(await self._store.command("ZREM", self._zkey(slot.key), slot.token))
        except StoreUnavailable:
            return False  # the lease expires by itself within lease_ttl

    async def renew(self, slot: Slot) -> bool:
        """Extend *slot*'s lease by lease_ttl from now; False if it had expired."""
        got = await self._store.call(_RENEW, [self._zkey(slot.key)], [self._ttl_ms, slot.token])
        return bool(int(got))

    async def in_use(self, key: str) -> int:
        return int(await self._store.call(_COUNT, [self._zkey(key)], []))


class _Untracked:
    """The backend of fail-open slots: nothing to give back."""

    def acquire_nowait(self, key: str) -> Slot | None:
        return Slot(key=key, token="fail-open", backend=self)

    async def acquire(self, key: str) -> Slot | None:
        return self.acquire_nowait(key)

    def release_nowait(self, slot: Slot) -> bool:
        return False

    async def release(self, slot: Slot) -> bool:
        return False

    async def in_use(self, key: str) -> int:
        return 0


_UNTRACKED: Final = _Untracked()
