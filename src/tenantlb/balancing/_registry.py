"""`BALANCERS`: the balancer strategies by the names a config file uses.

Add your own with ``tenantlb.register_balancer("name", factory)`` (or as a class decorator); a
config file then names it like a built-in: ``balancer = { type = "name", ... }``. A factory takes
the table's other keys as keyword arguments; a key ``inner`` is itself a balancer spec.
"""

from __future__ import annotations

from collections.abc import Callable

from .._registry import Registry
from ._balancer import Balancer
from ._bounded_load import BoundedLoad
from ._least_request import LeastRequest
from ._maglev import Maglev
from ._peak_ewma import PeakEWMA
from ._rendezvous import Rendezvous
from ._ring_hash import RingHash
from ._round_robin import RoundRobin
from ._weighted_random import WeightedRandom

__all__ = ["BALANCERS", "register_balancer"]

BALANCERS: Registry[Callable[..., Balancer]] = Registry("balancer")
"""Balancer factories by name: the built-ins below, and those users register."""

register_balancer = BALANCERS.register
"""``register_balancer(name, factory, *, replace=False)``: add a balancer factory to `BALANCERS`.

Also a class decorator: ``@register_balancer("name")``. See `tenantlb._registry.Registry.register`;
a taken name is a ValueError unless *replace* is true.
"""

for _name, _factory in {
    "bounded_load": BoundedLoad,
    "least_request": LeastRequest,
    "maglev": Maglev,
    "peak_ewma": PeakEWMA,
    "rendezvous": Rendezvous,
    "ring_hash": RingHash,
    "round_robin": RoundRobin,
    "weighted_random": WeightedRandom,
}.items():
    register_balancer(_name, _factory)
