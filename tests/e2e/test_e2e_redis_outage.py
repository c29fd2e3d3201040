"""SIGKILL redis-server under traffic through the gateway process, then restart it: each `on_error`
policy is honoured at the HTTP edge, no raw exception reaches a client (a 503 problem+json under
fail_closed), and no tenant is over-admitted once Redis is back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

import tenantlb as tlb
from tests.conftest import RedisServer, running_redis
from tests.support.backends import start_backends
from tests.support.gateway_process import GatewayProcess

pytestmark = pytest.mark.slow

KEY = "sk-e2e-redis-0123456789"
LIMIT = 20


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def send(client: httpx.Client, n: int) -> Counter[int]:
    got: Counter[int] = Counter()
    for _ in range(n):
        response = client.get("/items", headers={"x-api-key": KEY})
        got[response.status_code] += 1
        if response.status_code >= 500:
            assert response.headers["content-type"] == "application/problem+json"
            assert "redis" not in response.text.lower()  # no internal detail reaches a client
    return got


@pytest.mark.parametrize("policy", ["fail_closed", "fail_open", "memory"])
def test_redis_killed_and_restarted_under_traffic(redis: RedisServer, policy: str) -> None:
    """Outage: fail_closed answers 503, fail_open and memory admit; after the restart the tenant's
    allowance holds exactly (Redis restarted empty, so it is a fresh allowance)."""
    with start_backends("r1") as backends:
        config = {
            "gateway": {
                "store": {"type": "redis", "url": redis.url, "on_error": policy, "timeout": 0.3}
            },
            "pools": {"api": {"endpoints": [b.url for b in backends]}},
            "tenants": [
                {
                    "id": "acme",
                    "api_keys": [tlb.hash_api_key(KEY)],
                    "upstream": "api",
                    "limits": [{"limit": LIMIT, "per": 3600}],
                }
            ],
        }
        with (
            GatewayProcess(config) as gateway,
            httpx.Client(base_url=gateway.url, timeout=10) as client,
        ):
            before = send(client, 10)
            assert before == {200: 10}

            redis.stop()  # SIGKILL
            during = send(client, 10)
            if policy == "fail_closed":
                assert during == {503: 10}
            else:
                assert during == {200: 10}  # fail_open admits; memory decides locally (fresh)

            redis.start()  # same port, empty: the allowance starts afresh
            after = send(client, 2 * LIMIT)
            assert after[200] == LIMIT, after
            assert after[429] == LIMIT, after
            assert set(after) <= {200, 429}
            stats = gateway.stats()
            assert stats["in_flight"] == 0
            assert stats["refused"].get("store_unavailable", 0) == (
                10 if policy == "fail_closed" else 0
            )
