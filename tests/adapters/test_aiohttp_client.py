"""aiohttp client middleware against real uvicorn backends (asyncio only: aiohttp runs on asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

import tenantlb as tlb
from tenantlb.adapters.aiohttp import BalancingMiddleware, balancing_middleware
from tests.support.backends import BackendProcess, ResetServer, free_port, start_backends

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def backends() -> Iterator[list[BackendProcess]]:
    with start_backends("b1", "b2", "b3") as started:
        yield started


@pytest.fixture
def urls(backends: list[BackendProcess]) -> list[str]:
    return [b.url for b in backends]


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def counts(pool: tlb.Pool) -> dict[str, int]:
    return {e.url: e.requests for e in pool.stats().endpoints}


def dead_first(live: str, dead: str) -> tlb.Pool:
    return tlb.Pool(
        [tlb.Endpoint(dead, weight=100), tlb.Endpoint(live, weight=1)], balancer=tlb.RoundRobin()
    )


async def get_json(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    async with session.get(url, **kwargs) as response:
        assert response.status == 200
        return await response.json()


async def settled(pool: tlb.Pool) -> None:
    """Wait until no lease is in flight (a body's end is recorded by a task of the middleware)."""
    for _ in range(1000):
        if pool.stats().in_flight == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a lease stayed in flight")


def host_of(payload: Any) -> str:
    return str(dict(payload["headers"])["host"])


async def test_balances_and_keeps_logical_host(urls: list[str]) -> None:
    """Requests spread over the pool; the Host header keeps the logical name."""
    pool = tlb.Pool(urls, balancer=tlb.RoundRobin())
    async with aiohttp.ClientSession(middlewares=[balancing_middleware(pool)]) as session:
        payloads = [await get_json(session, "http://users/v1/x?q=1") for _ in range(6)]
    assert {p["backend"] for p in payloads} == {"b1", "b2", "b3"}
    assert {host_of(p) for p in payloads} == {"users"}
    assert {(p["path"], p["query"]) for p in payloads} == {("/v1/x", "q=1")}
    assert pool.stats().in_flight == 0
    assert sum(counts(pool).values()) == 6


async def test_host_header_endpoint_and_prefix(urls: list[str]) -> None:
    """host_header='endpoint' sends the endpoint's address; a path prefix goes in front."""
    pool = tlb.Pool([urls[0] + "/api"])
    middleware = balancing_middleware(pool, host_header="endpoint")
    async with aiohttp.ClientSession(middlewares=[middleware]) as session:
        payload = await get_json(session, "http://users/v1/a%20b")
    assert host_of(payload) == urls[0].removeprefix("http://")
    assert payload["path"] == "/api/v1/a b"


async def test_mapping_by_host_and_passthrough(urls: list[str]) -> None:
    """Hosts in the mapping are balanced; other hosts pass through unchanged."""
    users = tlb.Pool(urls[:1])
    billing = tlb.Pool(urls[1:2])
    middleware = balancing_middleware({"users": users, "billing:8080": billing})
    async with aiohttp.ClientSession(middlewares=[middleware]) as session:
        assert (await get_json(session, "http://users/"))["backend"] == "b1"
        assert (await get_json(session, "http://billing:8080/"))["backend"] == "b2"
        direct = await get_json(session, urls[2] + "/direct")
    assert direct["backend"] == "b3"
    assert sum(counts(users).values()) == sum(counts(billing).values()) == 1


async def test_key_header_is_sticky(urls: list[str]) -> None:
    """key= a header name feeds a hashing balancer: one key, one backend."""
    pool = tlb.Pool(urls, balancer=tlb.RingHash())
    async with aiohttp.ClientSession(middlewares=[balancing_middleware(pool, key="x-user")]) as s:
        for user in ("alice", "bob", "carol"):
            seen = {
                (await get_json(s, "http://users/", headers={"x-user": user}))["backend"]
                for _ in range(5)
            }
            assert len(seen) == 1


async def test_connect_error_retried_for_post_with_body(urls: list[str]) -> None:
    """A connect error is retried for POST, and the body is sent in full to the next endpoint."""
    dead = dead_url()
    pool = dead_first(urls[0], dead)
    middleware = balancing_middleware(pool)
    async with (
        aiohttp.ClientSession(middlewares=[middleware]) as session,
        session.post("http://users/upload", data=b"hello") as response,
    ):
        assert (await response.json())["size"] == 5
    assert {e.url: e.failures for e in pool.stats().endpoints}[dead] == 1
    assert middleware.retry_budget.stats().retries == 1


async def test_reset_retried_for_get_not_post(urls: list[str]) -> None:
    """A reset before the response is retried for GET but not for POST."""
    with ResetServer() as reset:
        pool = dead_first(urls[0], reset.url)
        # a fresh connection per request, so aiohttp's own keep-alive retry stays out of the way
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(
            connector=connector, middlewares=[balancing_middleware(pool)]
        ) as session:
            assert (await get_json(session, "http://users/"))["backend"] == "b1"
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.post("http://users/upload", data=b"charge the card")
        assert reset.requests == 2
        assert counts(pool)[urls[0]] == 1
        assert pool.stats().in_flight == 0


HALF = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial"


async def test_reset_mid_small_body_retried_for_get(urls: list[str]) -> None:
    """A small body cut off by a reset is awaited before the response is returned: GET retries."""
    with ResetServer(reply=HALF) as half:
        pool = dead_first(urls[0], half.url)
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(
            connector=connector, middlewares=[balancing_middleware(pool)]
        ) as session:
            assert (await get_json(session, "http://users/"))["backend"] == "b1"
            with pytest.raises(aiohttp.ClientPayloadError):
                async with session.post("http://users/upload", data=b"x") as response:
                    await response.read()
        assert half.requests == 2
        await settled(pool)
        # The GET's broken attempt and the POST's broken body (recorded when the body ends).
        assert {e.url: e.failures for e in pool.stats().endpoints}[half.url] == 2
        assert pool.stats().in_flight == 0


async def test_large_body_streams_unawaited(urls: list[str]) -> None:
    """A body over the limit is not awaited: a break in it reaches the reader, the body streams."""
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial"
    with ResetServer(reply=big) as large:
        pool = dead_first(urls[0], large.url)
        async with (
            aiohttp.ClientSession(middlewares=[balancing_middleware(pool)]) as session,
            session.get("http://users/") as response,
        ):
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        assert pool.stats().in_flight == 0
        async with (
            aiohttp.ClientSession(middlewares=[balancing_middleware(tlb.Pool(urls[:1]))]) as s,
            s.get("http://users/bytes/300000") as response,
        ):
            assert len(await response.content.read()) == 300000


async def test_retry_statuses_for_idempotent_only(urls: list[str]) -> None:
    """A 503 is retried on the other endpoints for GET; never for POST."""
    pool = tlb.Pool(urls, balancer=tlb.RoundRobin())
    async with aiohttp.ClientSession(middlewares=[balancing_middleware(pool)]) as session:
        async with session.get("http://users/status/503") as response:
            assert response.status == 503
        await settled(pool)  # the last attempt is recorded once its body is done
        assert sorted(counts(pool).values()) == [1, 1, 1]
        async with session.post("http://users/status/503", data=b"{}") as response:
            assert response.status == 503
    assert sum(counts(pool).values()) == 4
    assert pool.stats().in_flight == 0


async def _chunks() -> AsyncIterator[bytes]:
    yield b"a"
    yield b"b"


async def test_unreplayable_body_not_retried(urls: list[str]) -> None:
    """An async-iterator body is not retried, even after a connect error."""
    pool = dead_first(urls[0], dead_url())
    async with aiohttp.ClientSession(middlewares=[balancing_middleware(pool)]) as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.put("http://users/upload", data=_chunks())
        assert counts(pool)[urls[0]] == 0
        async with session.put("http://users/upload", data=b"ab") as response:
            assert (await response.json())["size"] == 2


async def test_budget_exhaustion_stops_retries(urls: list[str]) -> None:
    """With an empty budget the connect error reaches the caller; the refusal is counted."""
    budget = tlb.RetryBudget(ratio=0, min_retries_per_second=0)
    pool = dead_first(urls[0], dead_url())
    middleware = balancing_middleware(pool, retry_budget=budget)
    async with aiohttp.ClientSession(middlewares=[middleware]) as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get("http://users/")
    assert budget.stats().exhausted == 1
    assert counts(pool)[urls[0]] == 0


async def test_no_endpoint_raises_no_healthy_endpoint() -> None:
    """An empty pool raises NoHealthyEndpoint (status 503)."""
    middleware = balancing_middleware(tlb.Pool([], name="users"))
    async with aiohttp.ClientSession(middlewares=[middleware]) as session:
        with pytest.raises(tlb.NoHealthyEndpoint) as info:
            await session.get("http://users/")
    assert info.value.status == 503


async def test_cancellation_storm_releases_every_lease(urls: list[str]) -> None:
    """asyncio.wait_for timeouts and task.cancel() leave nothing in flight."""
    pool = tlb.Pool(urls)
    async with aiohttp.ClientSession(middlewares=[balancing_middleware(pool)]) as session:

        async def one(i: int) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    get_json(session, "http://users/sleep/0.03"), timeout=(i % 8) * 0.006
                )

        await asyncio.gather(*(one(i) for i in range(120)))
        tasks = [asyncio.create_task(get_json(session, "http://users/hang")) for _ in range(20)]
        await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert pool.stats().in_flight == 0
        assert (await get_json(session, "http://users/"))["method"] == "GET"
    assert pool.stats().in_flight == 0


POOL = tlb.Pool(["http://127.0.0.1:1"])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("http://a",), {}, TypeError, "pools must be a tenantlb.Pool or a mapping"),
        (({},), {}, ValueError, "pools must not be an empty mapping"),
        ((POOL,), {"retries": -1}, ValueError, "retries must be >= 0"),
        ((POOL,), {"retry_statuses": [42]}, ValueError, "between 100 and 599, got 42"),
        ((POOL,), {"key": 1.5}, TypeError, "key must be a header name"),
        ((POOL,), {"retry_budget": "x"}, TypeError, "retry_budget must be a tenantlb.RetryBudget"),
        ((POOL,), {"host_header": "x"}, ValueError, "host_header must be 'logical'"),
    ],
)
def test_bad_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Bad arguments raise TypeError / ValueError naming the argument."""
    with pytest.raises(error, match=match):
        balancing_middleware(*args, **kwargs)


def test_middleware_type() -> None:
    """balancing_middleware returns a BalancingMiddleware exposing its retry budget."""
    budget = tlb.RetryBudget()
    middleware = balancing_middleware(POOL, retry_budget=budget)
    assert isinstance(middleware, BalancingMiddleware)
    assert middleware.retry_budget is budget


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without aiohttp installed, importing the adapter says which extra to install."""
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    for name in ("tenantlb.adapters.aiohttp", "tenantlb.adapters._aiohttp_client"):
        monkeypatch.delitem(sys.modules, name)
        with pytest.raises(ImportError, match=r"pip install 'tenantlb\[aiohttp\]'"):
            importlib.import_module(name)


def test_public_names() -> None:
    """tenantlb.adapters.aiohttp exports the client middleware factory and its class."""
    import tenantlb.adapters.aiohttp as module

    assert {"BalancingMiddleware", "balancing_middleware"} <= set(module.__all__)
    assert module.balancing_middleware is balancing_middleware


async def test_a_lease_stays_in_flight_until_the_body_is_done() -> None:
    """A streamed body keeps its lease in flight until it ends; one cut short records an error."""

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        path = (await reader.readuntil(b"\r\n\r\n")).split(b" ")[1]
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        if path == b"/broken":
            writer.transport.abort()
            return
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(stream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = tlb.Pool([f"http://127.0.0.1:{port}"], balancer=tlb.LeastRequest())
    try:
        async with aiohttp.ClientSession(middlewares=[balancing_middleware(pool)]) as session:
            release = asyncio.Event()
            async with session.get("http://svc/ok") as response:
                assert await response.content.readexactly(5) == b"first"
                assert pool.stats().in_flight == 1  # the body is still streaming
                release.set()
                assert await response.content.read() == b"last"
            await settled(pool)
            release = asyncio.Event()
            async with session.get("http://svc/broken") as response:
                assert await response.content.readexactly(5) == b"first"
                assert pool.stats().in_flight == 1
                release.set()
                with pytest.raises(aiohttp.ClientPayloadError):
                    await response.content.read()
            await settled(pool)
    finally:
        server.close()
        await server.wait_closed()
    endpoint = pool.stats().endpoints[0]
    assert endpoint.requests == 2
    assert endpoint.failures == 1
