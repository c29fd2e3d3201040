"""The kit behind ``simulate.py``: an event loop on a virtual clock, server models, an oracle.

Every request goes through a real `tenantlb.Pool` and its real balancer: ``pool.acquire()`` picks,
the simulated server answers after a simulated delay, and ``lease.record(...)`` reports the
outcome at that virtual instant (or ``record(error=...)`` when the client's timeout fires first).
Time is a `tenantlb.testing.ManualClock` shared by the pools and the loop, so latencies, EWMA
decay, slow start and ejections all run on simulated seconds, and a minute of traffic takes well
under a second of CPU per strategy.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import tenantlb as tlb
from tenantlb.balancing import BalancerBase, EndpointState
from tenantlb.testing import ManualClock

TIMEOUT = TimeoutError("client timeout")


class Loop:
    """A discrete-event loop: a heap of (time, sequence, handler, argument) on a manual clock."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = 0
        self.closing = False  # set by drain(): recurring events stop rescheduling

    def at(self, when: float, handler: Callable[[Any], None], arg: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, handler, arg))

    def run(self, until: float) -> None:
        heap, clock, pop = self._heap, self.clock, heapq.heappop
        while heap and heap[0][0] <= until:
            when, _, handler, arg = pop(heap)
            if when > clock():
                clock.set(when)
            handler(arg)

    def drain(self) -> None:
        """Run every pending event (in-flight requests finish or time out)."""
        self.closing = True
        self.run(math.inf)


class Request:
    __slots__ = ("client", "done", "lease", "start")

    def __init__(self, client: Client, lease: tlb.Lease, start: float) -> None:
        self.client = client
        self.lease = lease
        self.start = start
        self.done = False


class Server(Protocol):
    url: str

    def submit(self, request: Request) -> None: ...

    def mean_now(self) -> float:
        """The true mean time to answer one request now (inf: fails)."""
        ...

    def expected_delay(self) -> float:
        """What a perfectly informed dispatcher expects a new request here to take (inf: fails)."""
        ...


# A server's behaviour at a virtual time: (seconds to answer, HTTP status).
Behaviour = Callable[[float, random.Random], tuple[float, int]]


class DelayServer:
    """Unlimited concurrency: each request takes a delay drawn from *behaviour*, whatever the load."""

    def __init__(
        self, loop: Loop, url: str, behaviour: Behaviour, mean: Callable[[float], float], seed: int
    ) -> None:
        self.loop, self.url, self.behaviour, self.mean = loop, url, behaviour, mean
        self.rng = random.Random(seed)

    def submit(self, request: Request) -> None:
        now = self.loop.clock()
        delay, status = self.behaviour(now, self.rng)
        self.loop.at(now + delay, request.client.complete, (request, status))

    def mean_now(self) -> float:
        return self.mean(self.loop.clock())

    def expected_delay(self) -> float:
        return self.mean(self.loop.clock())


class QueueServer:
    """``workers`` requests at a time, the rest wait in FIFO order; service times from *behaviour*.

    The server does not notice a client giving up: a timed-out request still takes its worker,
    as with most real servers.
    """

    def __init__(
        self,
        loop: Loop,
        url: str,
        workers: int,
        behaviour: Behaviour,
        mean: Callable[[float], float],
        seed: int,
    ) -> None:
        self.loop, self.url, self.workers = loop, url, workers
        self.behaviour, self.mean = behaviour, mean
        self.rng = random.Random(seed)
        self.busy = 0
        self.queue: deque[Request] = deque()

    def submit(self, request: Request) -> None:
        if self.busy < self.workers:
            self._start(request)
        else:
            self.queue.append(request)

    def _start(self, request: Request) -> None:
        self.busy += 1
        now = self.loop.clock()
        service, status = self.behaviour(now, self.rng)
        self.loop.at(now + service, self._finish, (request, status))

    def _finish(self, arg: tuple[Request, int]) -> None:
        self.busy -= 1
        arg[0].client.complete(arg)
        if self.queue:
            self._start(self.queue.popleft())

    def mean_now(self) -> float:
        return self.mean(self.loop.clock())

    def expected_delay(self) -> float:
        # Join-the-shortest-expected-delay: a free worker serves at once; otherwise the request
        # waits for (queue ahead + 1) departures, which come c times as fast as one service.
        mean = self.mean(self.loop.clock())
        if self.busy < self.workers:
            return mean
        return mean + (len(self.queue) + 1) * mean / self.workers


class Client:
    """One client process: its own pool (its own balancer state), its arrivals, its results."""

    def __init__(
        self,
        loop: Loop,
        pool: tlb.Pool,
        servers: dict[str, Server],
        stats: Stats,
        *,
        timeout: float,
        keys: Sequence[bytes] | None = None,
        seed: int = 0,
    ) -> None:
        self.loop, self.pool, self.servers, self.stats = loop, pool, servers, stats
        self.timeout = timeout
        self.keys = keys
        self.rng = random.Random(seed)

    def send(self, _: object = None) -> None:
        now = self.loop.clock()
        keys = self.keys
        key = keys[int(self.rng.random() * len(keys))] if keys else None
        lease = self.pool.acquire(key)
        self.stats.picked(lease.url, now)
        request = Request(self, lease, now)
        self.servers[lease.url].submit(request)
        self.loop.at(now + self.timeout, self.expire, request)

    def complete(self, arg: tuple[Request, int]) -> None:
        request, status = arg
        if request.done:
            return
        request.done = True
        request.lease.record(status=status)
        self.stats.finished(request.start, self.loop.clock() - request.start, status < 500)

    def expire(self, request: Request) -> None:
        if request.done:
            return
        request.done = True
        request.lease.record(error=TIMEOUT)
        self.stats.finished(request.start, self.timeout, False)


class Stats:
    """Client-side results: latency of every request sent from *since* on (a timeout counts as the
    timeout), successes, and picks per endpoint (also per second, for time series)."""

    def __init__(self, *, since: float = 0.0) -> None:
        self.latencies: list[float] = []
        self.starts: list[float] = []
        self.ok = 0
        self.picks: Counter[str] = Counter()
        self.timeline: Counter[tuple[str, int]] = Counter()
        self.since = since

    def picked(self, url: str, now: float) -> None:
        self.picks[url] += 1
        self.timeline[url, int(now)] += 1

    def finished(self, start: float, latency: float, ok: bool) -> None:
        if start < self.since:
            return
        self.latencies.append(latency)
        self.starts.append(start)
        self.ok += ok

    @property
    def total(self) -> int:
        return len(self.latencies)

    def success(self) -> float:
        return self.ok / self.total if self.total else math.nan

    def quantile(self, q: float, *, after: float | None = None) -> float:
        """The *q* quantile of latency (of requests sent at *after* or later, if given)."""
        if after is None:
            data = sorted(self.latencies)
        else:
            data = sorted(x for s, x in zip(self.starts, self.latencies, strict=True) if s >= after)
        if not data:
            return math.nan
        return data[min(len(data) - 1, int(q * len(data)))]

    def share(self, url: str) -> float:
        total = sum(self.picks.values())
        return self.picks[url] / total if total else math.nan


class Poisson:
    """Poisson arrivals at *rate* a second for one client, from *start* to *stop*; with *batch* > 1,
    requests come in batches of geometric size (mean *batch*) at rate / batch: bursty traffic."""

    def __init__(
        self,
        loop: Loop,
        client: Client,
        rate: float,
        *,
        start: float = 0.0,
        stop: float,
        batch: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.loop, self.client, self.stop = loop, client, stop
        self.rate = rate / batch
        self.batch = batch
        self.rng = random.Random(seed)
        loop.at(start + self.rng.expovariate(self.rate), self._arrive)

    def _arrive(self, _: object) -> None:
        size = 1
        if self.batch > 1.0:
            # Geometric batch size with mean `batch`.
            p = 1.0 / self.batch
            size = 1 + int(math.log(1.0 - self.rng.random()) / math.log(1.0 - p))
        for _ in range(size):
            self.client.send()
        nxt = self.loop.clock() + self.rng.expovariate(self.rate)
        if nxt < self.stop:
            self.loop.at(nxt, self._arrive)


class Oracle(BalancerBase):
    """The limit: join the shortest expected delay, knowing every server's true state.

    A real `Balancer` plugged into a real pool, but it reads the simulated servers directly
    (queue lengths, true service times) instead of learning from outcomes. Ties go to the
    endpoint with the fewest requests in flight from this pool, then at random. O(n) a pick.
    """

    def __init__(self, servers: dict[str, Server], seed: int = 0) -> None:
        self.servers = servers
        self._rng = random.Random(seed)
        self._candidates: tuple[EndpointState, ...] = ()

    def clone(self) -> Oracle:
        return Oracle(self.servers)

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        self._candidates = tuple(candidates)

    def pick(self, key: bytes | None) -> EndpointState | None:
        best: EndpointState | None = None
        best_cost = (math.inf, math.inf, 0.0)
        servers = self.servers
        rand = self._rng.random
        for state in self._candidates:
            cost = (servers[state.url].expected_delay(), state.in_flight / state.weight, rand())
            if best is None or cost < best_cost:
                best, best_cost = state, cost
        return best


class KnownMeans(BalancerBase):
    """A reference for scenario 3: the best of *choices* random candidates (distinct) on
    ``true mean service time x (in_flight + 1) / weight``.

    Each client knows every server's true mean (what a latency estimate could at best learn) but,
    like a real client, only its own requests in flight: the limit of balancing without shared
    knowledge, to tell estimation error apart from herding.
    """

    def __init__(self, servers: dict[str, Server], seed: int = 0, choices: int = 2) -> None:
        self.servers = servers
        self.choices = choices
        self._rng = random.Random(seed)
        self._candidates: tuple[EndpointState, ...] = ()

    def clone(self) -> KnownMeans:
        return KnownMeans(self.servers, choices=self.choices)

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        self._candidates = tuple(candidates)

    def pick(self, key: bytes | None) -> EndpointState | None:
        candidates = self._candidates
        n = len(candidates)
        if n <= 1:
            return candidates[0] if n else None
        servers = self.servers
        best: EndpointState | None = None
        best_load = math.inf
        for i in self._rng.sample(range(n), min(self.choices, n)):
            state = candidates[i]
            load = servers[state.url].mean_now() * (state.in_flight + 1) / state.weight
            if best is None or load < best_load:
                best, best_load = state, load
        return best


def lognormal(median: float, sigma: float) -> Callable[[random.Random], float]:
    """A sampler of log-normal delays with the given median."""
    mu = math.log(median)
    return lambda rng: rng.lognormvariate(mu, sigma)


def lognormal_mean(median: float, sigma: float) -> float:
    return median * math.exp(sigma * sigma / 2.0)
