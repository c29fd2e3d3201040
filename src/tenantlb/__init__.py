"""tenantlb: load balancing and multi-tenant gateway controls inside a Python process.

```python
import tenantlb as tlb

pool = tlb.Pool(["http://10.0.0.1:8000", "http://10.0.0.2:8000"], balancer=tlb.RoundRobin())
with pool.acquire() as lease:
    ...  # send the request to lease.endpoint.url
    lease.record(status=200)
```
"""

from __future__ import annotations

import logging as _logging

from ._clock import Clock as Clock
from ._errors import ConfigError as ConfigError
from ._errors import ContentTooLarge as ContentTooLarge
from ._errors import DiscoveryError as DiscoveryError
from ._errors import EndpointNotFound as EndpointNotFound
from ._errors import Forbidden as Forbidden
from ._errors import HeadersTooLarge as HeadersTooLarge
from ._errors import MissingCredentials as MissingCredentials
from ._errors import NoHealthyEndpoint as NoHealthyEndpoint
from ._errors import OverCapacity as OverCapacity
from ._errors import QueueFull as QueueFull
from ._errors import QueueTimeout as QueueTimeout
from ._errors import RateLimited as RateLimited
from ._errors import RequestRejected as RequestRejected
from ._errors import StoreUnavailable as StoreUnavailable
from ._errors import TenantLBError as TenantLBError
from ._errors import Unauthenticated as Unauthenticated
from ._errors import UnknownTenant as UnknownTenant
from ._events import Event as Event
from ._registry import publish as _publish

# --- balancing ---
from .balancing import Balancer as Balancer
from .balancing import BalancerBase as BalancerBase
from .balancing import BoundedLoad as BoundedLoad
from .balancing import Endpoint as Endpoint
from .balancing import EndpointStats as EndpointStats
from .balancing import Lease as Lease
from .balancing import LeastRequest as LeastRequest
from .balancing import Maglev as Maglev
from .balancing import PeakEWMA as PeakEWMA
from .balancing import Pool as Pool
from .balancing import PoolStats as PoolStats
from .balancing import Rendezvous as Rendezvous
from .balancing import RetryBudget as RetryBudget
from .balancing import RetryBudgetStats as RetryBudgetStats
from .balancing import RingHash as RingHash
from .balancing import RoundRobin as RoundRobin
from .balancing import SlowStart as SlowStart
from .balancing import WeightedRandom as WeightedRandom
from .balancing import register_balancer as register_balancer

# isort: split
# --- discovery ---
from .discovery import Discovery as Discovery
from .discovery import DiscoveryResult as DiscoveryResult
from .discovery import DiscoverySource as DiscoverySource
from .discovery import DiscoveryStats as DiscoveryStats
from .discovery import DNSDiscovery as DNSDiscovery
from .discovery import FileDiscovery as FileDiscovery

# isort: split
# --- config, fairness and the gateway ---
from .config import load_config as load_config
from .fairness import AdaptiveConcurrency as AdaptiveConcurrency
from .fairness import AdaptiveConcurrencyStats as AdaptiveConcurrencyStats
from .fairness import FairQueue as FairQueue
from .fairness import FairQueueStats as FairQueueStats
from .gateway import Admission as Admission
from .gateway import Gateway as Gateway
from .gateway import GatewayStats as GatewayStats
from .gateway import TenantStats as TenantStats
from .gateway import Ticket as Ticket

# --- health ---
from .health import EndpointHealth as EndpointHealth
from .health import HealthChecker as HealthChecker
from .health import HealthCheckerStats as HealthCheckerStats
from .health import HTTPProbe as HTTPProbe
from .health import OutlierDetector as OutlierDetector
from .health import OutlierDetectorStats as OutlierDetectorStats
from .health import OutlierEndpointStats as OutlierEndpointStats
from .health import Probe as Probe
from .health import ProbeResult as ProbeResult
from .health import TCPProbe as TCPProbe

# --- ratelimit ---
from .ratelimit import Algorithm as Algorithm
from .ratelimit import ConcurrencyLimiter as ConcurrencyLimiter
from .ratelimit import Decision as Decision
from .ratelimit import MemoryStore as MemoryStore
from .ratelimit import Rate as Rate
from .ratelimit import RateLimiter as RateLimiter
from .ratelimit import RedisStore as RedisStore
from .ratelimit import Store as Store
from .ratelimit import register_algorithm as register_algorithm
from .ratelimit import register_store as register_store

# --- tenants ---
from .tenants import APIKeyResolver as APIKeyResolver
from .tenants import HeaderResolver as HeaderResolver
from .tenants import HostResolver as HostResolver
from .tenants import PathPrefixResolver as PathPrefixResolver
from .tenants import RegistrySnapshot as RegistrySnapshot
from .tenants import RequestInfo as RequestInfo
from .tenants import Tenant as Tenant
from .tenants import TenantRegistry as TenantRegistry
from .tenants import TenantResolver as TenantResolver
from .tenants import hash_api_key as hash_api_key
from .tenants import register_resolver as register_resolver
from .tenants import shuffle_shard as shuffle_shard

__version__ = "0.1.0.dev0"

# A library stays quiet unless the application configures logging (state changes are logged under
# "tenantlb"; without this, Python's last-resort handler would print warnings to stderr).
_logging.getLogger("tenantlb").addHandler(_logging.NullHandler())

__all__ = [
    "APIKeyResolver",
    "AdaptiveConcurrency",
    "AdaptiveConcurrencyStats",
    "Admission",
    "Algorithm",
    "Balancer",
    "BalancerBase",
    "BoundedLoad",
    "Clock",
    "ConcurrencyLimiter",
    "ConfigError",
    "ContentTooLarge",
    "DNSDiscovery",
    "Decision",
    "Discovery",
    "DiscoveryError",
    "DiscoveryResult",
    "DiscoverySource",
    "DiscoveryStats",
    "Endpoint",
    "EndpointHealth",
    "EndpointNotFound",
    "EndpointStats",
    "Event",
    "FairQueue",
    "FairQueueStats",
    "FileDiscovery",
    "Forbidden",
    "Gateway",
    "GatewayStats",
    "HTTPProbe",
    "HeaderResolver",
    "HeadersTooLarge",
    "HealthChecker",
    "HealthCheckerStats",
    "HostResolver",
    "Lease",
    "LeastRequest",
    "Maglev",
    "MemoryStore",
    "MissingCredentials",
    "NoHealthyEndpoint",
    "OutlierDetector",
    "OutlierDetectorStats",
    "OutlierEndpointStats",
    "OverCapacity",
    "PathPrefixResolver",
    "PeakEWMA",
    "Pool",
    "PoolStats",
    "Probe",
    "ProbeResult",
    "QueueFull",
    "QueueTimeout",
    "Rate",
    "RateLimited",
    "RateLimiter",
    "RedisStore",
    "RegistrySnapshot",
    "Rendezvous",
    "RequestInfo",
    "RequestRejected",
    "RetryBudget",
    "RetryBudgetStats",
    "RingHash",
    "RoundRobin",
    "SlowStart",
    "Store",
    "StoreUnavailable",
    "TCPProbe",
    "Tenant",
    "TenantLBError",
    "TenantRegistry",
    "TenantResolver",
    "TenantStats",
    "Ticket",
    "Unauthenticated",
    "UnknownTenant",
    "WeightedRandom",
    "hash_api_key",
    "load_config",
    "register_algorithm",
    "register_balancer",
    "register_resolver",
    "register_store",
    "shuffle_shard",
    "__version__",
]

# Public classes and functions show where users import them from (``tenantlb.Pool``, not
# ``tenantlb.balancing._pool.Pool``) in reprs, tracebacks and docs, as httpx and anyio do.
_publish(globals(), __all__, __name__)
