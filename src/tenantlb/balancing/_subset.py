"""`PoolSubset`: a view of a pool restricted to some of its endpoints (shuffle sharding)."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from .._events import Event
from ._balanced import PoolCore, _Balanced
from ._balancer import Balancer, EndpointState

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = ["PoolSubset"]


@final
class PoolSubset(_Balanced):
    """A view of a `Pool` restricted to some of its endpoints (see `Pool.subset`).

    It acquires and records like a pool; membership, weights and health are managed on the pool.
    """

    def __init__(
        self,
        pool: Pool,
        core: PoolCore,
        balancer: Balancer,
        urls: frozenset[str],
        members: list[EndpointState],
    ) -> None:
        self._pool = pool
        self._urls = urls
        balancer.bind(core.clock)
        super().__init__(core, balancer, self._mine(members), core.clock())

    def __repr__(self) -> str:
        return f"<PoolSubset of {self._name!r} endpoints={len(self._members)}>"

    @property
    def pool(self) -> Pool:
        """The pool this subset views."""
        return self._pool

    def emit(self, event: Event) -> None:
        """Deliver *event* to the pool's subscribers (see `Pool.emit`)."""
        self._pool.emit(event)

    def _refresh(
        self, now: float, events: list[Event], members: list[EndpointState] | None
    ) -> None:
        # The pool calls this under its lock after every change; *members* when membership changed.
        if members is not None:
            self._members = self._mine(members)
        self._recompute(now, events)

    def _mine(self, members: list[EndpointState]) -> list[EndpointState]:
        return [s for s in members if s.url in self._urls]
