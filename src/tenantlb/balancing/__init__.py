"""Balancing: endpoints, pools, leases and the strategies that pick among them."""

from __future__ import annotations

from .._registry import publish as _publish
from ._balanced import EndpointStats as EndpointStats
from ._balanced import PoolStats as PoolStats
from ._balancer import Balancer as Balancer
from ._balancer import BalancerBase as BalancerBase
from ._balancer import EndpointState as EndpointState
from ._balancer import OutcomeObserver as OutcomeObserver
from ._endpoint import Endpoint as Endpoint
from ._endpoint import normalize_url as normalize_url
from ._lease import Lease as Lease
from ._outlier import OutlierDetector as OutlierDetector
from ._outlier import OutlierDetectorStats as OutlierDetectorStats
from ._outlier import OutlierEndpointStats as OutlierEndpointStats
from ._pool import Pool as Pool
from ._registry import BALANCERS as BALANCERS
from ._registry import register_balancer as register_balancer
from ._retry_budget import RetryBudget as RetryBudget
from ._retry_budget import RetryBudgetStats as RetryBudgetStats
from ._round_robin import RoundRobin as RoundRobin
from ._slow_start import SlowStart as SlowStart
from ._subset import PoolSubset as PoolSubset

# --- strategies (added by their modules) ---
# isort: split
from ._bounded_load import BoundedLoad as BoundedLoad
from ._least_request import LeastRequest as LeastRequest
from ._maglev import Maglev as Maglev
from ._peak_ewma import PeakEWMA as PeakEWMA
from ._rendezvous import Rendezvous as Rendezvous
from ._ring_hash import RingHash as RingHash
from ._weighted_random import WeightedRandom as WeightedRandom

__all__ = [
    "BALANCERS",
    "Balancer",
    "BalancerBase",
    "BoundedLoad",
    "Endpoint",
    "EndpointState",
    "EndpointStats",
    "Lease",
    "LeastRequest",
    "Maglev",
    "OutcomeObserver",
    "OutlierDetector",
    "OutlierDetectorStats",
    "OutlierEndpointStats",
    "PeakEWMA",
    "Pool",
    "PoolStats",
    "PoolSubset",
    "Rendezvous",
    "RetryBudget",
    "RetryBudgetStats",
    "RingHash",
    "RoundRobin",
    "SlowStart",
    "WeightedRandom",
    "normalize_url",
    "register_balancer",
]

_publish(globals(), __all__, __name__)
