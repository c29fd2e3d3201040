"""What a `RedisStore` binds for a limiter: rate decisions and concurrency leases in Redis.

Both backends build a `Call` per operation and hand it to the store, which runs it (pipelined,
bounded in time) and maps errors; here a failure becomes the store's *on_error* policy. A call
whose caller left (cancelled, timed out) is cleaned up when its answer arrives: an admitted cost
is refunded, a written slot token removed.

Concurrency slots are leases in a sorted set scored by their expiry (server time). A slot held
by a live request is renewed in the background every third of its lease, so a request may last
longer than *lease_ttl*; a process that dies stops renewing, and its leases expire.
"""

from __future__ import annotations

import os
import struct
import weakref
from typing import TYPE_CHECKING, Any, Final

import anyio

from .._errors import StoreUnavailable
from . import _lua
from ._decision import Decision
from ._redis_batch import Call, Script, StoreBusy, current_loop, spawn
from ._resp import pack_items
from ._store import ConcurrencyBackend, ConcurrencySpec, RateBackend, RateSpec, Slot

if TYPE_CHECKING:
    from ._redis_store import RedisStore

__all__ = ["RedisConcurrency", "RedisRates"]

# Concurrency leases: a sorted set of lease tokens scored by their expiry (server ms).
_ACQUIRE: Final = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
""")
_COUNT: Final = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
""")
_RENEW: Final = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if (not score) or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
""")

_MODES: Final = {"a": b"a", "p": b"p", "r": b"r"}


class RedisRates:
    """Rate decisions for one spec: one script call per decision."""

    __slots__ = (
        "_fallback",
        "_head",
        "_modes",
        "_params",
        "_rates",
        "_script",
        "_store",
        "_suffixes",
        "_tail",
    )

    def __init__(
        self, store: RedisStore, spec: RateSpec, script: Script, fallback: RateBackend | None
    ) -> None:
        self._store = store
        self._script = script
        self._rates = spec.rates
        self._fallback = fallback
        namespace = spec.namespace
        self._suffixes = [
            f"{namespace}:{float(r.limit)!r}/{float(r.per)!r}/{float(r.burst)!r}".encode()
            for r in spec.rates
        ]
        params: list[bytes] = []
        for rate in spec.rates:
            params += [repr(float(x)).encode() for x in (rate.limit, rate.per, rate.burst)]
        self._params = tuple(params)
        # The packed command's fixed parts, kept ready: only keys, mode and cost vary per call.
        n = len(spec.rates)
        self._head = b"*%d\r\n%b" % (
            3 + n + 2 + len(params),
            pack_items(("EVALSHA", script.sha, n)),
        )
        self._tail = pack_items(self._params)
        self._modes = {m: pack_items((b, b"1.0")) for m, b in _MODES.items()}

    def _call(self, mode: str, key: str, cost: float) -> Call:
        head = self._store.key_prefix(key)
        keys = [head + suffix for suffix in self._suffixes]
        one = cost == 1
        argv = (_MODES[mode], b"1.0" if one else repr(float(cost)).encode(), *self._params)
        packed = b"%b%b%b%b" % (
            self._head,
            pack_items(keys),
            self._modes[mode] if one else pack_items(argv[:2]),
            self._tail,
        )
        cleanup = None
        if mode == "a":

            def cleanup(reply: Any) -> None:
                # Admitted after the caller left: nobody was served, so give the cost back.
                if reply is not None and reply[:1] == b"\x01":
                    self._store.submit(self._call("r", key, cost))

        return Call((*keys, *argv), self._script, len(keys), cleanup=cleanup, packed=packed)

    def _decision(self, reply: Any) -> Decision:
        try:
            allowed, index, remaining, reset, retry = _lua.REPLY.unpack(reply)
            rates = self._rates
            return Decision(allowed == 1, remaining, reset, retry, rates[index - 1], rates)
        except (TypeError, struct.error, IndexError) as exc:
            raise self._store.failed(exc) from exc

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
        try:
            self._store.run_nowait(self._call("r", key, cost))
        except StoreBusy:
            raise
        except StoreUnavailable:
            if self._store.count_fallback() == "fail_closed":
                raise
            if self._fallback is not None:
                self._fallback.refund_nowait(key, cost)

    async def refund(self, key: str, cost: float) -> None:
        try:
            await self._store.run(self._call("r", key, cost))
        except StoreBusy:
            raise
        except StoreUnavailable:
            if self._store.count_fallback() == "fail_closed":
                raise
            if self._fallback is not None:
                await self._fallback.refund(key, cost)

    def _sync(self, mode: str, key: str, cost: float) -> Decision:
        try:
            return self._decision(self._store.run_nowait(self._call(mode, key, cost)))
        except StoreBusy:
            raise
        except StoreUnavailable:
            policy = self._store.count_fallback()
            if self._fallback is not None:
                if mode == "p":
                    return self._fallback.peek_nowait(key, cost)
                return self._fallback.acquire_nowait(key, cost)
            if policy == "fail_open":
                return self._open(cost)
            raise

    async def _async(self, mode: str, key: str, cost: float) -> Decision:
        try:
            return self._decision(await self._store.run(self._call(mode, key, cost)))
        except StoreBusy:
            raise
        except StoreUnavailable:
            policy = self._store.count_fallback()
            if self._fallback is not None:
                if mode == "p":
                    return await self._fallback.peek(key, cost)
                return await self._fallback.acquire(key, cost)
            if policy == "fail_open":
                return self._open(cost)
            raise


class RedisConcurrency:
    """Concurrency slots as leases in a Redis sorted set, renewed while their `Slot` is alive."""

    __slots__ = ("_fallback", "_held", "_max", "_renewing", "_spec", "_store", "_suffix", "_ttl_ms")

    def __init__(
        self, store: RedisStore, spec: ConcurrencySpec, fallback: ConcurrencyBackend | None
    ) -> None:
        self._store = store
        self._spec = spec
        self._max = str(spec.max).encode()
        self._ttl_ms = str(max(1, round(spec.lease_ttl * 1000))).encode()
        self._suffix = f"cc:{spec.namespace}".encode()
        self._fallback = fallback
        # Slots held by this process, by token; weak, so a Slot dropped without release (a
        # leak in the caller) stops being renewed and its lease expires.
        self._held: weakref.WeakValueDictionary[str, Slot] = weakref.WeakValueDictionary()
        self._renewing = False

    def _zkey(self, key: str) -> bytes:
        return self._store.key_prefix(key) + self._suffix

    def _release_call(self, key: str, token: str) -> Call:
        # Retried in the background until it lands or the lease has expired anyway.
        return Call(("ZREM", self._zkey(key), token), must=self._spec.lease_ttl)

    def _acquire_call(self, key: str, token: str) -> Call:
        def cleanup(reply: Any) -> None:
            # The caller left after Redis may have written the token (or we cannot tell):
            # remove it, so no slot stays held for its whole lease.
            if reply is None or int(reply):
                self._store.submit(self._release_call(key, token))

        return Call((self._zkey(key), self._max, self._ttl_ms, token), _ACQUIRE, 1, cleanup=cleanup)

    def _on_error(self, key: str) -> Slot | None:
        policy = self._store.count_fallback()
        if self._fallback is not None:
            return self._fallback.acquire_nowait(key)
        if policy == "fail_open":
            return Slot(key=key, token="fail-open", backend=_UNTRACKED)
        return None

    def acquire_nowait(self, key: str) -> Slot | None:
        token = os.urandom(12).hex()
        try:
            got = self._store.run_nowait(self._acquire_call(key, token))
        except StoreBusy:
            raise
        except StoreUnavailable:
            if self._store.policy == "fail_closed":
                self._store.count_fallback()
                raise
            return self._on_error(key)
        return Slot(key=key, token=token, backend=self) if int(got) else None

    async def acquire(self, key: str) -> Slot | None:
        token = os.urandom(12).hex()
        try:
            got = await self._store.run(self._acquire_call(key, token))
        except StoreBusy:
            raise
        except StoreUnavailable:
            if self._store.policy == "fail_closed":
                self._store.count_fallback()
                raise
            return self._on_error(key)
        if not int(got):
            return None
        slot = Slot(key=key, token=token, backend=self)
        self._held[token] = slot
        if not self._renewing:
            self._renewing = True
            spawn(current_loop(), self._renew_held)
        return slot

    def release_nowait(self, slot: Slot) -> bool:
        if slot._released:
            return False
        slot._released = True
        self._held.pop(slot.token, None)
        try:
            return bool(int(self._store.run_nowait(self._release_call(slot.key, slot.token))))
        except StoreUnavailable:
            return False  # the lease expires by itself within lease_ttl

    async def release(self, slot: Slot) -> bool:
        if slot._released:
            return False
        slot._released = True
        self._held.pop(slot.token, None)
        try:
            return bool(int(await self._store.run(self._release_call(slot.key, slot.token))))
        except StoreUnavailable:
            return False  # retried in the background; else the lease expires by itself

    def renew_nowait(self, slot: Slot) -> bool:
        if slot._released:
            return False
        call = Call((self._zkey(slot.key), self._ttl_ms, slot.token), _RENEW, 1)
        return bool(int(self._store.run_nowait(call)))

    async def renew(self, slot: Slot) -> bool:
        if slot._released:
            return False
        call = Call((self._zkey(slot.key), self._ttl_ms, slot.token), _RENEW, 1)
        return bool(int(await self._store.run(call)))

    async def in_use(self, key: str) -> int:
        return int(await self._store.run(Call((self._zkey(key),), _COUNT, 1)))

    async def _renew_held(self) -> None:
        """Renew every held slot each third of the lease, while any is held (a detached task)."""
        try:
            every = self._spec.lease_ttl / 3
            while self._held:
                await anyio.sleep(every)
                for slot in list(self._held.values()):
                    if not slot._released:
                        call = Call((self._zkey(slot.key), self._ttl_ms, slot.token), _RENEW, 1)
                        self._store.submit(call)
        finally:
            self._renewing = False


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

    def renew_nowait(self, slot: Slot) -> bool:
        return True

    async def renew(self, slot: Slot) -> bool:
        return True

    async def in_use(self, key: str) -> int:
        return 0


_UNTRACKED: Final = _Untracked()
