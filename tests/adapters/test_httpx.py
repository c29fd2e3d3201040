"""httpx transports against real uvicorn backends: routing, Host, retries, budget, streaming, lifecycle."""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest

import tenantlb as tlb
from tenantlb.adapters.httpx import AsyncBalancingTransport, BalancingTransport
from tests.support.backends import BackendProcess, ResetServer, free_port, start_backends

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backends() -> Iterator[list[BackendProcess]]:
    with start_backends("b1", "b2", "b3") as started:
        yield started


@pytest.fixture
def urls(backends: list[BackendProcess]) -> list[str]:
    return [b.url for b in backends]


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused


def counts(pool: tlb.Pool) -> dict[str, int]:
    return {e.url: e.requests for e in pool.stats().endpoints}


def seen_host(response: httpx.Response) -> str:
    return dict(response.json()["headers"])["host"]


# -- routing -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_balances_and_keeps_logical_host(urls: list[str]) -> None:
    """Requests spread over the pool's endpoints; the Host header keeps the logical name."""
    pool = tlb.Pool(urls, balancer=tlb.RoundRobin())
    transport = AsyncBalancingTransport(pool)
    async with httpx.AsyncClient(transport=transport, base_url="http://users") as client:
        responses = [await client.get("/v1/items", params={"q": "1"}) for _ in range(6)]
    assert {r.json()["backend"] for r in responses} == {"b1", "b2", "b3"}
    assert {seen_host(r) for r in responses} == {"users"}
    assert {r.json()["path"] for r in responses} == {"/v1/items"}
    assert {r.json()["query"] for r in responses} == {"q=1"}
    assert str(responses[0].request.url) == "http://users/v1/items?q=1"
    assert pool.stats().in_flight == 0
    assert sum(counts(pool).values()) == 6


def test_sync_balances_and_keeps_logical_host(urls: list[str]) -> None:
    """The sync transport spreads requests the same way and keeps the Host header."""
    pool = tlb.Pool(urls, balancer=tlb.RoundRobin())
    with httpx.Client(transport=BalancingTransport(pool), base_url="http://users") as client:
        responses = [client.get("/x") for _ in range(3)]
    assert sorted(r.json()["backend"] for r in responses) == ["b1", "b2", "b3"]
    assert {seen_host(r) for r in responses} == {"users"}
    assert pool.stats().in_flight == 0


def test_host_header_endpoint(urls: list[str]) -> None:
    """host_header='endpoint' sends the endpoint's host and port instead."""
    pool = tlb.Pool(urls[:1])
    transport = BalancingTransport(pool, host_header="endpoint")
    with httpx.Client(transport=transport) as client:
        response = client.get("http://users/")
    assert seen_host(response) == urls[0].removeprefix("http://")


def test_endpoint_path_prefix(urls: list[str]) -> None:
    """An endpoint's path prefix goes in front of the request's path."""
    pool = tlb.Pool([urls[0] + "/api"])
    with httpx.Client(transport=BalancingTransport(pool)) as client:
        response = client.get("http://users/v1/x?a=b%20c")
    assert response.json()["path"] == "/api/v1/x"
    assert response.json()["query"] == "a=b%20c"


def test_mapping_by_host_and_passthrough(urls: list[str]) -> None:
    """Hosts in the mapping are balanced; any other host goes to the wrapped transport unchanged."""
    users = tlb.Pool(urls[:1], name="users")
    billing = tlb.Pool(urls[1:2], name="billing")
    transport = BalancingTransport({"users": users, "Billing:8080": billing})
    with httpx.Client(transport=transport) as client:
        assert client.get("http://users/").json()["backend"] == "b1"
        assert client.get("http://billing:8080/").json()["backend"] == "b2"
        direct = client.get(urls[2] + "/direct")
    assert direct.json()["backend"] == "b3"
    assert seen_host(direct) == urls[2].removeprefix("http://")
    assert sum(counts(users).values()) == sum(counts(billing).values()) == 1


@pytest.mark.anyio
async def test_key_header_is_sticky(urls: list[str]) -> None:
    """key= a header name feeds a hashing balancer: one key, one backend."""
    pool = tlb.Pool(urls, balancer=tlb.RingHash())
    transport = AsyncBalancingTransport(pool, key="x-user")
    async with httpx.AsyncClient(transport=transport, base_url="http://users") as client:
        for user in ("alice", "bob", "carol", "dave"):
            seen = {
                (await client.get("/", headers={"x-user": user})).json()["backend"]
                for _ in range(5)
            }
            assert len(seen) == 1, (user, seen)


def test_key_callable_is_sticky(urls: list[str]) -> None:
    """key= a callable on the request feeds a hashing balancer."""
    pool = tlb.Pool(urls, balancer=tlb.Maglev(table_size=1009))
    transport = BalancingTransport(pool, key=lambda request: request.url.params.get("user"))
    with httpx.Client(transport=transport, base_url="http://users") as client:
        for user in ("alice", "bob", "carol"):
            seen = {client.get("/", params={"user": user}).json()["backend"] for _ in range(5)}
            assert len(seen) == 1


@pytest.mark.anyio
async def test_no_endpoint_raises_no_healthy_endpoint() -> None:
    """An empty pool raises NoHealthyEndpoint, a RequestRejected with status 503."""
    transport = AsyncBalancingTransport(tlb.Pool([], name="users"))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(tlb.NoHealthyEndpoint, match="users") as info:
            await client.get("http://users/")
    assert info.value.status == 503


# -- retries -------------------------------------------------------------------------------------


def dead_first(live: str, dead: str) -> tlb.Pool:
    # Smooth weighted round robin picks the heavy endpoint first: the dead one.
    return tlb.Pool(
        [tlb.Endpoint(dead, weight=100), tlb.Endpoint(live, weight=1)], balancer=tlb.RoundRobin()
    )


@pytest.mark.anyio
async def test_connect_error_retried_for_post(urls: list[str]) -> None:
    """A connect error is retried on another endpoint even for POST: the request never left."""
    dead = dead_url()
    pool = dead_first(urls[0], dead)
    transport = AsyncBalancingTransport(pool)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.post("http://users/upload", content=b"hello")
    assert response.json()["size"] == 5
    stats = {e.url: e for e in pool.stats().endpoints}
    assert stats[dead].failures == 1
    assert stats[urls[0]].requests == 1
    assert transport.retry_budget.stats().retries == 1


def test_reset_after_send_retried_for_get_not_post(urls: list[str]) -> None:
    """A reset before the response is retried for GET, but not for POST (it may have been applied)."""
    with ResetServer() as reset:
        pool = dead_first(urls[0], reset.url)
        with httpx.Client(transport=BalancingTransport(pool)) as client:
            assert client.get("http://users/").json()["backend"] == "b1"
            assert reset.requests == 1
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                client.post("http://users/upload", content=b"charge the card")
        assert reset.requests == 2
        assert counts(pool)[urls[0]] == 1  # only the GET reached the live backend
        assert pool.stats().in_flight == 0


HALF = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial"


@pytest.mark.anyio
async def test_reset_mid_small_body_retried_for_get(urls: list[str]) -> None:
    """A small body cut off by a reset is read before it is returned, so a GET is retried."""
    with ResetServer(reply=HALF) as half:
        pool = dead_first(urls[0], half.url)
        async with httpx.AsyncClient(transport=AsyncBalancingTransport(pool)) as client:
            response = await client.get("http://users/")
            assert response.json()["backend"] == "b1"
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await client.post("http://users/upload", content=b"x")
        assert half.requests == 2
        stats = {e.url: e for e in pool.stats().endpoints}
        assert stats[half.url].failures == 2
        assert stats[urls[0]].requests == 1
        assert pool.stats().in_flight == 0


def test_sync_reset_mid_small_body_retried(urls: list[str]) -> None:
    """The sync transport reads small bodies first too; a large one streams (not retried)."""
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial"
    with ResetServer(reply=HALF) as half, ResetServer(reply=big) as large:
        pool = dead_first(urls[0], half.url)
        with httpx.Client(transport=BalancingTransport(pool)) as client:
            assert client.get("http://users/").json()["backend"] == "b1"
        pool = dead_first(urls[0], large.url)
        with httpx.Client(transport=BalancingTransport(pool)) as client:
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                client.get("http://users/")
            assert pool.stats().in_flight == 0
            assert {e.url: e.failures for e in pool.stats().endpoints}[large.url] == 1


@pytest.mark.anyio
async def test_retry_statuses_for_idempotent_only(urls: list[str]) -> None:
    """A 503 is retried on each other endpoint for GET, up to retries=2; never for POST."""
    pool = tlb.Pool(urls, balancer=tlb.RoundRobin())
    transport = AsyncBalancingTransport(pool, retries=2)
    async with httpx.AsyncClient(transport=transport, base_url="http://users") as client:
        response = await client.get("/status/503")
        assert response.status_code == 503
        assert sorted(counts(pool).values()) == [1, 1, 1]  # three endpoints, one attempt each
        response = await client.post("/status/503", content=b"{}")
        assert response.status_code == 503
    assert sum(counts(pool).values()) == 4
    assert transport.retry_budget.stats().retries == 2
    assert pool.stats().in_flight == 0


def test_retry_status_then_success(backends: list[BackendProcess]) -> None:
    """A backend answering 503 is skipped for a healthy one; the client sees the 200."""
    failing, healthy = backends[1], backends[2]
    httpx.post(failing.url + "/mode", content=b"fail")
    try:
        pool = dead_first(healthy.url, failing.url)
        with httpx.Client(transport=BalancingTransport(pool), base_url="http://users") as client:
            response = client.get("/")
        assert response.json()["backend"] == "b3"
        assert {e.url: e.failures for e in pool.stats().endpoints}[failing.url] == 1
    finally:
        httpx.post(failing.url + "/mode", content=b"ok")


def test_unreplayable_body_not_retried(urls: list[str]) -> None:
    """A generator body is never retried, even after a connect error; a bytes body is."""
    dead = dead_url()
    pool = dead_first(urls[0], dead)
    with httpx.Client(transport=BalancingTransport(pool)) as client:
        with pytest.raises(httpx.ConnectError):
            client.put("http://users/upload", content=iter([b"a", b"b"]))
        assert counts(pool)[urls[0]] == 0
        assert client.put("http://users/upload", content=b"ab").json()["size"] == 2


def test_budget_exhaustion_stops_retries(urls: list[str]) -> None:
    """With an empty budget the connect error reaches the caller; the refusal is counted."""
    budget = tlb.RetryBudget(ratio=0, min_retries_per_second=0)
    pool = dead_first(urls[0], dead_url())
    transport = BalancingTransport(pool, retry_budget=budget)
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError):
        client.get("http://users/")
    assert budget.stats() == tlb.RetryBudgetStats(requests=1, retries=0, exhausted=1, available=0)
    assert counts(pool)[urls[0]] == 0


def test_shared_budget_caps_retries_under_an_outage(urls: list[str]) -> None:
    """When every endpoint fails, retries stay within the budget, not retries x requests."""
    budget = tlb.RetryBudget(ratio=0.2, min_retries_per_second=0.1, ttl=10)  # floor: 1 retry
    pool = tlb.Pool(urls, balancer=tlb.RoundRobin())
    transport = BalancingTransport(pool, retries=2, retry_budget=budget)
    with httpx.Client(transport=transport, base_url="http://users") as client:
        for _ in range(50):
            assert client.get("/status/502").status_code == 502
    stats = budget.stats()
    assert stats.requests == 50
    assert stats.retries <= 0.2 * 50 + 1
    assert sum(counts(pool).values()) == 50 + stats.retries


def test_retries_zero_disables_retries(urls: list[str]) -> None:
    """retries=0 sends each request once."""
    pool = dead_first(urls[0], dead_url())
    transport = BalancingTransport(pool, retries=0)
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError):
        client.get("http://users/")


# -- streaming and cancellation ------------------------------------------------------------------


@pytest.mark.anyio
async def test_streamed_body_holds_lease_until_closed(urls: list[str]) -> None:
    """A streamed response keeps its lease while the body is open and records it on close."""
    pool = tlb.Pool(urls[:1])
    async with httpx.AsyncClient(transport=AsyncBalancingTransport(pool)) as client:
        async with client.stream("GET", "http://users/bytes/300000") as response:
            assert pool.stats().in_flight == 1
            size = sum([len(chunk) async for chunk in response.aiter_bytes()])
            assert size == 300000
        assert pool.stats().in_flight == 0
        assert counts(pool)[urls[0]] == 1
        # closed before the body was read: released too, and the outcome recorded
        async with client.stream("GET", "http://users/bytes/3000000") as response:
            assert response.status_code == 200
        assert pool.stats().in_flight == 0
        assert counts(pool)[urls[0]] == 2


def test_sync_streamed_body_holds_lease_until_closed(urls: list[str]) -> None:
    """The sync transport keeps the lease until the streamed body is closed."""
    pool = tlb.Pool(urls[:1])
    with httpx.Client(transport=BalancingTransport(pool)) as client:
        with client.stream("GET", "http://users/bytes/200000") as response:
            assert pool.stats().in_flight == 1
            assert len(response.read()) == 200000
            assert pool.stats().in_flight == 0  # httpx closes a body read to its end
        with client.stream("GET", "http://users/bytes/200000") as response:
            assert pool.stats().in_flight == 1
        assert pool.stats().in_flight == 0


@pytest.mark.anyio
async def test_cancel_scopes_release_every_lease(urls: list[str]) -> None:
    """Requests cancelled at random points (waiting, mid-body) leave nothing in flight."""
    pool = tlb.Pool(urls)
    transport = AsyncBalancingTransport(pool)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        with anyio.move_on_after((i % 10) * 0.006):
            if i % 3:
                await client.get("/sleep/0.03")
            else:
                # no checkpoint in the loop body: the cancellation lands inside the read
                # (httpx leaves its own generators to the GC when a loop is left early)
                async with client.stream("GET", "/bytes/2000000") as response:
                    async for _ in response.aiter_raw():
                        pass

    async with httpx.AsyncClient(transport=transport, base_url="http://users") as client:
        async with anyio.create_task_group() as tg:
            for i in range(150):
                tg.start_soon(one, client, i)
        assert pool.stats().in_flight == 0
        # cancelled attempts count no outcome; the pool still serves
        assert (await client.get("/")).status_code == 200
    assert pool.stats().in_flight == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_asyncio_wait_for_and_task_cancel_release(urls: list[str]) -> None:
    """asyncio.wait_for timeouts and task.cancel() storms leave nothing in flight."""
    import asyncio

    pool = tlb.Pool(urls)
    transport = AsyncBalancingTransport(pool)

    async def streamed(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/bytes/5000000") as response:
            async for _ in response.aiter_raw():
                await asyncio.sleep(0)

    async with httpx.AsyncClient(transport=transport, base_url="http://users") as client:

        async def timed(i: int) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client.get("/sleep/0.03"), timeout=(i % 8) * 0.006)

        await asyncio.gather(*(timed(i) for i in range(120)))
        tasks = [asyncio.create_task(streamed(client)) for _ in range(30)]
        await asyncio.sleep(0.02)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert pool.stats().in_flight == 0
    assert pool.stats().in_flight == 0


# -- lifecycle -----------------------------------------------------------------------------------


class CountingTransport(httpx.AsyncBaseTransport):
    """A real AsyncHTTPTransport that counts how often it is closed."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.closed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        self.closed += 1
        await self.inner.aclose()


@pytest.mark.anyio
async def test_async_with_runs_health_checks_and_closes(urls: list[str]) -> None:
    """`async with` starts the health checker (a dead endpoint leaves rotation); exit stops it and
    closes the wrapped transport."""
    dead = dead_url()
    pool = tlb.Pool([urls[0], dead])
    checker = tlb.HealthChecker(pool, probe=tlb.TCPProbe(), interval=0.2, timeout=0.1)
    inner = CountingTransport()
    transport = AsyncBalancingTransport(pool, transport=inner, health=checker)
    down = anyio.Event()
    pool.subscribe(lambda event: down.set() if event.kind == "unhealthy" else None)
    async with httpx.AsyncClient(transport=transport, base_url="http://users") as client:
        assert checker.running
        with anyio.fail_after(10):
            await down.wait()
        assert pool.stats().available == 1
        for _ in range(5):
            assert (await client.get("/")).json()["backend"] == "b1"
        with pytest.raises(RuntimeError, match="already entered"):
            await transport.__aenter__()
    assert not checker.running
    assert inner.closed == 1
    await transport.aclose()  # idempotent enough: closing again closes the wrapped transport again
    assert inner.closed == 2


def test_sync_with_runs_health_checks_in_a_thread(urls: list[str]) -> None:
    """`with BalancingTransport(..., health=...)` runs the checker in a background thread."""
    dead = dead_url()
    pool = tlb.Pool([urls[0], dead])
    checker = tlb.HealthChecker(pool, probe=tlb.TCPProbe(), interval=0.2, timeout=0.1)
    with httpx.Client(
        transport=BalancingTransport(pool, health=[checker]), base_url="http://users"
    ) as client:
        assert checker.running
        deadline = time.monotonic() + 10
        while pool.stats().available != 1:
            assert time.monotonic() < deadline, pool.stats()
            time.sleep(0.02)
        assert {client.get("/").json()["backend"] for _ in range(5)} == {"b1"}
    assert not checker.running


class CountingSyncTransport(httpx.HTTPTransport):
    """A real HTTPTransport that counts how often it is closed."""

    closed = 0

    def close(self) -> None:
        self.closed += 1
        super().close()

    def __exit__(self, *exc_info: Any) -> None:
        self.closed += 1  # httpx's own __exit__ closes its pool without calling close()
        super().__exit__(*exc_info)


def test_close_without_enter_closes_wrapped_transport() -> None:
    """close() closes the wrapped transport even if the transport was never entered."""
    inner = CountingSyncTransport()
    transport = BalancingTransport(tlb.Pool(["http://127.0.0.1:1"]), transport=inner)
    transport.close()
    assert inner.closed == 1
    with transport:
        pass
    assert inner.closed == 2


# -- arguments -----------------------------------------------------------------------------------

POOL = tlb.Pool(["http://127.0.0.1:1"])


@pytest.mark.parametrize("cls", [AsyncBalancingTransport, BalancingTransport])
@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("http://a",), {}, TypeError, "pools must be a tenantlb.Pool or a mapping"),
        (({},), {}, ValueError, "pools must not be an empty mapping"),
        (({"users": "http://a"},), {}, TypeError, r"pools\['users'\] must be a tenantlb.Pool"),
        (({"": POOL},), {}, ValueError, "pools keys must be non-empty host names"),
        (({1: POOL},), {}, TypeError, "pools keys must be non-empty host names"),
        ((POOL,), {"retries": -1}, ValueError, "retries must be >= 0, got -1"),
        ((POOL,), {"retries": 1.5}, TypeError, "retries must be an int, got float"),
        ((POOL,), {"retry_statuses": "503"}, TypeError, "retry_statuses must be a collection"),
        ((POOL,), {"retry_statuses": [503, 700]}, ValueError, "between 100 and 599, got 700"),
        ((POOL,), {"key": 3}, TypeError, "key must be a header name, a callable or None"),
        ((POOL,), {"key": ""}, ValueError, "key must be a header name"),
        ((POOL,), {"retry_budget": 0.2}, TypeError, "retry_budget must be a tenantlb.RetryBudget"),
        ((POOL,), {"health": object()}, TypeError, "health must be a HealthChecker"),
        ((POOL,), {"host_header": "upstream"}, ValueError, "host_header must be 'logical'"),
        ((POOL,), {"transport": object()}, TypeError, "transport must be an httpx"),
    ],
)
def test_bad_arguments(
    cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Bad arguments raise TypeError / ValueError naming the argument."""
    with pytest.raises(error, match=match):
        cls(*args, **kwargs)


def test_async_transport_refuses_sync_transport() -> None:
    """Wrapping a sync transport in the async one is a TypeError (and vice versa)."""
    with pytest.raises(TypeError, match="AsyncBaseTransport, got HTTPTransport"):
        AsyncBalancingTransport(POOL, transport=httpx.HTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="BaseTransport, got AsyncHTTPTransport"):
        BalancingTransport(POOL, transport=httpx.AsyncHTTPTransport())  # type: ignore[arg-type]


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without httpx installed, importing the adapter says which extra to install."""
    monkeypatch.setitem(sys.modules, "httpx", None)  # makes `import httpx` fail
    monkeypatch.delitem(sys.modules, "tenantlb.adapters.httpx")
    with pytest.raises(ImportError, match=r"pip install 'tenantlb\[httpx\]'"):
        importlib.import_module("tenantlb.adapters.httpx")


async def _aiter(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.anyio
async def test_async_unreplayable_body_not_retried(urls: list[str]) -> None:
    """An async generator body is not retried after a connect error."""
    pool = dead_first(urls[0], dead_url())
    async with httpx.AsyncClient(transport=AsyncBalancingTransport(pool)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.put("http://users/upload", content=_aiter([b"a"]))
    assert counts(pool)[urls[0]] == 0


def test_public_names() -> None:
    """The module exports the two transports, both httpx transports of the right kind."""
    import tenantlb.adapters.httpx as module

    assert module.__all__ == ["AsyncBalancingTransport", "BalancingTransport"]
    assert issubclass(AsyncBalancingTransport, httpx.AsyncBaseTransport)
    assert issubclass(BalancingTransport, httpx.BaseTransport)
