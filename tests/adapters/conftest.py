"""Fixtures for adapter tests: real backends (uvicorn processes) and a gateway in front of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

import tenantlb as tlb
from tests.support.backends import BackendProcess

KEY = "sk-acme-0123456789abcdef"
OTHER_KEY = "sk-other-0123456789abcd"
OFF_KEY = "sk-off-0123456789abcdef0"


@pytest.fixture(scope="module")
def backends() -> Iterator[list[BackendProcess]]:
    """Three real backends, shared by a module's tests (tests that kill one start their own)."""
    with BackendProcess("b1") as b1, BackendProcess("b2") as b2, BackendProcess("b3") as b3:
        yield [b1, b2, b3]


def make_gateway(
    urls: list[str],
    *,
    limits: list[tlb.Rate] | None = None,
    max_concurrency: int | None = None,
    **kwargs: object,
) -> tlb.Gateway:
    """acme (key KEY, optional limits), other (OTHER_KEY) and a disabled tenant, all on pool "p"."""
    registry = tlb.TenantRegistry(
        [
            tlb.Tenant(
                "acme",
                api_keys=[tlb.hash_api_key(KEY)],
                upstream="p",
                limits=limits or [],
                max_concurrency=max_concurrency,
            ),
            tlb.Tenant("other", api_keys=[tlb.hash_api_key(OTHER_KEY)], upstream="p"),
            tlb.Tenant("off", api_keys=[tlb.hash_api_key(OFF_KEY)], upstream="p", enabled=False),
        ]
    )
    pool = tlb.Pool(urls, tlb.RoundRobin())
    return tlb.Gateway(registry=registry, pools={"p": pool}, **kwargs)  # type: ignore[arg-type]


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until *check()* holds (work finishing in a server thread), or fail naming it."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{check.__name__ if hasattr(check, '__name__') else check} never held"
            )
        time.sleep(0.01)


def in_flight(gateway: tlb.Gateway) -> int:
    return sum(p.in_flight for p in gateway.stats().pools.values())
