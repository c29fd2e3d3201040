"""`Admission`: what ``gateway.admit(request)`` returns; `AdmissionFlow`: the steps it runs.

In: resolve and authenticate the tenant (or take the anonymous one), check the size limits, find
the tenant's pool for the path, charge the rate limit, take a concurrency slot, wait for a fair
turn, lease an endpoint. Out: record the outcome (or release the lease), give back the turn and
the slot. A refusal after the charge refunds it.

The flow has two shapes. With an in-process store (`MemoryStore`) and no fair queue nothing on
the way in or out can wait, so each direction runs without awaiting (`admit_now`, and the way
out in `Admission.__aexit__` itself) and the cleanup on a refusal cannot be interrupted;
otherwise the coroutines `admit` / `finish` await the store and the queue, shielding their
cleanup. What the steps need
to know about a tenant is worked out once per tenant object, in a `TenantPlan`: its limiters,
counters, size limits and, for a tenant without routes, its pool. A hot reload brings new tenant
objects and so new plans.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

import anyio
from cachetools import LRUCache

from ._edge import add_challenge, check_size, client_key, hash_key, smaller
from ._errors import (
    Forbidden,
    MissingCredentials,
    RateLimited,
    RequestRejected,
    Unauthenticated,
    UnknownTenant,
)
from ._ticket import Ticket, _TenantCounters
from .balancing import Lease, Pool, PoolSubset
from .fairness import FairQueue, Turn
from .ratelimit import ConcurrencyLimiter, Decision, RateLimiter, Slot
from .tenants import RequestInfo, Tenant, TenantRegistry, shuffle_shard

if TYPE_CHECKING:
    from ._gateway_events import GatewayEvents
    from ._limiters import LimiterCache

logger = logging.getLogger("tenantlb")

__all__ = ["Admission", "AdmissionFlow", "TenantPlan"]


@final
class Admission:
    """The async context manager `Gateway.admit` returns; it yields a `Ticket`."""

    __slots__ = ("_cost", "_flow", "_lease", "_request", "_ticket")

    def __init__(
        self, flow: AdmissionFlow, request: RequestInfo, cost: float, lease: bool | None
    ) -> None:
        self._flow = flow
        self._request = request
        self._cost = cost
        self._lease = lease
        self._ticket: Ticket | None = None

    @property
    def inline(self) -> bool:
        """True when nothing in this admission can wait (an in-process store, no fair queue):
        then `enter_nowait` and `exit_nowait` may be used instead of ``async with``."""
        return self._flow.inline

    async def __aenter__(self) -> Ticket:
        if self._ticket is not None:
            msg = "an admission can be entered once"
            raise RuntimeError(msg)
        flow = self._flow
        if flow.inline:
            ticket = flow.admit_now(self._request, self._cost, self._lease)
        else:
            ticket = await flow.admit(self._request, self._cost, self._lease)
        self._ticket = ticket
        return ticket

    def enter_nowait(self) -> Ticket:
        """``__aenter__`` without a coroutine, for an `inline` admission (adapters use it: every
        request pays for the coroutine otherwise).

        Raises:
            RuntimeError: The admission is not `inline`, or was entered already.
            RequestRejected: As ``__aenter__``.
        """
        flow = self._flow
        if self._ticket is not None or not flow.inline:
            msg = "enter_nowait needs an inline admission that was not entered yet"
            raise RuntimeError(msg)
        ticket = self._ticket = flow.admit_now(self._request, self._cost, self._lease)
        return ticket

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ticket = self._ticket
        if ticket is None:
            return
        if not self._flow.inline:
            await self._flow.finish(ticket, exc)
            return
        self.exit_nowait(exc)

    def exit_nowait(self, exc: BaseException | None = None) -> None:
        """``__aexit__`` without a coroutine, for an `inline` admission; *exc* is what ended the
        request (None: it completed). A no-op when the admission was not entered."""
        ticket = self._ticket
        if ticket is None:
            return
        if not self._flow.inline:
            msg = "exit_nowait needs an inline admission"
            raise RuntimeError(msg)
        # The in-process store's way out, written out here (every request takes it): nothing
        # to await, so nothing can interrupt it.
        plan = ticket._plan
        plan.counters.finished += 1  # see _TenantCounters: one bytecode-level add, no lock
        lease = ticket.lease
        try:
            if lease is not None and not lease.released:
                _outcome(lease, exc)
        finally:
            slot = ticket._slot
            if slot is not None and plan.slots is not None:
                ticket._slot = None
                plan.slots.release_nowait(slot)


@final
class TenantPlan:
    """What admitting a request of one tenant object needs, worked out when it is first seen."""

    __slots__ = (
        "counters",
        "events",
        "fair",
        "limiter",
        "max_body",
        "pool",
        "pool_name",
        "routed",
        "shard_size",
        "sized",
        "slots",
        "tenant",
    )

    def __init__(
        self,
        tenant: Tenant,
        *,
        limiter: RateLimiter | None,
        slots: ConcurrencyLimiter | None,
        counters: _TenantCounters,
        events: GatewayEvents,
        max_body: int | None,
        pools: Mapping[str, Pool],
        fair: Mapping[str, FairQueue],
    ) -> None:
        self.tenant = tenant
        self.limiter = limiter
        self.slots = slots
        self.counters = counters
        self.events = events
        self.max_body = max_body  # the smaller of the gateway's and the tenant's
        # The tenant's own size limits, checked after it is known (the gateway's come first).
        self.sized = tenant.max_header_size is not None or tenant.max_body_size is not None
        self.shard_size = tenant.shard_size
        # Without routes every path goes to `upstream`: look its pool and queue up once.
        self.routed = bool(tenant.routes)
        self.pool_name = None if self.routed else tenant.upstream
        self.pool = None if self.pool_name is None else pools.get(self.pool_name)
        self.fair = None if self.pool_name is None else fair.get(self.pool_name)


@final
class AdmissionFlow:
    """The admission steps of one gateway, over its registry, pools, store and edge policies."""

    def __init__(
        self,
        *,
        registry: TenantRegistry,
        pools: Mapping[str, Pool],
        quotas: LimiterCache,
        in_process: bool,
        fair: Mapping[str, FairQueue],
        events: GatewayEvents,
        lock: threading.Lock,
        hash_on: Any,
        anonymous: Tenant | None,
        max_header_size: int | None,
        max_body_size: int | None,
        challenge: str,
    ) -> None:
        self._registry = registry
        self._pools = pools
        self._quotas = quotas
        self._sync = in_process  # the store decides without I/O: call its sync twins
        self._fair = fair
        self._events = events
        self._lock = lock
        self._hash_on = hash_on
        self._anonymous = anonymous
        self._max_header = max_header_size
        self._max_body = max_body_size
        self._sized = max_header_size is not None or max_body_size is not None
        self._challenge = challenge
        self.inline = in_process and not fair  # nothing can wait: admit_now, and __aexit__ in place
        self._plans: dict[int, TenantPlan] = {}  # id(tenant) -> plan (the plan holds the tenant)
        self._plans_of: object = None  # the registry snapshot they were built for
        self._shards: LRUCache[tuple[str, int, str], tuple[int, PoolSubset]] = LRUCache(65536)

    def plans(self) -> int:
        """How many tenant plans are kept (bounded by the current tenants; for tests)."""
        return len(self._plans)

    # -- in: synchronous (in-process store, no fair queue) -----------------------------------------

    def admit_now(self, request: RequestInfo, cost: float, want: bool | None) -> Ticket:
        """Admit *request* without waiting for anything; see `Gateway.admit`."""
        # `_who` and `_admitted` written out in place: this is every request's path.
        events = self._events
        try:
            if self._sized:
                check_size(request, self._max_header, self._max_body)
            tenant = self._registry.resolve(request)
        except (Unauthenticated, UnknownTenant) as exc:
            found = self._anonymous_for(request, exc)
            if found is None:
                raise
            plan, key = found
            tenant = plan.tenant
        except RequestRejected as exc:
            events.refused(exc, None, "")
            raise
        else:
            cached = self._plans.get(id(tenant))
            plan = cached if cached is not None and cached.tenant is tenant else self._plan(tenant)
            key = tenant.id
        pool_name: str | None = None
        try:
            if plan.sized:
                check_size(request, tenant.max_header_size, plan.max_body)
            pool: Pool | None = None
            if want is not False:
                if plan.routed:
                    pool_name, pool = self._route(tenant, request.path, want)
                else:
                    pool_name, pool = plan.pool_name, plan.pool
                    if pool is None:
                        self._unrouted(tenant, request.path, pool_name, want)
            decision: Decision | None = None
            limiter = plan.limiter
            if limiter is not None:
                decision = limiter.acquire_nowait(key, cost)
                if events.traffic:
                    events.decision(tenant, pool_name or "", decision)
                if not decision.allowed:
                    msg = f"tenant {tenant.id!r} is over its rate limit"
                    raise RateLimited(msg, decision=decision, headers=decision.headers())
            slots = plan.slots
            slot: Slot | None = None
            target: Pool | PoolSubset | None = None
            lease: Lease | None = None
            try:
                if slots is not None:
                    slot = slots.acquire_nowait(key)  # raises OverCapacity when full
                if pool is not None:
                    target = (
                        pool if plan.shard_size is None else self._target(plan, pool, pool_name)
                    )
                    hash_on = self._hash_on
                    lease = target.acquire(
                        None if hash_on is None else hash_key(hash_on, request, tenant)
                    )
            except BaseException:
                # Synchronous: nothing can interrupt the giving back.
                try:
                    if slots is not None and slot is not None:
                        slots.release_nowait(slot)
                finally:
                    if limiter is not None:
                        limiter.refund_nowait(key, cost)
                raise
        except RequestRejected as exc:
            self._refused(exc, plan, request, want)
            raise
        plan.counters.admitted += 1  # see _TenantCounters: one bytecode-level add, no lock
        if events.traffic:
            events.admitted(tenant, pool_name or "", target, lease)
        return Ticket(plan, lease, target, pool_name, decision, slot)

    # -- in: asynchronous (a store with I/O, or fair queues) ---------------------------------------

    async def admit(self, request: RequestInfo, cost: float, want: bool | None) -> Ticket:
        """Admit *request*, awaiting the store and the fair queue; see `Gateway.admit`."""
        plan, key = self._who(request)
        tenant = plan.tenant
        pool_name: str | None = None
        try:
            if plan.sized:
                check_size(request, tenant.max_header_size, plan.max_body)
            pool: Pool | None = None
            fair: FairQueue | None = None
            if want is not False:
                if plan.routed:
                    pool_name, pool = self._route(tenant, request.path, want)
                    fair = None if pool_name is None else self._fair.get(pool_name)
                else:
                    pool_name, pool, fair = plan.pool_name, plan.pool, plan.fair
                    if pool is None:
                        self._unrouted(tenant, request.path, pool_name, want)
            decision: Decision | None = None
            limiter = plan.limiter
            if limiter is not None:
                if self._sync:
                    decision = limiter.acquire_nowait(key, cost)
                else:
                    decision = await limiter.acquire(key, cost)
                if self._events.traffic:
                    self._events.decision(tenant, pool_name or "", decision)
                if not decision.allowed:
                    msg = f"tenant {tenant.id!r} is over its rate limit"
                    raise RateLimited(msg, decision=decision, headers=decision.headers())
            slots = plan.slots
            slot: Slot | None = None
            turn: Turn | None = None
            target: Pool | PoolSubset | None = None
            lease: Lease | None = None
            try:
                if slots is not None:
                    if self._sync:
                        slot = slots.acquire_nowait(key)  # raises OverCapacity when full
                    else:
                        slot = await slots.acquire(key)  # raises OverCapacity when full
                if fair is not None:
                    turn = await fair.acquire(key, tenant.weight)  # QueueFull / QueueTimeout
                if pool is not None:
                    target = (
                        pool if plan.shard_size is None else self._target(plan, pool, pool_name)
                    )
                    hash_on = self._hash_on
                    lease = target.acquire(
                        None if hash_on is None else hash_key(hash_on, request, tenant)
                    )
            except BaseException:
                if fair is not None and turn is not None:
                    fair.release(turn, record=False)  # synchronous: nothing can interrupt it
                try:
                    if slots is not None and slot is not None:
                        await self._free(slots, slot)
                finally:  # a cancel while freeing (asyncio: at any await) must not skip the refund
                    if limiter is not None:
                        await self._refund(limiter, key, cost)
                raise
        except RequestRejected as exc:
            self._refused(exc, plan, request, want)
            raise
        ticket = self._admitted(plan, pool_name, target, lease, decision, slot)
        if fair is not None and turn is not None:
            ticket._turn = (fair, turn)
        return ticket

    # -- out ---------------------------------------------------------------------------------------

    async def finish(self, ticket: Ticket, exc: BaseException | None) -> None:
        """End *ticket*'s admission: the turn first, the outcome, then the slot (shielded)."""
        turn = ticket._turn
        if turn is not None:
            ticket._turn = None
            turn[0].release(turn[1], record=exc is None)  # first, and without awaiting
        plan = ticket._plan
        plan.counters.finished += 1
        lease = ticket.lease
        try:
            if lease is not None and not lease.released:
                _outcome(lease, exc)
        finally:
            slot, slots = ticket._slot, plan.slots
            if slot is not None and slots is not None:
                ticket._slot = None
                if self._sync:
                    slots.release_nowait(slot)  # no coroutine for the in-memory case
                else:
                    await self._free(slots, slot)

    # -- the steps ---------------------------------------------------------------------------------

    def _who(self, request: RequestInfo) -> tuple[TenantPlan, str]:
        """The plan of the request's tenant and the key its limits count under."""
        try:
            if self._sized:
                check_size(request, self._max_header, self._max_body)
            tenant = self._registry.resolve(request)
        except (Unauthenticated, UnknownTenant) as exc:
            found = self._anonymous_for(request, exc)
            if found is None:
                raise
            return found
        except RequestRejected as exc:
            self._events.refused(exc, None, "")
            raise
        cached = self._plans.get(id(tenant))
        plan = cached if cached is not None and cached.tenant is tenant else self._plan(tenant)
        return plan, tenant.id

    def _anonymous_for(
        self, request: RequestInfo, exc: Unauthenticated | UnknownTenant
    ) -> tuple[TenantPlan, str] | None:
        """The anonymous plan and the client's key for a request without any credentials;
        None (the refusal counted, its challenge added) when *exc* must stand."""
        anonymous = self._anonymous
        if anonymous is None or not isinstance(exc, MissingCredentials):
            add_challenge(exc, self._challenge)
            self._events.refused(exc, None, "")
            return None
        # No credentials at all: the anonymous policy, its limits per client.
        return self._plan(anonymous), f"{anonymous.id}@{client_key(request.client_ip)}"

    def _plan(self, tenant: Tenant) -> TenantPlan:
        plan = self._plans.get(id(tenant))
        if plan is not None and plan.tenant is tenant:
            return plan
        quotas = self._quotas
        plan = TenantPlan(
            tenant,
            limiter=quotas.rates(tenant.limits) if tenant.limits else None,
            slots=None if tenant.max_concurrency is None else quotas.slots(tenant.max_concurrency),
            counters=self._events.counters(tenant.id),
            events=self._events,
            max_body=smaller(self._max_body, tenant.max_body_size),
            pools=self._pools,
            fair=self._fair,
        )
        snapshot = self._registry.snapshot()
        with self._lock:
            # A reload brings new tenant objects: start afresh rather than keep the old ones'.
            if snapshot is not self._plans_of or len(self._plans) > 2 * len(snapshot) + 64:
                self._plans = {}
                self._plans_of = snapshot
            self._plans[id(tenant)] = plan  # the plan holds the tenant: its id is not reused
        return plan

    def _route(
        self, tenant: Tenant, path: str, want: bool | None
    ) -> tuple[str | None, Pool | None]:
        pool_name = tenant.upstream_for(path)
        pool = None if pool_name is None else self._pools.get(pool_name)
        if pool is None:
            self._unrouted(tenant, path, pool_name, want)
        return pool_name, pool

    @staticmethod
    def _unrouted(tenant: Tenant, path: str, pool_name: str | None, want: bool | None) -> None:
        """Refuse a request with no pool to go to, unless it may do without (*want* None)."""
        if pool_name is not None:
            msg = f"upstream {pool_name!r} of tenant {tenant.id!r} is not configured"
            raise Forbidden(msg)
        if want:
            msg = f"tenant {tenant.id!r} has no upstream for {path[:200]!r}"
            raise Forbidden(msg)

    def _admitted(
        self,
        plan: TenantPlan,
        pool_name: str | None,
        target: Pool | PoolSubset | None,
        lease: Lease | None,
        decision: Decision | None,
        slot: Slot | None,
    ) -> Ticket:
        plan.counters.admitted += 1  # see _TenantCounters: one bytecode-level add, no lock
        if self._events.traffic:
            self._events.admitted(plan.tenant, pool_name or "", target, lease)
        return Ticket(plan, lease, target, pool_name, decision, slot)

    def _refused(
        self, exc: RequestRejected, plan: TenantPlan, request: RequestInfo, want: bool | None
    ) -> None:
        pool = None if want is False else plan.tenant.upstream_for(request.path)
        self._events.refused(exc, plan.tenant, pool or "")

    def _target(self, plan: TenantPlan, pool: Pool, pool_name: str | None) -> Pool | PoolSubset:
        """The tenant's shuffle shard of *pool* (cached per pool generation)."""
        tenant = plan.tenant
        k = plan.shard_size
        if k is None or k >= len(pool):
            return pool
        cache_key = (tenant.id, k, pool_name or "")
        generation = pool.generation
        with self._lock:  # an LRUCache reorders itself on every read: not thread-safe alone
            cached = self._shards.get(cache_key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        urls = shuffle_shard(tenant.id, [e.url for e in pool.endpoints], k)
        subset = pool.subset(urls)
        with self._lock:
            self._shards[cache_key] = (generation, subset)
        return subset

    async def _free(self, slots: ConcurrencyLimiter, slot: Slot) -> None:
        if self._sync:
            slots.release_nowait(slot)
        else:
            with anyio.CancelScope(shield=True):  # a cancelled request must still free its slot
                await slots.release(slot)

    async def _refund(self, limiter: RateLimiter, key: str, cost: float) -> None:
        with anyio.CancelScope(shield=True):
            if self._sync:
                limiter.refund_nowait(key, cost)
            else:
                await limiter.refund(key, cost)


def _outcome(lease: Lease, exc: BaseException | None) -> None:
    """Record how a request the caller did not record ended on its (still open) lease."""
    try:
        if isinstance(exc, Exception):
            lease.record(error=exc)
        else:  # no outcome, or cancelled (a BaseException on asyncio and trio alike):
            lease.release()  # neither reward nor punish the endpoint
    except Exception:
        # Recording must neither keep the slot nor replace the error the request ended with.
        logger.exception("tenantlb: recording the outcome of a request failed")
        lease.release()
