"""Prometheus metrics for a gateway and its pools (``pip install 'tenantlb[prometheus]'``).

```python
import prometheus_client
import tenantlb as tlb
from tenantlb.observability.prometheus import PrometheusMetrics

pool = tlb.Pool(["http://10.0.0.1:8000", "http://10.0.0.2:8000"], name="api")
metrics = PrometheusMetrics(pool)            # registers with prometheus_client.REGISTRY
with pool.acquire() as lease:
    lease.record(status=200)
print(prometheus_client.generate_latest().decode())
```

Counters and the latency histogram are fed by per-request events as they happen; gauges (in flight,
ejected, healthy, panic) are read from the pools' and gateways' stats snapshots at scrape time, so
they are exact whenever Prometheus looks. Every metric is named ``<namespace>_...`` (default
``tenantlb``):

| metric | type | labels |
|---|---|---|
| ``upstream_requests_total`` | counter | pool, endpoint, outcome (``2xx`` .. ``5xx``, ``error``) |
| ``upstream_request_duration_seconds`` | histogram | pool, endpoint, outcome |
| ``admissions_total`` | counter | pool |
| ``refusals_total`` | counter | reason (``rate_limited``, ``unauthenticated``, ...) |
| ``rate_limit_decisions_total`` | counter | decision (``allowed``, ``refused``) |
| ``panic_picks_total`` | counter | pool |
| ``ejections_total`` | counter | pool, endpoint |
| ``retries_total`` | counter | pool |
| ``retry_budget_exhausted_total`` | counter | pool |
| ``store_outages_total`` | counter | |
| ``endpoint_in_flight`` | gauge | pool, endpoint |
| ``endpoint_ejected`` / ``endpoint_healthy`` | gauge (0/1) | pool, endpoint |
| ``pool_panic`` / ``pool_available_endpoints`` | gauge | pool |
| ``gateway_in_flight`` | gauge | (tenant) |
| ``store_available`` | gauge (0/1) | (only for stores that report it: ``RedisStore``) |

With ``tenant_label=True`` the request, admission, refusal, rate-limit and retry metrics (and
``gateway_in_flight``) also carry a ``tenant`` label: the tenant id, "" when no tenant matched.
Cardinality is then the number of tenants: the choice is yours. API keys and digests never appear.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, final

from ._sources import Sources, outcome_label, require

require("prometheus_client", "prometheus")

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram  # noqa: E402
from prometheus_client.core import GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .._events import Event
    from ..balancing import Pool
    from ..gateway import Gateway

__all__ = ["DEFAULT_BUCKETS", "PrometheusMetrics"]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Latency buckets in seconds: Prometheus' defaults, stretched to a minute for LLM-style calls."""


@final
class PrometheusMetrics(Collector):
    """A prometheus-client collector that subscribes to gateways and pools.

    Args:
        sources: `Gateway` objects (their pools are watched too) and bare `Pool` objects; more
            with `watch`.
        registry: Where to register (default ``prometheus_client.REGISTRY``); None registers
            nowhere (register it yourself, or read `collect`).
        tenant_label: Add a ``tenant`` label (the tenant id) to per-tenant metrics. Off by
            default: each tenant is then one more series per metric.
        namespace: The metric name prefix.
        buckets: Upper bounds of the latency histogram, in seconds.

    Raises:
        TypeError: A source that is neither a `Gateway` nor a `Pool`.
        ValueError: An empty *namespace* or empty *buckets*.
    """

    def __init__(
        self,
        *sources: Gateway | Pool,
        registry: CollectorRegistry | None = REGISTRY,
        tenant_label: bool = False,
        namespace: str = "tenantlb",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if not isinstance(namespace, str) or not namespace:
            msg = f"namespace must be a non-empty str, got {namespace!r}"
            raise ValueError(msg)
        if not buckets:
            msg = "buckets must name at least one upper bound"
            raise ValueError(msg)
        self._tenant_label = bool(tenant_label)
        self._namespace = namespace
        tenant: tuple[str, ...] = ("tenant",) if self._tenant_label else ()
        ns = namespace

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, namespace=ns, registry=None)

        self._requests = counter(
            "upstream_requests",
            "Requests sent to an upstream endpoint, by outcome.",
            ("pool", "endpoint", "outcome", *tenant),
        )
        self._latency = Histogram(
            "upstream_request_duration_seconds",
            "Seconds from picking an endpoint to recording the outcome.",
            ("pool", "endpoint", "outcome", *tenant),
            namespace=ns,
            registry=None,
            buckets=tuple(buckets),
        )
        self._admissions = counter(
            "admissions", "Requests the gateway admitted.", ("pool", *tenant)
        )
        self._refusals = counter(
            "refusals", "Requests the gateway refused, by reason.", ("reason", *tenant)
        )
        self._decisions = counter(
            "rate_limit_decisions", "Rate-limit decisions.", ("decision", *tenant)
        )
        self._panic_picks = counter(
            "panic_picks", "Picks made while the pool was in panic mode.", ("pool",)
        )
        self._ejections = counter(
            "ejections", "Endpoints ejected by outlier detection.", ("pool", "endpoint")
        )
        self._retries = counter("retries", "Requests retried on another endpoint.", ("pool",))
        self._exhausted = counter(
            "retry_budget_exhausted", "Retries the retry budget refused.", ("pool",)
        )
        self._outages = counter(
            "store_outages", "Times the rate-limit store became unavailable.", ()
        )
        self._discovery_outages = counter(
            "discovery_outages",
            "Times service discovery for a pool began failing (its endpoints were kept).",
            ("pool",),
        )
        self._metrics = (
            self._requests,
            self._latency,
            self._admissions,
            self._refusals,
            self._decisions,
            self._panic_picks,
            self._ejections,
            self._retries,
            self._exhausted,
            self._outages,
            self._discovery_outages,
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
        self._registry = registry
        if registry is not None:
            registry.register(self)

    def watch(self, *sources: Gateway | Pool) -> None:
        """Subscribe to more gateways or pools (each is watched once however often it is given)."""
        self._sources.add(sources)

    def close(self) -> None:
        """Unsubscribe from every source and unregister from the registry."""
        self._sources.close()
        registry, self._registry = self._registry, None
        if registry is not None:
            registry.unregister(self)

    # -- the event handler ---------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Count one event (this object is the handler it subscribes with)."""
        on = self._on.get(event.kind)
        if on is not None:
            on(event)

    def _tenant(self, event: Event) -> tuple[str, ...]:
        return (event.tenant or "",) if self._tenant_label else ()

    def _outcome(self, event: Event) -> None:
        labels = (event.pool, event.url or "", outcome_label(event), *self._tenant(event))
        self._requests.labels(*labels).inc()
        if event.latency is not None:
            self._latency.labels(*labels).observe(event.latency)

    def _admitted(self, event: Event) -> None:
        self._admissions.labels(event.pool, *self._tenant(event)).inc()

    def _refused(self, event: Event) -> None:
        self._refusals.labels(event.reason, *self._tenant(event)).inc()

    def _rate_limit(self, event: Event) -> None:
        decision = "allowed" if event.allowed else "refused"
        self._decisions.labels(decision, *self._tenant(event)).inc()

    def _pick(self, event: Event) -> None:
        if event.panic:
            self._panic_picks.labels(event.pool).inc()

    def _ejected(self, event: Event) -> None:
        self._ejections.labels(event.pool, event.url or "").inc()

    def _retry(self, event: Event) -> None:
        self._retries.labels(event.pool).inc()

    def _budget(self, event: Event) -> None:
        self._exhausted.labels(event.pool).inc()

    def _outage(self, event: Event) -> None:
        self._outages.inc()

    def _discovery_outage(self, event: Event) -> None:
        self._discovery_outages.labels(event.pool).inc()

    # -- the collector -------------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        """The metric families without samples (so registries can check names up front)."""
        for metric in self._metrics:
            yield from metric.describe()
        yield from self._gauges(sample=False)

    def collect(self) -> Iterable[Metric]:
        """Every counter and histogram, and gauges read from fresh stats snapshots."""
        for metric in self._metrics:
            yield from metric.collect()
        yield from self._gauges(sample=True)

    def _gauges(self, *, sample: bool) -> Iterator[Metric]:
        ns = self._namespace
        ep = ("pool", "endpoint")
        in_flight = GaugeMetricFamily(
            f"{ns}_endpoint_in_flight", "Requests in flight to the endpoint.", labels=ep
        )
        ejected = GaugeMetricFamily(
            f"{ns}_endpoint_ejected", "1 while the endpoint is ejected.", labels=ep
        )
        healthy = GaugeMetricFamily(
            f"{ns}_endpoint_healthy", "1 while active health checks pass.", labels=ep
        )
        panic = GaugeMetricFamily(
            f"{ns}_pool_panic", "1 while the pool balances across all endpoints.", labels=["pool"]
        )
        available = GaugeMetricFamily(
            f"{ns}_pool_available_endpoints",
            "Endpoints healthy and not ejected.",
            labels=["pool"],
        )
        gateway = GaugeMetricFamily(
            f"{ns}_gateway_in_flight",
            "Admitted requests not finished yet.",
            labels=["tenant"] if self._tenant_label else [],
        )
        if sample:
            for stats in self._sources.pool_stats():
                for e in stats.endpoints:
                    in_flight.add_metric([stats.name, e.url], e.in_flight)
                    ejected.add_metric([stats.name, e.url], float(e.ejected))
                    healthy.add_metric([stats.name, e.url], float(e.healthy))
                panic.add_metric([stats.name], float(stats.panic))
                available.add_metric([stats.name], stats.available)
            for labels, value in self._sources.gateway_in_flight(self._tenant_label).items():
                gateway.add_metric(list(labels), value)
        store = GaugeMetricFamily(
            f"{ns}_store_available",
            "1 while the rate-limit store answers (stores that report it, e.g. Redis).",
            labels=[],
        )
        if sample:
            up = self._sources.store_available()
            if up is not None:
                store.add_metric([], up)
        yield from (in_flight, ejected, healthy, panic, available, gateway, store)
