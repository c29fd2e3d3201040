"""Discovery and active health checks on one pool, with real HTTP backends and a real file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import tenantlb as tlb
from tests.health.conftest import BackendsFactory, backends

pytestmark = pytest.mark.anyio

__all__ = ["backends"]  # the fixture, imported for this module


def write(path: Path, urls: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("endpoints = [" + ", ".join(f'"{u}"' for u in urls) + "]\n")
    os.replace(tmp, path)


async def wait_for(condition: Callable[[], bool]) -> None:
    """Wait (a liveness bound, not a timing assertion) until *condition()* holds."""
    with anyio.fail_after(20):
        while not condition():  # noqa: ASYNC110 - polls state two components share
            await anyio.sleep(0.01)


async def test_discovered_endpoints_are_health_checked(
    backends: BackendsFactory, tmp_path: Path
) -> None:
    """A discovered endpoint is checked as soon as it joins, and no longer once it leaves."""
    async with backends(3) as servers:
        good, bad, late = servers
        bad.mode = "error"
        path = tmp_path / "endpoints.toml"
        write(path, [good.url, bad.url])
        pool = tlb.Pool([])
        checker = tlb.HealthChecker(
            pool, probe=tlb.HTTPProbe("/healthz"), interval=1.0, timeout=0.9
        )

        def verdict(url: str) -> bool | None:
            return {h.url: h.healthy for h in checker.stats().endpoints}.get(url)

        async with (
            tlb.FileDiscovery(pool, path, interval=3600.0) as found,
            checker,
        ):
            await wait_for(lambda: verdict(bad.url) is False and verdict(good.url) is True)
            assert not pool.state(bad.url).healthy
            assert pool.state(good.url).healthy

            write(path, [good.url, late.url])  # bad leaves, late joins
            assert (await found.refresh()).last_outcome == "updated"
            await wait_for(lambda: late.hits > 0)
            hits = bad.hits
            await wait_for(lambda: late.hits >= 2)
            assert bad.hits == hits  # a removed endpoint is not checked any more
            assert {h.url for h in checker.stats().endpoints} == {good.url, late.url}
