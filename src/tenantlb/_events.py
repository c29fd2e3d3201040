"""Events: every decision that matters, as one small frozen value a subscriber receives.

Two families share the `Event` type:

- **State changes** (``ejected``, ``healthy``, ``panic_entered``, ``store_unavailable``,
  ``discovery_failed``, ``concurrency_limit_changed``, ...) are
  rare. Every subscriber receives them, and each one is also one line on the ``tenantlb.events``
  logger (quiet unless the application configures logging).
- **Per-request events** (``pick``, ``outcome``, ``admitted``, ``refused``, ``rate_limit``,
  ``retry``, ``retry_budget_exhausted``) happen on every request. Only subscribers that ask for them
  (``subscribe(handler, per_request=True)``) receive them, and with none the hot path does not even
  build the event: it checks one list for emptiness and moves on.

Handlers are plain callables taking an `Event`; they run synchronously, outside any lock, and must
be quick (hand work to a queue if it is slow). An exception in a handler is logged and swallowed:
observability must never break traffic. Events never carry an API key or its digest: tenants are
named by their id, refusals by a fixed reason code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Final, Literal, final, get_args

import attrs

__all__ = [
    "EVENT_KINDS",
    "PER_REQUEST_KINDS",
    "REFUSAL_REASONS",
    "Event",
    "EventHandler",
    "EventKind",
    "emit",
    "log_state_changes",
]

logger = logging.getLogger("tenantlb")
events_logger = logging.getLogger("tenantlb.events")

EventKind = Literal[
    # state changes: pools (membership, health, ejection, panic) and stores
    "endpoint_added",
    "endpoint_removed",
    "weight_changed",
    "unhealthy",
    "healthy",
    "ejected",
    "unejected",
    "panic_entered",
    "panic_left",
    "discovery_failed",
    "discovery_recovered",
    "concurrency_limit_changed",
    "min_rtt_measuring",
    "min_rtt_measured",
    "store_unavailable",
    "store_recovered",
    # per-request: pools (pick, outcome), the gateway, and client adapters (retries)
    "pick",
    "outcome",
    "admitted",
    "refused",
    "rate_limit",
    "retry",
    "retry_budget_exhausted",
]

EVENT_KINDS: Final[frozenset[str]] = frozenset(get_args(EventKind))
"""Every event kind."""

PER_REQUEST_KINDS: Final[frozenset[str]] = frozenset(
    {"pick", "outcome", "admitted", "refused", "rate_limit", "retry", "retry_budget_exhausted"}
)
"""The kinds delivered only to subscribers that ask for per-request events."""

REFUSAL_REASONS: Final[frozenset[str]] = frozenset(
    {
        "unknown_tenant",
        "unauthenticated",
        "forbidden",
        "rate_limited",
        "over_capacity",
        "no_healthy_endpoint",
        "store_unavailable",
        "content_too_large",
        "headers_too_large",
        "rejected",  # a RequestRejected the gateway does not know by name (a bad Content-Length)
    }
)
"""The ``reason`` codes of ``refused`` events (one per `RequestRejected` subclass)."""


@final
@attrs.define(frozen=True, kw_only=True)
class Event:
    """One decision or state change.

    Only ``kind`` is always meaningful; each kind fills the fields that apply to it and leaves the
    others at their defaults (see the table in ``docs/concepts/observability.md``).

    Attributes:
        kind: What happened, e.g. ``"ejected"``, ``"outcome"`` or ``"refused"``.
        pool: The name of the pool concerned ("" when none is, e.g. a refusal before routing; the
            `AdaptiveConcurrency`'s name for its events).
        url: The endpoint concerned, or None for pool-wide and gateway events.
        reason: A short cause. State changes: human-readable (``"5 consecutive 5xx"``). ``refused``:
            a code from `REFUSAL_REASONS`. ``outcome``, ``retry``: the error's type name, if any.
        at: The emitter's clock reading when it happened.
        tenant: The tenant id, when one is known (never a key or digest).
        status: ``outcome``: the HTTP status (None for an error); ``refused``: the HTTP status to
            answer with.
        latency: ``outcome``: seconds from pick to record.
        panic: ``pick``, ``admitted``: whether the pool was in panic mode.
        allowed: ``rate_limit``: whether the limit admitted the request.
        remaining: ``rate_limit``: what is left of the tightest limit.
        retry_after: ``rate_limit``: seconds until a refused request could be admitted.
    """

    kind: EventKind
    pool: str = ""
    url: str | None = None
    reason: str = ""
    at: float = 0.0
    tenant: str | None = None
    status: int | None = None
    latency: float | None = None
    panic: bool = False
    allowed: bool | None = None
    remaining: float | None = None
    retry_after: float | None = None


EventHandler = Callable[[Event], None]


def emit(handlers: Iterable[EventHandler], events: Iterable[Event]) -> None:
    """Deliver *events* to every handler; a failing handler is logged, never raised."""
    for event in events:
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                logger.exception("tenantlb event handler %r failed on %s", handler, event.kind)


# State changes worth a log line, and at which level: losing capacity is a warning, regaining it
# is news. Membership changes are routine (deploys) and go to DEBUG.
_LOG_LEVELS: Final[dict[str, int]] = {
    "ejected": logging.WARNING,
    "unhealthy": logging.WARNING,
    "panic_entered": logging.WARNING,
    "store_unavailable": logging.WARNING,
    "unejected": logging.INFO,
    "healthy": logging.INFO,
    "panic_left": logging.INFO,
    "store_recovered": logging.INFO,
    "endpoint_added": logging.DEBUG,
    "endpoint_removed": logging.DEBUG,
    "weight_changed": logging.DEBUG,
}

_VERBS: Final[dict[str, str]] = {
    "ejected": "ejected",
    "unejected": "returned from ejection",
    "unhealthy": "marked unhealthy",
    "healthy": "marked healthy",
    "endpoint_added": "added",
    "endpoint_removed": "removed",
    "weight_changed": "reweighted",
    "panic_entered": "entered panic mode",
    "panic_left": "left panic mode",
    "store_unavailable": "unavailable",
    "store_recovered": "answers again",
}


def log_state_changes(events: Iterable[Event]) -> None:
    """Write one line per state change in *events* to the ``tenantlb.events`` logger.

    Per-request events are never logged (a metrics exporter counts them). The line names the pool,
    the endpoint URL (credentials are refused in endpoint URLs) and the reason; never a key.
    """
    for event in events:
        level = _LOG_LEVELS.get(event.kind)
        if level is None or not events_logger.isEnabledFor(level):
            continue
        verb = _VERBS[event.kind]
        if event.kind.startswith("store_"):
            subject = "rate-limit store"
        else:
            subject = f"pool {event.pool!r}" if event.pool else "tenantlb"
        if event.url is not None:
            subject += f": endpoint {event.url}"
        cause = f" ({event.reason})" if event.reason else ""
        events_logger.log(level, "%s %s%s", subject, verb, cause)
