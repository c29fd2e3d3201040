"""OpenTelemetry metrics for a gateway and its pools (``pip install 'tenantlb[otel]'``).

```python
import tenantlb as tlb
from tenantlb.observability.otel import OTelMetrics

pool = tlb.Pool(["http://10.0.0.1:8000"], name="api")
metrics = OTelMetrics(pool)     # the global MeterProvider; pass meter_provider= to choose one
with pool.acquire() as lease:
    lease.record(status=200)
```

The same measurements as `tenantlb.observability.prometheus`, through the OpenTelemetry metrics API
(only ``opentelemetry-api`` is needed; the SDK or a distro the application configures decides where
they go). Counters and the ``tenantlb.upstream.request.duration`` histogram (seconds) are fed by
events; in-flight, ejected, healthy and panic are observable gauges read from stats snapshots at
collection time. Attributes: ``pool``, ``endpoint``, ``outcome`` (``2xx`` .. ``5xx``, ``error``),
``reason``, ``decision``, and ``tenant`` only with ``tenant_label=True``. Never a key or digest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, final

from ._sources import Sources, outcome_label, require

require("opentelemetry.metrics", "otel")

from opentelemetry import metrics  # noqa: E402

if TYPE_CHECKING:
    from .._events import Event
    from ..balancing import EndpointStats, Pool
    from ..gateway import Gateway

__all__ = ["OTelMetrics"]

_Attributes = dict[str, str | bool]


@final
class OTelMetrics:
    """Record tenantlb's events and stats as OpenTelemetry metrics.

    Args:
        sources: `Gateway` objects (their pools are watched too) and bare `Pool` objects; more
            with `watch`.
        meter_provider: The provider to get the ``tenantlb`` meter from (default: the global one).
        tenant_label: Add a ``tenant`` attribute (the tenant id) to per-tenant measurements.
            Off by default: each tenant is one more time series.

    Raises:
        TypeError: A source that is neither a `Gateway` nor a `Pool`.
    """

    def __init__(
        self,
        *sources: Gateway | Pool,
        meter_provider: metrics.MeterProvider | None = None,
        tenant_label: bool = False,
    ) -> None:
        from .. import __version__

        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter("tenantlb", __version__)
        self._tenant_label = bool(tenant_label)
        self._requests = meter.create_counter(
            "tenantlb.upstream.requests", "{request}", "Requests sent to an upstream endpoint."
        )
        self._latency = meter.create_histogram(
            "tenantlb.upstream.request.duration",
            "s",
            "Seconds from picking an endpoint to recording the outcome.",
        )
        self._admissions = meter.create_counter(
            "tenantlb.admissions", "{request}", "Requests the gateway admitted."
        )
        self._refusals = meter.create_counter(
            "tenantlb.refusals", "{request}", "Requests the gateway refused, by reason."
        )
        self._decisions = meter.create_counter(
            "tenantlb.rate_limit.decisions", "{decision}", "Rate-limit decisions."
        )
        self._panic_picks = meter.create_counter(
            "tenantlb.panic_picks", "{pick}", "Picks made while the pool was in panic mode."
        )
        self._ejections = meter.create_counter(
            "tenantlb.ejections", "{ejection}", "Endpoints ejected by outlier detection."
        )
        self._retries = meter.create_counter(
            "tenantlb.retries", "{retry}", "Requests retried on another endpoint."
        )
        self._exhausted = meter.create_counter(
            "tenantlb.retry_budget.exhausted", "{retry}", "Retries the retry budget refused."
        )
        self._outages = meter.create_counter(
            "tenantlb.store.outages", "{outage}", "Times the rate-limit store became unavailable."
        )
        self._discovery_outages = meter.create_counter(
            "tenantlb.discovery.outages",
            "{outage}",
            "Times service discovery for a pool began failing (its endpoints were kept).",
        )
        meter.create_observable_gauge(
            "tenantlb.endpoint.in_flight",
            [self._observe_in_flight],
            "{request}",
            "Requests in flight to the endpoint.",
        )
        meter.create_observable_gauge(
            "tenantlb.endpoint.ejected",
            [self._observe_ejected],
            "1",
            "1 while the endpoint is ejected.",
        )
        meter.create_observable_gauge(
            "tenantlb.endpoint.healthy",
            [self._observe_healthy],
            "1",
            "1 while active health checks pass.",
        )
        meter.create_observable_gauge(
            "tenantlb.pool.panic",
            [self._observe_panic],
            "1",
            "1 while the pool balances across all endpoints.",
        )
        meter.create_observable_gauge(
            "tenantlb.gateway.in_flight",
            [self._observe_gateway],
            "{request}",
            "Admitted requests not finished yet.",
        )
        meter.create_observable_gauge(
            "tenantlb.store.available",
            [self._observe_store],
            "1",
            "1 while the rate-limit store answers (stores that report it, e.g. Redis).",
        )
        self._on: dict[str, Callable[[Event], None]] = {
            "outcome": self._outcome,
            "admitted": self._admitted,
            "refused": self._refused,
            "rate_limit": self._rate_limit,
            "pick": self._pick,
            "ejected": self._ejected,
            "retry": self._retry,
            "retry_budget_exhausted": self._budget,
            "store_unavailable": self._outage,
            "discovery_failed": self._discovery_outage,
        }
        self._sources = Sources(self)
        self._sources.add(sources)

    def watch(self, *sources: Gateway | Pool) -> None:
        """Subscribe to more gateways or pools (each is watched once however often it is given)."""
        self._sources.add(sources)

    def close(self) -> None:
        """Unsubscribe from every source (the gauges then report nothing)."""
        self._sources.close()

    # -- the event handler ---------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Record one event (this object is the handler it subscribes with)."""
        on = self._on.get(event.kind)
        if on is not None:
            on(event)

    def _with_tenant(self, attributes: _Attributes, event: Event) -> _Attributes:
        if self._tenant_label:
            attributes["tenant"] = event.tenant or ""
        return attributes

    def _outcome(self, event: Event) -> None:
        attributes = self._with_tenant(
            {"pool": event.pool, "endpoint": event.url or "", "outcome": outcome_label(event)},
            event,
        )
        self._requests.add(1, attributes)
        if event.latency is not None:
            self._latency.record(event.latency, attributes)

    def _admitted(self, event: Event) -> None:
        self._admissions.add(1, self._with_tenant({"pool": event.pool}, event))

    def _refused(self, event: Event) -> None:
        self._refusals.add(1, self._with_tenant({"reason": event.reason}, event))

    def _rate_limit(self, event: Event) -> None:
        decision = "allowed" if event.allowed else "refused"
        self._decisions.add(1, self._with_tenant({"decision": decision}, event))

    def _pick(self, event: Event) -> None:
        if event.panic:
            self._panic_picks.add(1, {"pool": event.pool})

    def _ejected(self, event: Event) -> None:
        self._ejections.add(1, {"pool": event.pool, "endpoint": event.url or ""})

    def _retry(self, event: Event) -> None:
        self._retries.add(1, {"pool": event.pool})

    def _budget(self, event: Event) -> None:
        self._exhausted.add(1, {"pool": event.pool})

    def _outage(self, event: Event) -> None:
        self._outages.add(1)

    def _discovery_outage(self, event: Event) -> None:
        self._discovery_outages.add(1, {"pool": event.pool})

    # -- observable gauges -----------------------------------------------------------------------------

    def _endpoint_gauge(self, value: Callable[[EndpointStats], int]) -> list[metrics.Observation]:
        return [
            metrics.Observation(value(e), {"pool": stats.name, "endpoint": e.url})
            for stats in self._sources.pool_stats()
            for e in stats.endpoints
        ]

    def _observe_in_flight(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return self._endpoint_gauge(lambda e: e.in_flight)

    def _observe_ejected(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return self._endpoint_gauge(lambda e: int(e.ejected))

    def _observe_healthy(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return self._endpoint_gauge(lambda e: int(e.healthy))

    def _observe_panic(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return [
            metrics.Observation(int(stats.panic), {"pool": stats.name})
            for stats in self._sources.pool_stats()
        ]

    def _observe_gateway(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return [
            metrics.Observation(value, {"tenant": labels[0]} if labels else {})
            for labels, value in self._sources.gateway_in_flight(self._tenant_label).items()
        ]

    def _observe_store(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        up = self._sources.store_available()
        return [] if up is None else [metrics.Observation(int(up))]
