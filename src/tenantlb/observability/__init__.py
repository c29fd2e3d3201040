"""Exporters that turn tenantlb's events and stats into metrics; each is an optional extra.

- `tenantlb.observability.prometheus`: ``PrometheusMetrics``, a prometheus-client collector
  (``pip install 'tenantlb[prometheus]'``).
- `tenantlb.observability.otel`: ``OTelMetrics``, the same through the OpenTelemetry metrics API
  (``pip install 'tenantlb[otel]'``).

Both subscribe to a `Gateway` (and its pools) or to bare pools, count per-request events
(``outcome``, ``admitted``, ``refused``, ``rate_limit``, ``retry``, ...) and read gauges (in flight,
ejected, healthy, panic) from the frozen stats snapshots when scraped. Tenant ids become label values
only with ``tenant_label=True``; API keys and their digests never appear.

This package re-exports the event protocol for handler authors. The core never imports it.
"""

from __future__ import annotations

from .._events import EVENT_KINDS as EVENT_KINDS
from .._events import PER_REQUEST_KINDS as PER_REQUEST_KINDS
from .._events import REFUSAL_REASONS as REFUSAL_REASONS
from .._events import Event as Event
from .._events import EventHandler as EventHandler
from .._events import EventKind as EventKind

__all__ = [
    "EVENT_KINDS",
    "PER_REQUEST_KINDS",
    "REFUSAL_REASONS",
    "Event",
    "EventHandler",
    "EventKind",
]
