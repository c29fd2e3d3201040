"""`PeakEWMA`: latency-aware picking (a moving average of each endpoint's latency, after Finagle)."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from typing import final

from .._validate import count, positive
from ._balancer import BalancerBase, EndpointState
from ._endpoint import Endpoint
from ._hashing import hash64

__all__ = ["PeakEWMA"]

# How far one answer moves an endpoint's estimate toward its latency. Per answer, not per second:
# a client that hears from an endpoint rarely needs several fast answers, not one after a long
# silence, to believe that a slow endpoint is fast again (the simulation's scenario 3). 0.07
# rather than 0.1 (sixth round): less of one exponential sample's noise in each estimate, p99
# 0.004x closer to the oracle's with fifty clients; 0.05 was slower to trust a new endpoint in
# a rolling deploy (scenario 2e).
_WEIGHT = 0.07
# Until an endpoint has this many answers its estimate is their plain mean (the 5th answer
# moves it by _WEIGHT): a single noisy first answer no longer steers the picks for tens of answers.
# Tuned on the simulation's fleet scenario over nine seeds (3 and 10 did less).
_AVERAGED = 5
# A cost floor, so that a zero-latency sample (a manual clock, a cached reply) still lets the
# number of requests in flight tell endpoints apart.
_MIN_COST = 1e-6
# The load of an endpoint that has not answered yet, per request in flight: 0 with none (it is
# tried at once, so every endpoint gets measured), and above any measured load while its first
# request is out, so a new endpoint gets one request, not a burst (Finagle's penalty).
_AWAITING_FIRST = 1e12
# Scores are base-2 logarithms: math.log2 and math.exp2 take one argument the fast way (METH_O),
# where math.log, with its optional base, has its arguments packed into a tuple and parsed.
_exp2 = math.exp2
_log2 = math.log2
_NO_SAMPLE = -math.inf  # EndpointState.ewma_score before the first sample
# A pick's load is cost * (in_flight + 1) / weight. A light client, comparing its aperture,
# counts its requests in flight to the power _LIGHT_POWER instead (Envoy's least-request "active
# request bias" above 1): there each request it has at an endpoint stands for others' it cannot
# see. 1.25 (sixth round): p99 0.004x closer to the oracle's with fifty independent clients, the
# same with ten and twenty-five, 1.5 no better; for a busy client (the widened aperture) it made
# the rolling deploy's p99 3% worse (a slow new endpoint's few requests counted for more).
_LIGHT_POWER = 1.25
# log2(in_flight + 1), and log2((in_flight + 1) ** _LIGHT_POWER), for the common small counts:
# an index, not a call.
_COUNTS = 256
_LOG_COUNT = tuple(math.log2(k + 1) for k in range(_COUNTS))
_LOG_COUNT_LIGHT = tuple(_LIGHT_POWER * math.log2(k + 1) for k in range(_COUNTS))
# Up to this many candidates, 30-bit draws give near-uniform indices (bias < 1e-4).
_MAX_DRAWN = 1 << 16
# The previous pick is a candidate again (Mitzenmacher's "(d,1)-memory") once it has this many
# answers, i.e. once its average rests on answers rather than on the first one or two.
_KNOWN = 10
# The aperture's load band (Finagle's aperture balancer): while the endpoints a pick compares
# average more than _HIGH_LOAD requests in flight the aperture widens by one endpoint, below
# _LOW_LOAD it narrows by one (never below ``aperture``). Finagle keeps about one request in
# flight per endpoint (0.875-1.125); the band is wider below so that a client does not flap on
# the noise of one pick's counts. 1.25 rather than 2 above: in the simulation's fleet scenario
# 3-5 clients stayed narrow at 2 and lost 0.02x of p99 (1.25: 0.006x); 10-50 clients the same.
_LOW_LOAD = 0.5
_HIGH_LOAD = 1.25
# "Nothing remembered": an endpoint whose load is +inf, so it never wins a comparison.
_NOBODY = EndpointState(Endpoint("http://remembered.invalid"), 0.0)
_NOBODY.ewma = _NOBODY.ewma_score = math.inf


@final
class PeakEWMA(BalancerBase):
    """Send each request where it is expected to finish first (after Finagle's / linkerd's Peak-EWMA).

    Each endpoint's *cost* is a moving average of its round-trip time: the plain mean of its first
    four answers, then every answer moves it 7% of the way toward that answer's latency, so it
    follows the endpoint's mean over its last fifteen or so answers. A failure (5xx, 429, an error) is the *peak*: it is adopted at once as
    ``max(latency, failure_penalty, 2 * cost)``, so an endpoint that fails fast (an instant 503)
    looks slow, not fast, and each further failure doubles its cost. While an endpoint receives no
    answers, the cost the picks see decays toward zero as ``exp(-idle / decay)``, so an endpoint
    that was slow is tried again after a while instead of being shunned forever; its next answer
    then updates the average it had. An endpoint that has not answered yet is tried at once, but
    while its first request is out it is picked only if every candidate is in the same state
    (Finagle's rule): every endpoint gets measured, and a new one gets one request, not a burst.
    Meanwhile its estimate is ``default_rtt`` (what `cost` reports, and what a failure doubles).

    Each balancer keeps to an *aperture* (Finagle's aperture balancers): a subset of ``aperture``
    endpoints, its own random choice (weighted rendezvous hashing on a per-balancer salt, so an
    endpoint's chance to be in it follows its weight, and it keeps its endpoints when others
    come and go). While the client is light, every pick compares all of them and takes the one
    with the lowest ``load = cost * (in_flight + 1) ** 1.25 / weight``: O(aperture), no random
    draw (each request already out counts a little more than in proportion, as with Envoy's
    least-request ``active_request_bias`` above 1, since a client sees only its own).
    When the endpoints a pick compares average more than 1.25 requests in flight, the aperture
    takes in one more endpoint (up to all of them), and below half a request it gives one back
    (Finagle's load band): a busy client spreads over the whole pool. Where many clients balance
    independently, each sees only its own requests in flight and hears from each endpoint only
    when its own requests come back: keeping to five endpoints gives each client twice the
    answers per endpoint of ten, and at start-up each endpoint is probed by the clients that
    have it in their aperture, not by every client (the balancing simulation's fleet scenario:
    p99 1.09x the oracle's with fifty clients, instead of 1.15x).

    Once the aperture is wider than ``aperture``, or with ``aperture=None`` (every endpoint), a
    pick draws ``choices`` distinct random candidates from it, adds the previous pick to them,
    and takes the one with the lowest ``load = cost * (in_flight + 1) / weight``: O(choices) a
    pick. (A busy client's own requests are most of an endpoint's load: counted as they are.)
    Three (the default) rather than two make a pick that lands on a slow endpoint rarer, which
    matters most when many clients balance independently, each seeing only its own requests in
    flight. The previous pick (Mitzenmacher's "(d,1)-memory") costs no random draw and does
    about as much again as two more random choices would; it is remembered only once it has ten
    answers, so that a new endpoint's one lucky answer does not draw a run of requests, and it is
    forgotten when the candidates change. Weights (and slow start) bias the choice, but shares
    are not proportional to weights: latency decides. The average lives on the pool's
    `EndpointState` (``ewma``, ``ewma_at``) and is timed with the pool's clock.

    Finagle and linkerd weigh each answer by the time since the previous one (``1 - exp(-Δt/τ)``)
    and adopt every slower answer at once. With latencies as variable as they are long, the peaks
    make healthy endpoints look several times slower than their mean, and after a long silence one
    fast answer replaces a slow endpoint's whole estimate: in a fleet of independent clients
    that sent 1.2-1.5% of requests to a server five times slower than the rest, and put the p99
    at that server's latency (see the balancing simulation in the docs).

    Args:
        decay: τ in seconds (> 0): how fast an idle endpoint's cost decays, i.e. how soon an
            endpoint that was slow is tried again. Default 60 s.
        default_rtt: The estimate of an endpoint with no answer yet, in seconds (> 0).
        failure_penalty: The smallest latency a failed request counts as, in seconds (> 0).
        choices: How many distinct random candidates a pick compares, besides the previous
            pick, once the aperture is wider than ``aperture`` (>= 2; all of them in a smaller
            pool). Default 3.
        aperture: The fewest endpoints a pick compares (>= 2), all of them while the client
            is light; None: no aperture, every pick draws ``choices`` candidates from every
            endpoint (the rule before the aperture). Default 5.
        seed: Seed for the random choice of the candidates (None: from the OS).

    Raises:
        TypeError: ``choices`` or ``aperture`` is not an int, or a setting is not a number.
        ValueError: A non-positive or non-finite number, or ``choices`` or ``aperture`` < 2.
    """

    def __init__(
        self,
        decay: float = 60.0,
        *,
        default_rtt: float = 0.030,
        failure_penalty: float = 1.0,
        choices: int = 3,
        aperture: int | None = 5,
        seed: int | None = None,
    ) -> None:
        positive("decay", decay)
        positive("default_rtt", default_rtt)
        positive("failure_penalty", failure_penalty)
        count("choices", choices, minimum=2)
        if aperture is not None:
            count("aperture", aperture, minimum=2)
        self.decay = float(decay)
        self._rate = math.log2(math.e) / self.decay  # exp(-t / decay) = 2 ** (-t * rate)
        self.default_rtt = float(default_rtt)
        self.failure_penalty = float(failure_penalty)
        self.choices = choices
        self.aperture = aperture
        self._seed = seed
        self._rng = random.Random(seed)
        self._getrandbits = self._rng.getrandbits
        # The aperture's order: a per-balancer salt, so independent clients choose independent
        # subsets (from the seed when given, for reproducible runs; not from _rng, whose draws
        # are the picks').
        self._salt = (
            os.urandom(8) if seed is None else hash64(b"aperture %d" % seed).to_bytes(8, "little")
        )
        self._candidates: Sequence[EndpointState] = ()  # in aperture order: the first _k are it
        self._k = 0  # the aperture's width: picks compare the first _k of _candidates
        self._floor = 0  # the narrowest width: min(aperture, candidates); 0 without an aperture
        self._aperture: Sequence[EndpointState] = ()  # the first _floor candidates
        self._log_weights: tuple[float, ...] = ()
        self._weighted = False
        self._three = False  # the fast path: three choices over 3 to 2**16 candidates
        self._two = False  # two candidates: two choices, or a pool of two
        self._last: EndpointState = _NOBODY  # the previous pick, if its estimate is known

    def __repr__(self) -> str:
        return (
            f"PeakEWMA(decay={self.decay!r}, default_rtt={self.default_rtt!r},"
            f" failure_penalty={self.failure_penalty!r}, choices={self.choices},"
            f" aperture={self.aperture!r})"
        )

    def clone(self) -> PeakEWMA:
        return PeakEWMA(
            self.decay,
            default_rtt=self.default_rtt,
            failure_penalty=self.failure_penalty,
            choices=self.choices,
            aperture=self.aperture,
            seed=self._seed,
        )

    def rebuild(self, candidates: Sequence[EndpointState]) -> None:
        n = len(candidates)
        self._last = _NOBODY  # what was remembered is forgotten when the candidates change
        if self.aperture is None:
            self._candidates = tuple(candidates)
            self._floor = 0
            self._k = n
        else:
            # Weighted rendezvous order: the aperture keeps its endpoints when others come and
            # go, and an endpoint's chance to be in a client's aperture follows its weight.
            self._candidates = tuple(sorted(candidates, key=self._rank))
            self._floor = min(self.aperture, n)
            self._k = max(self._floor, min(self._k, n))
        self._aperture = self._candidates[: self._floor]  # what a pick at the floor compares
        weights = {c.weight for c in candidates}
        # Equal weights cancel out of every comparison: skip them.
        self._weighted = len(weights) > 1
        self._log_weights = (
            tuple(math.log2(c.weight) for c in self._candidates) if self._weighted else ()
        )
        self._paths()

    def _rank(self, state: EndpointState) -> float:
        # -ln(u) / weight for a uniform u in (0, 1] from the salt and the URL: the exponential
        # race of weighted rendezvous hashing (lowest first), on the configured weight, so that
        # slow start does not reorder the aperture.
        u = (hash64(self._salt + state.key) + 1) * 2.0**-64
        return -math.log(u) / state.endpoint.weight

    def _paths(self) -> None:
        # The fast paths for the aperture's width _k.
        k = self._k
        # The fast path draws each index from its own 30-bit number (a small int, no big-int
        # arithmetic): up to 2**16 candidates the largest bias is n / 2**30 < 1e-4.
        self._three = k > self._floor and self.choices == 3 and 3 <= k <= _MAX_DRAWN
        self._two = k > self._floor and 2 <= k <= _MAX_DRAWN and (self.choices == 2 or k == 2)

    def _resize(self, k: int) -> None:
        # The load band moved the aperture's width to k.
        self._k = k
        self._paths()

    def pick(self, key: bytes | None) -> EndpointState | None:
        if not self._three:
            if self._k == self._floor:
                return self._pick_all()
            return self._pick_two() if self._two else self._pick_other()
        candidates = self._candidates
        n = self._k
        draw = self._getrandbits
        # Three distinct indices: i, then j among the n - 1 others, then k among the n - 2 left.
        i = draw(30) % n
        j = draw(30) % (n - 1)
        if j >= i:
            j += 1
            k = draw(30) % (n - 2)
            if k >= i:
                k += 1
                if k >= j:
                    k += 1
        else:
            k = draw(30) % (n - 2)
            if k >= j:
                k += 1
                if k >= i:
                    k += 1
        a = candidates[i]
        b = candidates[j]
        c = candidates[k]
        last = self._last
        # Compare log2(load) = log2(cost) + elapsed decay + log2(in_flight + 1) - log2(weight):
        # the decay to "now" is the same for every candidate, so no clock read and no exp().
        try:
            load_a = a.ewma_score + _LOG_COUNT[a.in_flight]
            load_b = b.ewma_score + _LOG_COUNT[b.in_flight]
            load_c = c.ewma_score + _LOG_COUNT[c.in_flight]
            load_m = last.ewma_score + _LOG_COUNT[last.in_flight]
        except IndexError:  # 256 or more in flight: the long way
            return self._remember(self._compare((a, b, c, last)))
        if self._weighted:
            log_weights = self._log_weights
            load_a -= log_weights[i]
            load_b -= log_weights[j]
            load_c -= log_weights[k]
            load_m -= _log2(last.weight)
        if self._floor:  # a widened aperture: the three candidates sample its load
            self._band(a.in_flight + b.in_flight + c.in_flight, 3)
        best = a
        if load_b < load_a:
            best = b
            load_a = load_b
        if load_c < load_a:
            best = c
            load_a = load_c
        if load_m < load_a:
            best = last
            load_a = load_m
        if load_a == _NO_SAMPLE:
            # A candidate without an answer has log2(cost) = -inf and wins here, even with its
            # first request out: the long way applies the rules for those.
            return self._remember(self._compare((a, b, c, last)))
        self._last = best if best.requests >= _KNOWN else _NOBODY
        return best

    def _pick_two(self) -> EndpointState:
        # pick() with two random candidates (choices=2, or a pool of two).
        candidates = self._candidates
        n = self._k
        draw = self._getrandbits
        i = draw(30) % n
        j = draw(30) % (n - 1)
        if j >= i:
            j += 1
        a = candidates[i]
        b = candidates[j]
        last = self._last
        try:
            load_a = a.ewma_score + _LOG_COUNT[a.in_flight]
            load_b = b.ewma_score + _LOG_COUNT[b.in_flight]
            load_m = last.ewma_score + _LOG_COUNT[last.in_flight]
        except IndexError:
            return self._remember(self._compare((a, b, last)))
        if self._weighted:
            log_weights = self._log_weights
            load_a -= log_weights[i]
            load_b -= log_weights[j]
            load_m -= _log2(last.weight)
        if self._floor:
            self._band(a.in_flight + b.in_flight, 2)
        best = a
        if load_b < load_a:
            best = b
            load_a = load_b
        if load_m < load_a:
            best = last
            load_a = load_m
        if load_a == _NO_SAMPLE:
            return self._remember(self._compare((a, b, last)))
        self._last = best if best.requests >= _KNOWN else _NOBODY
        return best

    def _pick_other(self) -> EndpointState | None:
        # No or one candidate, more than three choices, or a huge pool: the same rule as pick()
        # over a sample.
        candidates = self._candidates
        n = self._k
        if n <= 1:
            return candidates[0] if n else None
        indices = self._rng.sample(range(n), min(self.choices, n))
        chosen = [candidates[i] for i in indices]
        if self._floor:
            self._band(sum(s.in_flight for s in chosen), len(chosen))
        last = self._last
        chosen.append(last)
        try:
            loads = [s.ewma_score + _LOG_COUNT[s.in_flight] for s in chosen]
        except IndexError:  # 256 or more in flight: the long way
            return self._remember(self._compare(chosen))
        if self._weighted:
            log_weights = self._log_weights
            for k, i in enumerate(indices):
                loads[k] -= log_weights[i]
            loads[-1] -= _log2(last.weight)
        best = min(range(len(loads)), key=loads.__getitem__)
        if loads[best] == _NO_SAMPLE:  # a candidate without an answer: the long way
            return self._remember(self._compare(chosen))
        return self._remember(chosen[best])

    def _pick_all(self) -> EndpointState | None:
        # The aperture at its narrowest: compare every endpoint in it, O(aperture), no draws
        # and no previous pick (it is one of them).
        aperture = self._aperture
        if self._weighted:
            return self._pick_all_weighted()
        best: EndpointState | None = None
        best_load = math.inf
        total = 0
        try:
            for state in aperture:
                in_flight = state.in_flight
                total += in_flight
                load = state.ewma_score + _LOG_COUNT_LIGHT[in_flight]
                if load < best_load:
                    best = state
                    best_load = load
        except IndexError:  # 256 or more in flight: the long way
            return self._compare(aperture)
        if total > _HIGH_LOAD * len(aperture) and len(aperture) < len(self._candidates):
            self._resize(len(aperture) + 1)
        if best_load == _NO_SAMPLE:  # a candidate without an answer: the long way
            return self._compare(aperture)
        return best

    def _pick_all_weighted(self) -> EndpointState | None:
        # _pick_all with unequal weights: each load less log2(weight). (Kept apart: one loop
        # for both cost the equal-weights pick ~3,800 instructions a cycle, 1.31x least-request
        # instead of 1.09x, measured with `balancing.py --instructions`.)
        aperture = self._aperture
        log_weights = self._log_weights
        best: EndpointState | None = None
        best_load = math.inf
        total = 0
        try:
            for i, state in enumerate(aperture):
                in_flight = state.in_flight
                total += in_flight
                load = state.ewma_score + _LOG_COUNT_LIGHT[in_flight] - log_weights[i]
                if load < best_load:
                    best = state
                    best_load = load
        except IndexError:
            return self._compare(aperture)
        if total > _HIGH_LOAD * len(aperture) and len(aperture) < len(self._candidates):
            self._resize(len(aperture) + 1)
        if best_load == _NO_SAMPLE:
            return self._compare(aperture)
        return best

    def _band(self, in_flight: int, compared: int) -> None:
        # Finagle's aperture load band, on the in-flight counts of the endpoints a pick compared.
        k = self._k
        if in_flight > _HIGH_LOAD * compared:
            if k < len(self._candidates):
                self._resize(k + 1)
        elif in_flight < _LOW_LOAD * compared and k > self._floor:
            self._resize(k - 1)

    def _remember(self, state: EndpointState) -> EndpointState:
        self._last = state if state.requests >= _KNOWN else _NOBODY
        return state

    def _compare(self, states: Sequence[EndpointState]) -> EndpointState:
        # The long way, for a candidate without an answer or with 256+ requests in flight:
        # compare loads at now, with the decayed costs; the first of equal loads wins. An
        # untried candidate with nothing in flight has load 0, below every other (a measured cost
        # is >= _MIN_COST): the first such wins without the clock (a cold pool's common case).
        for state in states:
            if state.ewma < 0.0 and not state.in_flight:
                return state
        return min(states, key=self._load)

    def _load(self, state: EndpointState) -> float:
        if state is _NOBODY:
            return math.inf
        if state.ewma < 0.0:
            return _AWAITING_FIRST * state.in_flight
        return self.cost(state) * (state.in_flight + 1) / state.weight

    def observe(
        self, state: EndpointState, latency: float, failed: bool, now: float | None = None
    ) -> None:
        """Learn from one answer of *state* (the pool's leases call this; see the class docs).

        Args:
            state: The endpoint that answered.
            latency: Seconds from the request to its answer.
            failed: True for a 5xx, a 429 or an error.
            now: The pool clock's reading when the answer came; None reads the clock. A lease
                passes the reading it took for the latency, which saves a second one.
        """
        if now is None:
            clock = self._clock
            now = clock() if clock is not None else state.ewma_at
        at = state.ewma_at
        cost = state.ewma
        rate = self._rate  # log2(e) / decay: a product is cheaper than a quotient
        if failed:
            cost = max(
                latency, self.failure_penalty, 2.0 * (self.default_rtt if cost < 0.0 else cost)
            )
            at = now
        elif cost < 0.0:
            cost = latency  # the first answer is adopted as it is
            at = now
        else:
            # The plain mean of the first answers (the pool counts this one in `requests`), then
            # _WEIGHT per answer: the first answer alone would still be 2/3 of it four answers on.
            n = state.requests
            weight = _WEIGHT if n >= _AVERAGED else (1.0 / n if n else _WEIGHT)
            if latency >= cost or latency >= cost * _exp2((at - now) * rate):
                at = now
            # else: faster than even the decayed cost the picks saw, so the idle decay goes on
            # from where it was, and an endpoint that has recovered is not shunned after one answer.
            cost += weight * (latency - cost)
        state.ewma = cost
        state.ewma_at = at
        # What pick compares: log2(cost decayed to time 0), i.e. log2(cost) + ewma_at * rate.
        state.ewma_score = _log2(cost if cost > _MIN_COST else _MIN_COST) + at * rate

    def cost(self, state: EndpointState) -> float:
        """The current latency estimate of *state* in seconds (decayed to the clock's now)."""
        cost = state.ewma
        if cost < 0.0:
            return self.default_rtt
        clock = self._clock
        idle = clock() - state.ewma_at if clock is not None else 0.0
        if idle > 0.0:
            cost *= _exp2(-idle * self._rate)
        return max(cost, _MIN_COST)
