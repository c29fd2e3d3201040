"""Events: what a pool, the health checker, a discovery runner or an adaptive concurrency limit
reports when its state changes.

Handlers are plain callables taking an `Event`; they run synchronously, outside any lock, and must
be quick (hand work to a queue if it is slow). An exception in a handler is logged and swallowed:
observability must never break traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Literal, final

import attrs

__all__ = ["Event", "EventHandler", "EventKind", "emit"]

logger = logging.getLogger("tenantlb")

EventKind = Literal[
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
]


@final
@attrs.define(frozen=True, kw_only=True)
class Event:
    """One state change.

    Attributes:
        kind: What happened, e.g. ``"ejected"``, ``"panic_entered"`` or
            ``"concurrency_limit_changed"``.
        pool: The name of the pool it happened in (of the `AdaptiveConcurrency`, for its events).
        url: The endpoint concerned, or None for pool-wide events (panic).
        reason: A short human-readable cause (``"5 consecutive 5xx"``).
        at: The pool clock's reading when it happened.
    """

    kind: EventKind
    pool: str
    url: str | None = None
    reason: str = ""
    at: float = 0.0


EventHandler = Callable[[Event], None]


def emit(handlers: Iterable[EventHandler], events: Iterable[Event]) -> None:
    """Deliver *events* to every handler; a failing handler is logged, never raised."""
    for event in events:
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                logger.exception("tenantlb event handler %r failed on %s", handler, event.kind)
