"""Standard logging: one line per state change under "tenantlb", silent unless configured."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from typing import Any

import pytest
import redis

import tenantlb as tlb
from tenantlb.testing import ManualClock
from tests.conftest import RedisServer

from .support import KEYS, URLS, make_gateway, request


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


def test_one_line_per_state_change(clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    """Ejection, return, health transitions and panic are one line each, at the right level."""
    pool = tlb.Pool(URLS, name="api", clock=clock, outlier_detector=tlb.OutlierDetector())
    caplog.set_level(logging.INFO, logger="tenantlb")
    for _ in range(5):
        with pool.acquire(exclude=[URLS[1]]) as lease:
            lease.record(status=502)
    for _ in range(10):  # traffic itself is never logged
        with pool.acquire() as lease:
            lease.record(status=200)
    pool.mark_unhealthy(URLS[1], reason="HTTP 500")
    pool.mark_healthy(URLS[1], reason="HTTP 200")
    pool.uneject(URLS[0], reason="operator")
    ejected, *rest = lines(caplog)
    assert ejected[:2] == ("tenantlb.events", logging.WARNING)
    assert ejected[2].startswith(f"pool 'api': endpoint {URLS[0]} ejected (")
    assert rest == [
        (
            "tenantlb.events",
            logging.WARNING,
            f"pool 'api': endpoint {URLS[1]} marked unhealthy (HTTP 500)",
        ),
        (
            "tenantlb.events",
            logging.WARNING,
            "pool 'api' entered panic mode (0/2 endpoints available)",
        ),
        (
            "tenantlb.events",
            logging.INFO,
            f"pool 'api': endpoint {URLS[1]} marked healthy (HTTP 200)",
        ),
        ("tenantlb.events", logging.INFO, "pool 'api' left panic mode (1/2 endpoints available)"),
        (
            "tenantlb.events",
            logging.INFO,
            f"pool 'api': endpoint {URLS[0]} returned from ejection (operator)",
        ),
    ]


def test_membership_changes_are_debug(clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    """Routine membership changes are DEBUG lines, absent at INFO."""
    pool = tlb.Pool(URLS, name="api", clock=clock)
    caplog.set_level(logging.INFO, logger="tenantlb")
    pool.add("http://10.0.0.3:8000")
    assert lines(caplog) == []
    caplog.set_level(logging.DEBUG, logger="tenantlb")
    pool.remove("http://10.0.0.3:8000")
    assert lines(caplog) == [
        ("tenantlb.events", logging.DEBUG, "pool 'api': endpoint http://10.0.0.3:8000 removed")
    ]


@pytest.mark.anyio
async def test_store_outage_is_one_line_each_way_without_the_key(
    own_redis: RedisServer, anyio_backend: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis outage is one warning and its end one info line, whatever the traffic; no key."""
    client = redis.Redis.from_url(own_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    gateway = make_gateway(
        limits=[tlb.Rate(100, per=60.0)], store=tlb.RedisStore(client, on_error="fail_open")
    )
    caplog.set_level(logging.INFO, logger="tenantlb")
    with contextlib.closing(client):
        own_redis.stop()
        for _ in range(5):
            async with gateway.admit(request(KEYS["acme"])):
                pass
        own_redis.start()
        for _ in range(3):
            async with gateway.admit(request(KEYS["acme"])):
                pass
    records = lines(caplog)
    assert [level for _, level, _ in records] == [logging.WARNING, logging.INFO]
    assert all(name.startswith("tenantlb") for name, _, _ in records)
    text = "\n".join(message for _, _, message in records)
    assert KEYS["acme"] not in text
    assert tlb.hash_api_key(KEYS["acme"]).split(":", 1)[1] not in text


def test_quiet_by_default() -> None:
    """Without logging configured, an ejection and a panic print nothing (NullHandler)."""
    code = (
        "import tenantlb as tlb\n"
        "pool = tlb.Pool(['http://a', 'http://b'])\n"
        "pool.eject('http://a', 30.0, reason='test')\n"
        "pool.mark_unhealthy('http://b')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert (result.stdout, result.stderr) == ("", "")
